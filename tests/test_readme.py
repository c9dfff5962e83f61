"""The README's commands run as written and print what it shows (tools/check_readme.py), and the checker
itself finds a wrong output, a missing artefact and an option the CLI does not have."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKER = REPO / "tools" / "check_readme.py"


def load_checker():
    spec = importlib.util.spec_from_file_location("check_readme", CHECKER)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_readme"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_readme_fast_blocks_run_and_print_what_it_shows(tmp_path):
    """The fast blocks of README.md, run in a fresh folder as a reader would (about 30 s of CPU)."""
    done = subprocess.run(
        [sys.executable, str(CHECKER), "--workdir", str(tmp_path), "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Each kind of block is there: checked with an output, skipped with its reason, waiting for a slow one.
    assert "(1 command(s), 1 output(s) as shown)" in done.stdout
    assert "not run" in done.stdout and "made by the slow block at line" in done.stdout
    assert " 0 failed " in done.stdout


README = """\
# a README

```console
$ echo one; echo two; echo three
one
...
three
$ echo 'hello'
hello
```

<!-- check-readme: slow makes model -- trains -->
```sh
mkdir model   # the slow one
```

<!-- check-readme: needs model -->
```console
$ ls model
```

<!-- check-readme: skip -- needs a dataset -->
```sh
hlora-mer data summary casme2 /data/CASME2
```
"""


def test_checker_runs_what_it_can_and_says_what_waits_for_a_slow_block(tmp_path, capsys):
    checker = load_checker()
    readme = tmp_path / "README.md"
    readme.write_text(README)
    work = tmp_path / "work"
    work.mkdir()
    assert checker.check(readme, work) == 0
    out = capsys.readouterr().out
    assert "checked       line 3" in out
    assert "slow, skipped line 13" in out and not (work / "model").exists()
    assert "not run       line 18" in out and "needs model (made by the slow block at line 13)" in out
    assert "skipped       line 23" in out and "needs a dataset" in out
    # With --slow the slow block makes what the next one needs, and that one runs.
    assert checker.check(readme, work, slow=True) == 0
    out = capsys.readouterr().out
    assert (work / "model").is_dir() and "checked       line 18" in out and "not run       line" not in out


@pytest.mark.parametrize(
    "change, found",
    [
        (("hello\n```", "hullo\n```"), "-hullo"),  # an output the command does not print
        (("...\nthree\n", "...\nfour\n"), "printed other output"),  # '...' does not hide a wrong line after it
        (("$ echo 'hello'", "$ false"), "exited 1"),  # a command that fails
        (("casme2 /data/CASME2", "casme2 /data/CASME2 --lables x"), "the CLI refuses it"),  # skipped, still parsed
        (("data summary casme2 /data/CASME2", "demo train.stepz=3"), "unknown key 'train.stepz'"),  # and its settings
    ],
)
def test_checker_fails_on_what_the_readme_gets_wrong(tmp_path, capsys, change, found):
    checker = load_checker()
    readme = tmp_path / "README.md"
    readme.write_text(README.replace(*change))
    assert checker.check(readme, tmp_path) == 1
    assert found in capsys.readouterr().out


def test_a_needs_marker_without_a_slow_block_that_makes_it_is_an_error(tmp_path):
    checker = load_checker()
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("makes model", "makes other"))
    with pytest.raises(checker.ReadmeError, match="needs model, but no slow block says 'makes model'"):
        checker.check(readme, tmp_path)
    readme.write_text(README.replace("check-readme: skip", "check-readme: skipp"))
    with pytest.raises(checker.ReadmeError, match="unknown check-readme marker"):
        checker.check(readme, tmp_path)


def test_when_a_slow_block_fails_what_needs_it_is_not_run_and_says_why(tmp_path, capsys):
    checker = load_checker()
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("mkdir model   # the slow one", "mkdir model && false"))
    work = tmp_path / "work"
    work.mkdir()
    assert checker.check(readme, work, slow=True) == 1
    out = capsys.readouterr().out
    assert (work / "model").is_dir()  # the failed block left its folder, which is not taken for its result
    assert "not run       line 18" in out and "but the slow block at line 13 that makes it failed" in out


def test_a_command_past_its_time_is_ended_with_what_it_started(tmp_path, capsys):
    import time

    checker = load_checker()
    readme = tmp_path / "README.md"
    readme.write_text("```sh\n(sleep 2; touch late) & sleep 2; touch done\n```\n")
    assert checker.check(readme, tmp_path, timeout=0.5) == 1
    assert "took more than 0.5 s" in capsys.readouterr().out
    time.sleep(2.5)
    assert not (tmp_path / "late").exists() and not (tmp_path / "done").exists()
