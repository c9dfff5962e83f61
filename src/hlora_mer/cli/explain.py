"""``hlora-mer explain``: draw what a trained model looks at in one clip (paper Fig. 4 and Fig. 5).

What the figures show: ``docs/figures.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hlora_mer.errors import UserError

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="draw a clip's backbone features (Fig. 4) and IFFA attention (Fig. 5) for a trained model",
        description="Run a trained model on one clip and draw (1) the first PCA component of its backbone's "
        "patch features, HLoRA-tuned next to untuned, over the aligned frames, and (2) its inter-frame "
        "attention as a T x T map beside the sampled frames. Each figure is written as PNG and PDF.",
    )
    p.add_argument("clip", nargs="?", metavar="CLIP", help="a video file or a folder of frames (or use --sample)")
    p.add_argument("--model", required=True, metavar="RUN_OR_CHECKPOINT", help="run, fold or checkpoint folder")
    p.add_argument(
        "--sample",
        metavar="ID",
        help="a sample id of the model's own run: its aligned clip is read from the run's clip cache "
        "(with a run folder of several folds, the fold that tested the sample is used)",
    )
    p.add_argument("--onset", type=int, help="first frame number of the clip (default: the first)")
    p.add_argument("--offset", type=int, help="last frame number of the clip (default: the last)")
    p.add_argument("--apex", type=int, help="apex frame number, marked in the figures")
    p.add_argument("-o", "--output", default="explain", help="folder for the figures (default: %(default)s)")
    p.add_argument(
        "--cache",
        metavar="DIR",
        help="aligned-clip cache for CLIP, shared with 'hlora-mer predict' (default: ~/.cache/hlora-mer/predict)",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="use the checkpoint even if the backbone's weights differ from those it was trained on",
    )
    p.set_defaults(func=explain)


def _run_folder_of(path: Path) -> Path | None:
    from hlora_mer.run_folder import CONFIG_FILE, RUN_FILE

    for folder in (path, *path.parents):
        if (folder / RUN_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    return None


def _check_sample(model: Path, sample: str) -> None:
    """Refuse a ``--sample`` that is not one of the run's samples, naming a few that are."""
    from hlora_mer import run_folder as rf

    run = _run_folder_of(model)
    if run is None or not (run / rf.SAMPLES_FILE).is_file():
        return  # said by _sample_clip, with what to pass instead
    ids = list(rf.parse_samples((run / rf.SAMPLES_FILE).read_text(encoding="utf-8")).index)
    if sample not in ids:
        close = [i for i in ids if i.split("/")[:-1] == sample.split("/")[:-1]] or ids
        raise UserError(
            f"{sample} is not a sample of this run ({run}, {len(ids)} samples); samples are e.g. "
            + ", ".join(close[:5])
            + (f" ({rf.SAMPLES_FILE} lists them all)" if len(ids) > 5 else "")
        )


def _model_for_sample(model: Path, sample: str) -> Path:
    """A run folder with several checkpoints: the fold (first seed) that tested ``sample``; else ``model``."""
    from hlora_mer import run_folder as rf

    if not (model / rf.FOLDS_FILE).is_file() or (model / rf.CHECKPOINT_DIR).is_dir():
        return model
    seeds = rf.read_config(model).eval.seeds
    for fold in rf.read_folds(model):
        if sample in fold.test_ids and seeds:
            candidate = rf.fold_dir(model, seeds[0], fold)
            if (candidate / rf.CHECKPOINT_DIR).is_dir():
                return candidate
    return model


def _sample_clip(model: Path, sample: str) -> tuple[np.ndarray, list[int], int | None, str | None]:
    """The run's own aligned clip of ``sample``, its frame numbers, apex frame and label."""
    from hlora_mer import run_folder as rf
    from hlora_mer.preprocess.cache import open_cache_dir

    run = _run_folder_of(model)
    if run is None:
        raise UserError(
            f"--sample needs the model's run folder (run.json, config.yaml), but {model} is not inside one; "
            "pass a run or fold folder of 'hlora-mer train', or a clip (video or frame folder) instead"
        )
    cache_dir = (rf.read_run_info(run).get("data") or {}).get("cache_dir")
    if not cache_dir:
        raise UserError(f"{run} read its clips from memory, not from a clip cache; pass a video or frame folder")
    try:
        cache = open_cache_dir(cache_dir)
        clip = cache.load_clip(sample)
    except FileNotFoundError as err:
        raise UserError(f"sample {sample!r} of {run}: {err}") from None
    numbers = [int(n) for n in cache.clips[sample].get("frame_numbers") or range(1, len(clip) + 1)]
    apex, label = None, None
    if (run / rf.SAMPLES_FILE).is_file():
        samples = rf.parse_samples((run / rf.SAMPLES_FILE).read_text(encoding="utf-8"))
        if sample in samples.index:
            text = str(samples.loc[sample, "apex"]).strip()
            apex = int(float(text)) if text else None
            label = str(samples.loc[sample, "label"]) or None
    return clip, numbers, apex, label


def explain(args: argparse.Namespace) -> int:
    from hlora_mer.files import check_writable_dir
    from hlora_mer.inference.explain import explain_clip
    from hlora_mer.inference.load import load_trained
    from hlora_mer.inference.predict import prepare_clip
    from hlora_mer.viz.figures import FigureUnavailable, nearest_index

    if (args.clip is None) == (args.sample is None):
        raise UserError("pass either a CLIP (video file or frame folder) or --sample ID, not both and not neither")
    check_writable_dir(args.output, "figure folder", "choose another folder with -o")
    model_path = Path(args.model)
    if args.sample is not None:
        _check_sample(model_path, args.sample)
        model_path = _model_for_sample(model_path, args.sample)
    trained = load_trained(model_path, allow_mismatch=args.allow_mismatch)
    label = None
    if args.sample is not None:
        clip, numbers, apex, label = _sample_clip(trained.checkpoint, args.sample)
        name = args.sample
    else:
        clip, numbers = prepare_clip(
            trained, args.clip, onset=args.onset, offset=args.offset, apex=args.apex, cache_dir=args.cache
        )
        apex, name = args.apex, Path(args.clip).stem or "clip"
    try:
        result = explain_clip(
            trained,
            clip,
            args.output,
            apex_index=nearest_index(numbers, apex),
            apex_frame=apex,
            name=name,
            frame_numbers=numbers,
            true_label=label,
        )
    except FigureUnavailable as why:
        raise UserError(f"cannot draw the figures: {why}") from None
    print(f"{name}: model {trained.checkpoint}")
    print(
        f"  predicted {result.prediction}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in result.probabilities.items())
        + (f" (true: {label})" if label else "")
    )
    print(f"  frames {', '.join(map(str, numbers))}" + (f"; apex {apex}" if apex is not None else "; apex unknown"))
    for note in result.notes:
        print(f"  {note}")
    for path in result.paths:
        print(f"  wrote {path}")
    return 0
