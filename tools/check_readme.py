"""Run the README's shell blocks as a reader would and compare what they print with what the README shows.

    python tools/check_readme.py            # the fast blocks, in a temporary folder (seconds; CI runs this)
    python tools/check_readme.py --slow --workdir /tmp/readme   # also the slow ones (the demo: minutes)
    python tools/check_readme.py --list     # how each block is classified, running nothing

A block is a fenced block tagged ``sh``, ``bash`` or ``console``, or an untagged one whose first line
starts with ``$ ``. In a ``sh`` block every line that is not a comment is a command; in the others the
lines that start with ``$ `` are commands and the lines up to the next command are the output the README
shows for it, compared with the command's standard output (trailing spaces and blank lines aside; a line
``...`` stands for any number of lines). Every block runs unless an HTML comment right above it says
otherwise:

    <!-- check-readme: slow [makes PATH ...] [-- why] -->   run only with --slow (training, the demo)
    <!-- check-readme: skip -- why -->                       never run (licensed data, installs, network)
    <!-- check-readme: needs PATH ... -->                    run when PATH exists in the work folder; a slow
                                                             block must declare it with ``makes``

Commands run with bash in one work folder shared by all blocks, in README order, with ``hlora-mer`` and
``python`` meaning this checkout (``python -m hlora_mer`` with ``src`` first on the path) and
``XDG_CACHE_HOME`` inside the work folder. The ``hlora-mer`` commands of blocks that do not run are still
parsed by the CLI's argument parser, so that an option the README names and the CLI no longer has is
found, and the overrides of ``train -c CONFIG`` and ``demo`` are applied to their config. Exit status:
0 when every block that ran printed what the README shows, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHELL_TAGS = {"sh", "bash", "shell", "console"}
MARKER = re.compile(r"<!--\s*check-readme:\s*(?P<body>.*?)\s*-->")
KINDS = ("fast", "slow", "skip", "needs")


@dataclass
class Command:
    line: int  # 1-based line of the README
    text: str
    expected: list[str] | None = None  # None: the README shows no output for it


@dataclass
class Block:
    line: int  # the line of the opening fence
    kind: str = "fast"
    reason: str = ""
    makes: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    @property
    def title(self) -> str:
        first = self.commands[0].text if self.commands else ""
        return f"line {self.line}: {first[:70]}" + (" ..." if len(self.commands) > 1 else "")


class ReadmeError(Exception):
    """The README's markers or blocks cannot be read as documented above."""


def _parse_marker(body: str, line: int) -> tuple[str, str, list[str], list[str]]:
    words, _, reason = body.partition("--")
    tokens = words.split()
    if not tokens or tokens[0] not in KINDS[1:]:
        raise ReadmeError(f"line {line}: unknown check-readme marker {body!r}; use one of {', '.join(KINDS[1:])}")
    kind, rest = tokens[0], tokens[1:]
    makes: list[str] = []
    needs: list[str] = []
    if kind == "slow" and rest:
        if rest[0] != "makes" or len(rest) < 2:
            raise ReadmeError(f"line {line}: 'slow' takes 'makes PATH ...', found {' '.join(rest)!r}")
        makes = rest[1:]
    elif kind == "needs":
        if not rest:
            raise ReadmeError(f"line {line}: 'needs' names the paths the block needs")
        needs = rest
    elif rest:
        raise ReadmeError(f"line {line}: '{kind}' takes only a reason after '--', found {' '.join(rest)!r}")
    if kind == "skip" and not reason.strip():
        raise ReadmeError(f"line {line}: say why a block is skipped: <!-- check-readme: skip -- why -->")
    return kind, reason.strip(), makes, needs


def _logical_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Join lines that end with a backslash; keep the line number of the first."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, text in enumerate(lines):
        if pending is not None:
            pending = (pending[0], pending[1][:-1] + " " + text.strip())
        else:
            pending = (start + offset, text)
        if not pending[1].rstrip().endswith("\\"):
            out.append(pending)
            pending = None
    if pending is not None:
        out.append(pending)
    return out


