"""``hlora-mer predict``: apply a trained model to videos, frame folders, a manifest of clips or a dataset.

Inputs, outputs and exit codes: ``docs/predict.md``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from hlora_mer.errors import UserError

if TYPE_CHECKING:
    from hlora_mer.inference.predict import PredictionReport

# Clip names longer than this are shortened on screen (never in --out).
_NAME_WIDTH = 48


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict",
        help="predict the class of new clips (videos, frame folders, a CSV manifest or a dataset) with a model",
        description=(
            "Sample and align each clip exactly as the model's training clips were (the settings come from its "
            "checkpoint), run the model and print the top class and the probability of each class. A clip that "
            "cannot be read, has too few frames or shows no face is reported and the others go on. Exit code: "
            "0 every clip predicted, 1 some clips failed, 2 a mistake in the command (nothing predicted)."
        ),
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files (.mp4, .avi, .mov, ...), folders of frames (img46.jpg: the number ends the name), "
        "CSV manifests (columns path[, onset, offset, apex, id]), or with --dataset a dataset root",
    )
    p.add_argument(
        "-m", "--model", required=True, help="run folder of 'hlora-mer train', a fold folder or a checkpoint folder"
    )
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="INPUT is the root of this dataset (casme2, samm, ...): predict every sample and score them against "
        "their labels in the model's label scheme",
    )
    p.add_argument("--annotation", help="with --dataset: the annotation file (default: the one found under the root)")
    p.add_argument("--onset", type=int, help="first frame of the clip (one video or folder; default: its first frame)")
    p.add_argument("--offset", type=int, help="last frame of the clip (default: its last frame)")
    p.add_argument("--apex", type=int, help="apex frame (used by models trained with apex sampling)")
    p.add_argument("-o", "--out", help="also write the predictions to this file, .csv or .json")
    p.add_argument(
        "--cache",
        help="folder of the aligned clips, kept between calls so unchanged clips are not aligned again "
        "(default: $XDG_CACHE_HOME/hlora-mer/predict, i.e. ~/.cache/hlora-mer/predict)",
    )
    p.add_argument(
        "--expect-labels",
        metavar="A,B,C",
        help="refuse the model unless it predicts exactly these classes (comma-separated, any order)",
    )
    p.add_argument(
        "--label-scheme",
        metavar="NAME",
        help="refuse the model unless it predicts the classes of this label scheme; with --dataset, score with it",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="apply the model although its backbone weights are not those it was trained on",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: %(default)s)")
    p.add_argument(
        "--workers",
        type=int,
        help="alignment worker processes (default: 1 without a face detector, else the number of CPUs up to 8)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check everything asked, load the model, predict, print; 0 all predicted, 1 some failed."""
    from tqdm import tqdm

    from hlora_mer.files import check_writable_dir
    from hlora_mer.inference.load import checkpoint_meta, load_trained
    from hlora_mer.inference.predict import (
        check_labels,
        check_output,
        default_cache_dir,
        predict_clips,
        requests_from_dataset,
        requests_from_inputs,
        write_predictions,
    )
    from hlora_mer.training.engine import resolve_device

    # Everything the user typed is checked before the slow parts (loading the model, aligning clips).
    if args.out:
        check_output(args.out)
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    cache = check_writable_dir(
        args.cache or default_cache_dir(), "cache folder for aligned clips", "choose another folder with --cache"
    )
    device = str(resolve_device(args.device, option="--device {}"))
    checkpoint, meta = checkpoint_meta(args.model)
    expect = args.expect_labels.split(",") if args.expect_labels is not None else None
    scheme = check_labels(checkpoint, meta, expect_labels=expect, label_scheme=args.label_scheme)
    notes: list[str] = []
    if args.dataset:
        if len(args.inputs) != 1:
            raise UserError(f"--dataset {args.dataset} takes one INPUT, the dataset's root; got {len(args.inputs)}")
        given = [f"--{k}" for k in ("onset", "offset", "apex") if getattr(args, k) is not None]
        if given:
            raise UserError(f"{'/'.join(given)} cannot be used with --dataset: each clip has its own annotation")
        requests, notes = requests_from_dataset(
            args.dataset, args.inputs[0], scheme, required=args.label_scheme is not None, annotation=args.annotation
        )
        if not requests:
            raise UserError(f"{args.inputs[0]} holds no {args.dataset} clip; see 'hlora-mer data check'")
    else:
        if args.annotation:
            raise UserError("--annotation goes with --dataset NAME (INPUT is then the dataset's root)")
        requests = requests_from_inputs(args.inputs, onset=args.onset, offset=args.offset, apex=args.apex)

    trained = load_trained(checkpoint, allow_mismatch=args.allow_mismatch)
    bars: dict[str, Any] = {}
    show = not args.quiet and len(requests) > 1

    def progress(stage: str, done: int, total: int) -> None:
        if not show:
            return
        bar = bars.get(stage)
        if bar is None:
            for done_bar in bars.values():  # one stage after the other, one bar at a time
                done_bar.close()
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="clip", leave=False)
        bar.update(done - bar.n)

    try:
        report = predict_clips(
            trained, requests, cache, device=device, batch_size=args.batch_size, workers=args.workers, progress=progress
        )
    finally:
        for bar in bars.values():
            bar.close()
    report.notes[:0] = notes
    _print_report(report)
    if args.out:
        print(_shown(f"predictions: {write_predictions(report, args.out)}"))
    return 1 if report.failed else 0


def _shown(text: str) -> str:
    """``text`` printable on any terminal: bytes of a file name that are not UTF-8 (kept by Python as
    surrogates) are shown as U+FFFD; the output file keeps them as they are."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _short(name: str, width: int = _NAME_WIDTH) -> str:
    name = _shown(name)
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def format_table(report: PredictionReport) -> str:
    """The on-screen table: clip, [truth,] top class and the probability of each class; failed clips below."""
    labels = report.labels
    truth = report.has_truth
    names = [_short(c.name) for c in report.predicted]
    name_w = max([len("clip"), *map(len, names)])
    pred_w = max(len("prediction"), *map(len, labels))
    cols = [max(len(label), 6) for label in labels]
    head = f"{'clip':<{name_w}}  " + (f"{'truth':<{pred_w}}  " if truth else "") + f"{'prediction':<{pred_w}}"
    lines = [head + "".join(f"  {label:>{w}}" for label, w in zip(labels, cols, strict=True))]
    for clip, name in zip(report.predicted, names, strict=True):
        probs = clip.probabilities or {}
        line = f"{name:<{name_w}}  " + (f"{clip.truth or '-':<{pred_w}}  " if truth else "")
        line += f"{clip.prediction:<{pred_w}}"
        lines.append(line + "".join(f"  {probs[label]:>{w}.3f}" for label, w in zip(labels, cols, strict=True)))
    if not report.predicted:
        lines = []
    for clip in report.failed:
        lines.append(_shown(f"failed: {clip.name}: {clip.error}"))
    return "\n".join(lines)


def _print_report(report: PredictionReport) -> None:
    scheme = f", label scheme {report.label_scheme}" if report.label_scheme else ""
    print(_shown(f"model: {report.checkpoint} ({len(report.labels)} classes{scheme})"))
    print(format_table(report))
    for note in report.notes:
        print(_shown(f"note: {note}"))
    summary = f"{len(report.clips)} clip(s): {len(report.predicted)} predicted, {len(report.failed)} failed"
    scored = report.scores()
    if scored is not None:
        summary += (
            f"; accuracy {scored['acc']:.3f}, UF1 {scored['uf1']:.3f} over {int(scored['clips'])} labelled clip(s)"
        )
    print(summary)
