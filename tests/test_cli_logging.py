"""The CLI sets up logging for its own run only: a program that calls it keeps its own logging set-up."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from data_fixtures import write_frames
from hlora_mer.cli import main


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _state() -> dict:
    package = logging.getLogger("hlora_mer")
    return {
        "root": (list(logging.root.handlers), logging.root.level),
        "package": (list(package.handlers), package.level, package.propagate),
    }


def test_a_callers_root_handler_survives_a_cli_call(tmp_path, capsys) -> None:
    write_frames(tmp_path / "anger" / "1_a", [f"{n}.jpg" for n in range(1, 9)])
    caller = _Collect()
    logging.root.addHandler(caller)
    previous_level = logging.root.level
    logging.root.setLevel(logging.ERROR)  # the caller's own choice, not the CLI's INFO
    try:
        before = _state()
        assert main(["data", "check", "folder_tree", str(tmp_path)]) == 0
        assert _state() == before  # same root handlers and level; the package logger as it was
        err = capsys.readouterr().err
        # The CLI still shows its own log lines, in its format...
        assert "INFO hlora_mer.data.loading: folder_tree: 1 samples from folders" in err
        # ... and the caller's handler received them too.
        assert any(r.name == "hlora_mer.data.loading" and r.levelno == logging.INFO for r in caller.records)
        # After the call, the package's records go to the caller's handlers only.
        caller.records.clear()
        logging.getLogger("hlora_mer.data.loading").error("after the call")
        assert "after the call" not in capsys.readouterr().err
        assert [r.getMessage() for r in caller.records] == ["after the call"]
    finally:
        logging.root.removeHandler(caller)
        logging.root.setLevel(previous_level)


def test_quiet_and_verbose_set_the_package_level_for_the_call_only(tmp_path, capsys) -> None:
    write_frames(tmp_path / "anger" / "1_a", [f"{n}.jpg" for n in range(1, 9)])
    before = _state()
    assert main(["-q", "data", "check", "folder_tree", str(tmp_path)]) == 0
    assert "INFO" not in capsys.readouterr().err
    assert main(["-v", "data", "check", "folder_tree", str(tmp_path)]) == 0
    assert "INFO hlora_mer.data.loading" in capsys.readouterr().err
    assert _state() == before


def test_importing_the_package_and_building_the_cli_leaves_the_root_logger_alone() -> None:
    code = (
        "import logging, hlora_mer, hlora_mer.cli\n"
        "hlora_mer.cli.build_parser()\n"
        "assert logging.root.handlers == [] and logging.root.level == logging.WARNING, logging.root.handlers\n"
        "assert logging.getLogger('hlora_mer').handlers == []\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    result = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": src}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