def parse_readme(text: str) -> list[Block]:
    """The shell blocks of a README, with their markers, commands and shown outputs."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(`{3,})\s*([\w-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        ticks, tag = fence.group(1), fence.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
        if end is None:
            raise ReadmeError(f"line {i + 1}: a fenced block that is never closed")
        body = lines[i + 1 : end]
        console = tag == "console" or (not tag and body and body[0].startswith("$ "))
        if tag in SHELL_TAGS or console:
            block = Block(line=i + 1)
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            marker = MARKER.search(lines[k]) if k >= 0 else None
            if marker:
                block.kind, block.reason, block.makes, block.needs = _parse_marker(marker.group("body"), k + 1)
            if console:
                for n, line in _logical_lines(body, i + 2):
                    if line.startswith("$ "):
                        block.commands.append(Command(n, line[2:].strip(), expected=[]))
                    elif block.commands:
                        expected = block.commands[-1].expected
                        assert expected is not None
                        expected.append(line)
                    else:
                        raise ReadmeError(f"line {n}: output before the first '$ ' command of the block")
            else:
                for n, line in _logical_lines(body, i + 2):
                    if line.strip() and not line.lstrip().startswith("#"):
                        block.commands.append(Command(n, line.strip()))
            blocks.append(block)
        elif MARKER.search(lines[i - 1] if i else ""):
            raise ReadmeError(f"line {i}: a check-readme marker above a block that is not a shell block")
        i = end + 1
    made = {path: b for b in blocks for path in b.makes}
    for b in blocks:
        for path in b.needs:
            if path not in made:
                raise ReadmeError(f"line {b.line}: needs {path}, but no slow block says 'makes {path}'")
    return blocks


def _strip(lines: list[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` is ``expected``, a line ``...`` matching any number of lines."""
    exp, act = _strip(expected), _strip(actual)
    pattern = "\n".join(".*?" if e.strip() == "..." else re.escape(e) for e in exp)
    pattern = pattern.replace("\n.*?\n", "(?:\n.*?)?\n")  # '...' may stand for no line at all
    if pattern.endswith("\n.*?"):
        pattern = pattern[: -len("\n.*?")] + "(?:\n.*)?"
    if pattern.startswith(".*?\n"):
        pattern = "(?:.*?\n)?" + pattern[len(".*?\n") :]
    return re.fullmatch(pattern, "\n".join(act), flags=re.DOTALL) is not None


def argv_of(command: str) -> list[str] | None:
    """The arguments after ``hlora-mer`` of a command line, or None when it does not run hlora-mer."""
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words or words[0] != "hlora-mer":
        return None
    return words[1:]


def parse_only(command: str) -> str | None:
    """Parse an ``hlora-mer`` command with the CLI's parser; the problem, or None when it parses."""
    argv = argv_of(command)
    if argv is None or "..." in argv:
        return None
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))
    from hlora_mer.cli import build_parser

    parser = build_parser()
    err = _io_capture()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(_io_capture()):
            args, extra = parser.parse_known_args(argv)
    except SystemExit as stop:
        return f"the CLI refuses it (exit {stop.code}): {err.getvalue().strip().splitlines()[-1:]}"
    if extra and not (hasattr(args, "overrides") or hasattr(args, "inputs")):
        return f"the CLI refuses it: unrecognized arguments: {' '.join(extra)}"
    overrides = [*getattr(args, "overrides", []), *extra]
    from hlora_mer.errors import UserError

    try:  # the settings too: an override key the config does not have is refused before any work
        if args.command == "train" and (REPO / args.config).is_file():
            from hlora_mer.config import load_experiment

            load_experiment(REPO / args.config, overrides)
        elif args.command == "demo":
            from hlora_mer.synthme.demo import demo_config

            demo_config(overrides)
    except UserError as err:
        return f"the CLI refuses its settings: {err}"
    return None


def _io_capture():
    import io

    return io.StringIO()


def _environment(workdir: Path) -> tuple[dict[str, str], Path]:
    bin_dir = workdir / ".check-readme-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "hlora-mer"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hlora_mer "$@"\n')
    shim.chmod(0o755)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ)
    cache = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env.setdefault("HF_HOME", str(Path(cache) / "huggingface"))  # keep the reader's weights
    env["XDG_CACHE_HOME"] = str(workdir / ".cache")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env["COLUMNS"] = "120"
    return env, bin_dir


