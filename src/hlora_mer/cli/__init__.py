"""The ``hlora-mer`` command: one console script whose subcommands live in this package.

Each submodule exposes ``register(subparsers)``. Only this package talks to people (prints, progress
bars); the library logs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator

from hlora_mer import __version__
from hlora_mer.errors import UserError

# Submodules that add subcommands, in the order they appear in --help.
_COMMAND_MODULES = ("demo", "synth", "data", "preprocess", "train", "predict", "explain", "export", "model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hlora-mer",
        description="Micro-expression recognition with DINOv2 + high-level LoRA + hierarchical fusion.",
    )
    parser.add_argument("--version", action="version", version=f"hlora-mer {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"hlora_mer.cli.{name}").register(subparsers)
    return parser


LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def setup_logging(quiet: bool = False, verbose: bool = False) -> Iterator[logging.Logger]:
    """Show the package's log records on stderr for the length of one command, then undo it.

    The handler goes on the ``hlora_mer`` logger, never on the root logger: a program that calls
    :func:`main` keeps its own logging set-up, and its handlers still receive the package's records
    (they propagate). Third-party loggers are left alone: when nothing else is set up, their warnings
    reach stderr through Python's last-resort handler, and their INFO chatter nowhere. Everything changed
    here is restored on exit.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    package = logging.getLogger("hlora_mer")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    saved_level = package.level
    package.addHandler(handler)
    package.setLevel(level)
    hf_bars = None
    if quiet:  # transformers draws a bar per checkpoint load, outside logging
        from transformers.utils import logging as hf_logging

        hf_bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    try:
        yield package
    finally:
        package.removeHandler(handler)
        package.setLevel(saved_level)
        if hf_bars:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes the positional KEY=VALUE overrides only before the first option; accept them
    # anywhere on the line, as people type them.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra and hasattr(args, "inputs") and not any(a.startswith("-") for a in extra):
        args.inputs = [*args.inputs, *extra]  # predict a.mp4 --model RUN b.mp4
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        # Log lines above the progress bars, not through them.
        with setup_logging(args.quiet, args.verbose) as package, logging_redirect_tqdm(loggers=[package]):
            return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
