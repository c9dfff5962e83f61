"""``hlora-mer data``: read a dataset root as distributed and report on it.

* ``hlora-mer data list`` — the registered datasets (versions, options) and label schemes.
* ``hlora-mer data summary casme2 /data/CASME2 --labels casme2_5cls`` — per-class and per-subject
  counts, exclusions, annotation version and md5.
* ``hlora-mer data check casme2 /data/CASME2 --num-frames 8`` — every problem, one line per sample;
  exit code 1 if any sample has an error.
* ``hlora-mer data diff CASME2-coding-20140508.xlsx CASME2-coding-20190701.xlsx`` — what changed between
  two annotation versions of a dataset (files or roots), as a table; ``--out FILE.csv`` writes every row.
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

    _register_diff(sub)


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
    # The owners' own errata are listed even without --warnings: nothing else tells a v1 user.
    shown = [p for p in problems if args.warnings or p.severity != "warning" or p.kind == "owner_errata"]
    for problem in shown:
        print(problem)
    for note in loaded.notes:  # fixes applied, secondary files read (the owners' errata list of v1)
        print(f"note  {note}")
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
    from hlora_mer.data.annotations.action_units import au_report

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


# --- hlora-mer data diff ---------------------------------------------------------------------------------


def _register_diff(sub: argparse._SubParsersAction) -> None:
    diff = sub.add_parser(
        "diff",
        help="what changed between two annotation versions of a dataset (files or roots)",
        description="Compare two annotation versions of one dataset on the loaders' sample tables: samples "
        "added/removed (by sample id), and per sample the emotion, onset/apex/offset, action units and "
        "objective class that changed. A and B are annotation files (read on their own) or dataset roots.",
    )
    diff.add_argument("a", metavar="A", help="the first (older) annotation file or dataset root")
    diff.add_argument("b", metavar="B", help="the second (newer) annotation file or dataset root")
    diff.add_argument("--dataset", metavar="NAME", help="dataset name where the file names do not tell it")
    diff.add_argument("--version-a", metavar="V", help="annotation version of A (where a root holds several)")
    diff.add_argument("--version-b", metavar="V", help="annotation version of B (where a root holds several)")
    diff.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option for both sides, repeatable (e.g. -o objective_classes=file)",
    )
    diff.add_argument("--out", metavar="FILE.csv", help="write every difference as rows: sample_id, field, a, b")
    diff.set_defaults(func=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hlora_mer.data.annotations.diff import DIFF_FIELDS, count_changes, diff_tables, load_pair, one_sided_fields
    from hlora_mer.files import atomic_open

    if args.out is not None and Path(args.out).suffix.lower() != ".csv":
        raise DatasetError(f"--out must be a .csv file, got {args.out!r}")
    options = parse_options(args.option)
    a, b = load_pair(
        args.a, args.b, dataset=args.dataset, version_a=args.version_a, version_b=args.version_b, options=options
    )
    diff = diff_tables(a.loaded.table, b.loaded.table)
    counts = count_changes(diff)
    changed = ", ".join(f"{field} {counts[field]}" for field in DIFF_FIELDS)
    print(
        f"{a.dataset}: A {a.describe()} -> B {b.describe()}: {counts['added']} added, {counts['removed']} removed; "
        f"changed: {changed}"
    )
    for field, side in one_sided_fields(a.loaded.table, b.loaded.table).items():
        print(f"  {field}: only {side.upper()} has it (a column added or removed), not compared per sample")
    for side, version in (("A", a), ("B", b)):
        if len(version.loaded.excluded):
            kinds = version.loaded.excluded["kind"].value_counts().to_dict()
            print(f"  {side}: {len(version.loaded.excluded)} annotation rows excluded by the loader {kinds}")
    if len(diff):
        shown = diff.fillna("-")
        widths = [max(len(c), *(len(str(v)) for v in shown[c])) for c in shown.columns]
        print("  ".join(c.ljust(w) for c, w in zip(shown.columns, widths, strict=True)).rstrip())
        for row in shown.itertuples(index=False):
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    else:
        print("no differences")
    if args.out is not None:
        with atomic_open(args.out, "w", newline="") as handle:
            diff.to_csv(handle, index=False)
        print(f"wrote {len(diff)} rows to {args.out}")
    return 0
