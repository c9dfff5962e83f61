"""``hlora-mer data``: read a dataset root as distributed and report on it.

* ``hlora-mer data list`` — the registered datasets (versions, options) and label schemes.
* ``hlora-mer data summary casme2 /data/CASME2 --labels casme2_5cls`` — per-class and per-subject
  counts, exclusions, annotation version and md5.
* ``hlora-mer data check casme2 /data/CASME2 --num-frames 8`` — every problem, one line per sample;
  exit code 1 if any sample has an error.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from hlora_mer.errors import DatasetError


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset name (see 'hlora-mer data list'), e.g. casme2, samm, casme3, megc2019")
    parser.add_argument("root", help="dataset root folder, unchanged from the download")
    parser.add_argument("--annotation", metavar="PATH", help="annotation file (default: the owner's file name in ROOT)")
    parser.add_argument(
        "--version", dest="annotation_version", metavar="V", help="annotation version, e.g. 20190701, v2"
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, repeatable (e.g. -o frames=cropped, -o variant=vis)",
    )
    parser.add_argument(
        "--require-frames", action="store_true", help="exclude samples whose frames are missing (counted as excluded)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data subcommands."""
    data = subparsers.add_parser(
        "data",
        help="read, summarise and check datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: _help(data))

    summary = sub.add_parser("summary", help="per-class / per-subject counts, exclusions, annotation version and md5")
    _add_dataset_args(summary)
    summary.add_argument("--labels", metavar="SCHEME", help="label scheme to count classes with, e.g. casme2_5cls")
    summary.set_defaults(func=run_summary)

    check = sub.add_parser("check", help="cross-check annotation against files; list each problem with its sample id")
    _add_dataset_args(check)
    check.add_argument("--num-frames", type=int, default=8, metavar="T", help="frames sampled per clip (default 8)")
    check.add_argument(
        "--images",
        choices=("key", "all", "none"),
        default="key",
        help="frames to open: onset/apex/offset (key, default), all, or none",
    )
    check.add_argument("--warnings", action="store_true", help="also list warnings (short clips, missing apex)")
    check.set_defaults(func=run_check)

    lister = sub.add_parser("list", help="registered datasets and label schemes")
    lister.set_defaults(func=run_list)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["frames=cropped", "require_frames=true", "fps=25"]`` -> typed dict."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"option {pair!r} is not KEY=VALUE (e.g. -o frames=cropped)")
        options[key.strip()] = _typed(value.strip())
    return options


def _typed(value: str) -> Any:
    if value.lower() in ("true", "yes"):
        return True
    if value.lower() in ("false", "no"):
        return False
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _load(args: argparse.Namespace):
    from hlora_mer.data import load_dataset

    options = parse_options(args.option)
    if args.require_frames:
        options["require_frames"] = True
    return load_dataset(args.dataset, args.root, annotation=args.annotation, version=args.annotation_version, **options)


def run_summary(args: argparse.Namespace) -> int:
    from hlora_mer.data import get_scheme, summarize

    scheme = get_scheme(args.labels) if args.labels else None  # an unknown scheme fails before loading
    loaded = _load(args)
    print(summarize(loaded, scheme).format())
    return 0


def run_check(args: argparse.Namespace) -> int:
    from hlora_mer.data import check_dataset

    if args.num_frames < 1:
        raise DatasetError(f"--num-frames must be at least 1, got {args.num_frames}")
    loaded = _load(args)
    problems = check_dataset(loaded, num_frames=args.num_frames, images=args.images)
    shown = [p for p in problems if args.warnings or p.severity != "warning"]
    for problem in shown:
        print(problem)
    _print_au_rules(loaded.table)
    counts = Counter((p.severity, p.kind) for p in problems)
    samples = len({p.sample_id for p in problems if p.severity == "error"})
    print(
        f"{loaded.name}: {len(loaded.table)} samples checked, {len(loaded.excluded)} excluded; "
        f"{samples} samples with errors"
    )
    for (severity, kind), n in sorted(counts.items()):
        print(f"  {severity:8s} {kind:24s} {n}")
    if not args.warnings and any(p.severity == "warning" for p in problems):
        print("(warnings not listed; add --warnings to list them)")
    return 1 if samples else 0


def _print_au_rules(table: Any) -> None:
    """Each ambiguous action-unit code and the written rule that resolved it (docs/datasets.md)."""
    from hlora_mer.data.action_units import au_report

    applications = au_report(table).rules
    if applications:
        print(f"action-unit rules applied ({len(applications)}):")
    for sample_id, application in applications:
        print(f"  {application.rule:24s} {sample_id}: {application.code!r}")


def run_list(args: argparse.Namespace) -> int:
    from hlora_mer.data import get_dataset_spec, get_scheme, list_datasets, list_schemes

    print("datasets:")
    for name in list_datasets():
        spec = get_dataset_spec(name)
        versions = f" versions {', '.join(spec.versions)} (default {spec.default_version})" if spec.versions else ""
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        print(f"  {name:<12s} {spec.title}{versions}; options: {options or '-'}")
    print("label schemes:")
    for name in list_schemes():
        scheme = get_scheme(name)
        print(f"  {name:<15s} [{', '.join(scheme.classes)}] {scheme.description}")
    return 0
