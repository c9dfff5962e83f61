"""The ``hlora-mer`` command: one console script whose subcommands live in this package.

Each submodule exposes ``register(subparsers)``. Only this package talks to people (prints, progress
bars); the library logs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    # Third-party libraries are chatty at INFO.
    for noisy in ("httpx", "urllib3", "huggingface_hub", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if quiet:  # transformers draws a bar per checkpoint load, outside logging
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


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
    setup_logging(args.quiet, args.verbose)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # log lines above the progress bars, not through them
            return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