def _run(command: str, workdir: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run one command line with bash in its own process group; None when it ran past ``timeout`` (then the
    whole group is ended, so that nothing it started goes on)."""
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def run_block(block: Block, workdir: Path, env: dict[str, str], timeout: float) -> list[str]:
    """Run a block's commands in order; the problems found (empty: it printed what the README shows)."""
    problems: list[str] = []
    for command in block.commands:
        done = _run(command.text, workdir, env, timeout)
        if done is None:
            problems.append(f"line {command.line}: `{command.text}` took more than {timeout:g} s (see --timeout)")
            break
        if done.returncode != 0:
            tail = "\n      ".join(done.stderr.strip().splitlines()[-5:])
            problems.append(f"line {command.line}: `{command.text}` exited {done.returncode}:\n      {tail}")
            break
        if _strip(command.expected or []) and not output_matches(command.expected or [], done.stdout.splitlines()):
            diff = difflib.unified_diff(
                _strip(command.expected or []), _strip(done.stdout.splitlines()), "README", "printed", lineterm=""
            )
            problems.append(f"line {command.line}: `{command.text}` printed other output:\n" + "\n".join(diff))
    return problems


def check(readme: Path, workdir: Path, slow: bool = False, timeout: float = 3600.0, only_list: bool = False) -> int:
    blocks = parse_readme(readme.read_text(encoding="utf-8"))
    env, _ = _environment(workdir) if not only_list else ({}, None)
    maker = {path: b for b in blocks for path in b.makes}
    failed = 0
    failed_lines: set[int] = set()
    counts = {"checked": 0, "slow, skipped": 0, "skipped": 0, "not run": 0, "failed": 0}
    for block in blocks:
        shown = sum(c.expected is not None and bool(_strip(c.expected)) for c in block.commands)
        if block.kind == "skip" or (block.kind == "slow" and not slow):
            status = "skipped" if block.kind == "skip" else "slow, skipped"
            parse_problems = [f"line {c.line}: `{c.text}`: {p}" for c in block.commands if (p := parse_only(c.text))]
            if parse_problems:
                failed += 1
                counts["failed"] += 1
                print(f"FAIL  {block.title}\n  " + "\n  ".join(parse_problems))
                continue
            counts[status] += 1
            parsed = sum(argv_of(c.text) is not None for c in block.commands)
            note = f"; its {parsed} hlora-mer command(s) parse" if parsed else ""
            print(f"{status:<14}{block.title}\n              ({block.reason or 'slow'}{note})")
            continue
        broken = [p for p in block.needs if maker[p].line in failed_lines]
        if broken:
            counts["not run"] += 1
            print(
                f"not run       {block.title}\n              (needs {', '.join(broken)}, but the slow block at line "
                f"{maker[broken[0]].line} that makes it failed)"
            )
            continue
        missing = [p for p in block.needs if not (workdir / p).exists()]
        if missing and not only_list:
            counts["not run"] += 1
            makers = ", ".join(f"{p} (made by the slow block at line {maker[p].line})" for p in missing)
            print(f"not run       {block.title}\n              (needs {makers}; run with --slow)")
            continue
        if only_list:
            print(f"{block.kind:<14}{block.title}")
            continue
        problems = run_block(block, workdir, env, timeout)
        if problems:
            failed_lines.add(block.line)
            failed += 1
            counts["failed"] += 1
            print(f"FAIL  {block.title}\n  " + "\n  ".join(problems))
        else:
            counts["checked"] += 1
            what = f"{len(block.commands)} command(s), {shown} output(s) as shown"
            print(f"checked       {block.title}\n              ({what})")
    if not only_list:
        print("; ".join(f"{n} {k}" for k, n in counts.items()) + f" ({len(blocks)} blocks of {readme})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", nargs="?", default=str(REPO / "README.md"), help="default: the checkout's README")
    parser.add_argument("--slow", action="store_true", help="also run the blocks marked slow (minutes)")
    parser.add_argument("--workdir", help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="only classify the blocks")
    args = parser.parse_args(argv)
    readme = Path(args.readme).resolve()
    try:
        if args.workdir:
            Path(args.workdir).mkdir(parents=True, exist_ok=True)
            return check(readme, Path(args.workdir).resolve(), args.slow, args.timeout, args.list)
        with tempfile.TemporaryDirectory(prefix="check-readme-") as tmp:
            return check(readme, Path(tmp), args.slow, args.timeout, args.list)
    except ReadmeError as err:
        print(f"error: {readme.name}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
