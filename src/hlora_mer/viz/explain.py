"""What a trained model looks at in one clip: paper Fig. 4 (backbone patch features) and Fig. 5 (IFFA attention).

- Fig. 4: the patch tokens after the backbone's final layer norm (CLS and register tokens dropped), for the
  shown frames; their first principal component (numpy SVD over every patch of those frames), upsampled
  and laid over the aligned frames. Once with the run's HLoRA-tuned backbone and once with the same
  backbone untuned (its LoRA disabled, i.e. N_l = 0; for a fully fine-tuned run, its original weights).
- Fig. 5: the inter-frame fusion's attention, a T x T map of frame-to-frame weights (row i: how frame i
  weighs the frames it aggregates; averaged over channels for ``fusion.iffa=paper``, over heads for
  ``official``), beside the sampled frames, apex marked. A variant without IFFA says so in the figure.

:func:`explain_clip` draws both for one aligned clip; :func:`run_explanations` draws them for a few test
clips of a run folder, each with the model of the fold that tested it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from hlora_mer.errors import UserError
from hlora_mer.viz.figures import (
    EXPLAIN_DIR,
    FigureRecord,
    FigureUnavailable,
    draw,
    nearest_index,
    new_figure,
    run_cache,
    save_figure,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from hlora_mer.inference import TrainedModel
    from hlora_mer.models.backbones import DinoBackbone

logger = logging.getLogger(__name__)

# Frames shown in Fig. 4 (evenly spaced, first and apex always among them when T is larger).
MAX_SHOWN_FRAMES = 8
# Test clips of a run folder explained by finalize: the first one of each dataset, at most this many.
RUN_CLIPS = 3
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Explanation:
    """What :func:`explain_clip` drew, and the model's answer on the clip."""

    name: str
    paths: list[Path]
    prediction: str
    probabilities: dict[str, float]
    has_attention: bool
    notes: list[str] = field(default_factory=list)


def safe_name(text: str) -> str:
    """A file-name stem for a sample id (``casme2/01/EP02_01f`` -> ``casme2_01_EP02_01f``)."""
    return _SAFE.sub("_", str(text)).strip("._") or "clip"


def clip_tensor(trained: TrainedModel, clip: np.ndarray) -> torch.Tensor:
    """``(T, S, S, 3)`` uint8 -> the model's normalised ``(1, T, 3, S, S)`` input.

    Raises:
        UserError: the clip's frame count or size is not the model's, naming both.
    """
    from hlora_mer.training.clip_dataset import normalize_clip

    expected = (trained.num_frames, trained.image_size, trained.image_size, 3)
    if clip.dtype != np.uint8 or clip.ndim != 4 or tuple(clip.shape) != expected:
        raise UserError(
            f"the clip is {clip.dtype} of shape {tuple(clip.shape)} but the model {trained.checkpoint} takes "
            f"uint8 clips of shape {expected} (T frames of S x S RGB pixels); prepare it with the model's "
            "preprocessing (its num_frames and size)"
        )
    return normalize_clip(clip).unsqueeze(0)


@contextmanager
def adapters_disabled(module: Any) -> Iterator[int]:
    """Run ``module`` without its LoRA (the untuned backbone, N_l = 0); yields how many layers were disabled.

    peft computes a disabled layer from its base weights alone (unmerging first if needed); the adapters and
    their ``requires_grad`` flags are restored afterwards.
    """
    from hlora_mer.models.lora import lora_layers

    layers = lora_layers(module)
    flags = [(p, p.requires_grad) for layer in layers for p in cast("nn.Module", layer).parameters()]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.enable_adapters(True)
        for p, flag in flags:
            p.requires_grad_(flag)


def patch_features(backbone: DinoBackbone, pixels: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` normalised frames -> ``(N, g, g, d)`` patch tokens after the final layer norm."""
    import torch

    with torch.no_grad():
        tokens = backbone.prefix(pixels, backbone.depth)
        tokens = backbone.model.layernorm(tokens)[:, backbone.num_prefix_tokens :]
    n, patches, dim = tokens.shape
    grid = pixels.shape[-1] // backbone.patch_size
    if grid * grid != patches:
        raise ValueError(f"{patches} patch tokens do not make a {grid} x {grid} grid")
    return tokens.reshape(n, grid, grid, dim).float().cpu().numpy()


def first_component(features: np.ndarray) -> np.ndarray:
    """First principal component of ``(N, g, g, d)`` patch features over all N frames, scaled to [0, 1].

    The sign is fixed so that the patch farthest from the mean scores high, so the same features always
    give the same picture.
    """
    n, gh, gw, dim = features.shape
    x = features.reshape(-1, dim).astype(np.float64)
    x -= x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pc = x @ vt[0]
    if pc[np.argmax(np.abs(pc))] < 0:
        pc = -pc
    span = pc.max() - pc.min()
    pc = (pc - pc.min()) / span if span > 0 else np.zeros_like(pc)
    return pc.reshape(n, gh, gw)


def _upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """``(N, g, g)`` -> ``(N, size, size)`` bilinear."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(maps.astype(np.float32)).unsqueeze(1)
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def shown_frames(num_frames: int, apex_index: int | None, limit: int = MAX_SHOWN_FRAMES) -> list[int]:
    """Frame indices shown in Fig. 4: all of them, or ``limit`` evenly spaced with the apex among them."""
    if num_frames <= limit:
        return list(range(num_frames))
    chosen = set(np.linspace(0, num_frames - 1, limit).round().astype(int).tolist())
    if apex_index is not None and apex_index not in chosen:
        chosen.discard(min(chosen - {0}, key=lambda i: abs(i - apex_index)))
        chosen.add(apex_index)
    return sorted(chosen)


def untuned_features(trained: TrainedModel, pixels: torch.Tensor) -> tuple[np.ndarray, str]:
    """Patch features of the run's backbone without its tuning, and how that backbone was obtained."""
    from hlora_mer.models.lora import lora_layers

    model = trained.model
    cfg = model.config
    assert cfg is not None  # load_checkpoint builds the model from its config
    if lora_layers(model.backbone):
        with adapters_disabled(model.backbone):
            return patch_features(model.backbone, pixels), "untuned: the same backbone, LoRA disabled (N_l = 0)"
    if cfg.backbone.finetune == "full":
        from hlora_mer.models.backbones import build_backbone

        original = build_backbone(cfg.backbone.name, cfg.backbone.pretrained, cfg.backbone.init_seed)
        original.to(pixels.device)
        return patch_features(original, pixels), "untuned: the backbone's original weights"
    return patch_features(model.backbone, pixels), "N_l = 0: the run's backbone is not tuned (both rows alike)"


def _tuned_label(trained: TrainedModel) -> str:
    cfg = trained.model.config
    assert cfg is not None
    if cfg.backbone.finetune == "full":
        return "fully fine-tuned"
    return f"HLoRA-tuned (N_l = {cfg.lora.last_n_blocks}, r = {cfg.lora.rank})"


def plot_pca(
    clip: np.ndarray,
    tuned: np.ndarray,
    untuned: np.ndarray,
    stem: Path,
    *,
    apex_index: int | None,
    frame_numbers: Sequence[int] | None,
    labels: tuple[str, str],
    title: str,
) -> list[Path]:
    """Fig. 4: aligned frames; the untuned backbone's first PCA component over them; the tuned one's."""
    cols = shown_frames(len(clip), apex_index)
    size = clip.shape[1]
    overlays = [_upsample(m[cols], size) for m in (untuned, tuned)]
    fig = new_figure(1.25 * len(cols) + 1.0, 4.4)
    axes = fig.subplots(3, len(cols), squeeze=False)
    row_labels = ("aligned frame", labels[0], labels[1])
    for c, t in enumerate(cols):
        number = frame_numbers[t] if frame_numbers is not None else t + 1
        head = f"frame {number}" + ("\napex" if t == apex_index else "")
        for r in range(3):
            ax = axes[r, c]
            ax.imshow(clip[t])
            if r:
                ax.imshow(overlays[r - 1][c], cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(head, fontsize=7, color="red" if t == apex_index else "black")
            if c == 0:
                ax.set_ylabel("\n".join(_wrap(row_labels[r], 22)), fontsize=6)
    fig.suptitle(title + "\nfirst PCA component of the patch features", fontsize=8)
    return save_figure(fig, stem)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [text]


def plot_attention(
    clip: np.ndarray,
    attention: np.ndarray | None,
    stem: Path,
    *,
    apex_index: int | None,
    frame_numbers: Sequence[int] | None,
    title: str,
    no_attention: str = "",
) -> list[Path]:
    """Fig. 5: the sampled frames (apex marked) above the T x T IFFA attention map."""
    t = len(clip)
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(1, t + 1))
    fig = new_figure(max(4.5, 0.8 * t + 0.8), 0.8 * 1.0 + 4.4)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 4.0], squeeze=False)[:, 0]
    thumbs = top.subplots(1, t, squeeze=False)[0]
    for i, ax in enumerate(thumbs):
        ax.imshow(clip[i])
        ax.set_xticks([])
        ax.set_yticks([])
        apex = i == apex_index
        ax.set_title(f"{numbers[i]}" + ("\napex" if apex else ""), fontsize=6, color="red" if apex else "black")
        if apex:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.0)
    ax = bottom.subplots()
    if attention is None:
        ax.axis("off")
        ax.text(0.5, 0.5, no_attention, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    else:
        im = ax.imshow(attention, cmap="magma", vmin=0.0)
        ax.set_xticks(range(t), [str(n) for n in numbers], fontsize=7)
        ax.set_yticks(range(t), [str(n) for n in numbers], fontsize=7)
        ax.set_xlabel("frame j (aggregated)")
        ax.set_ylabel("frame i (aggregating)")
        if apex_index is not None:
            for lab in (ax.get_xticklabels()[apex_index], ax.get_yticklabels()[apex_index]):
                lab.set_color("red")
                lab.set_fontweight("bold")
            for pos in (apex_index - 0.5, apex_index + 0.5):
                ax.axhline(pos, color="red", linewidth=0.8, linestyle="--")
                ax.axvline(pos, color="red", linewidth=0.8, linestyle="--")
        bottom.colorbar(im, ax=ax, shrink=0.8, label="attention weight a_ij")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, stem)


def explain_clip(
    trained: TrainedModel,
    clip: np.ndarray,
    out_dir: str | Path,
    *,
    apex_index: int | None = None,
    name: str = "clip",
    frame_numbers: Sequence[int] | None = None,
    true_label: str | None = None,
) -> Explanation:
    """Draw Fig. 4 (``NAME_pca``) and Fig. 5 (``NAME_iffa``) for one aligned clip into ``out_dir``.

    Args:
        trained: the model (:func:`hlora_mer.inference.load_trained`).
        clip: ``(T, S, S, 3)`` uint8, prepared with the model's preprocessing.
        out_dir: created if needed; each figure is written as PNG and PDF.
        apex_index: index (0..T-1) of the sampled frame nearest the apex, marked in both figures.
        name: file-name stem (made safe for file names).
        frame_numbers: the source frame number of each sampled frame, for the axis labels.
        true_label: the clip's class, shown in the titles when known.

    Raises:
        UserError: the clip does not fit the model.
        FigureUnavailable: matplotlib is not installed.
    """
    import torch

    model = trained.model
    cfg = model.config
    assert cfg is not None  # load_checkpoint builds the model from its config
    x = clip_tensor(trained, clip)
    if apex_index is not None and not 0 <= apex_index < len(clip):
        raise UserError(f"apex index {apex_index} is outside the clip's {len(clip)} frames (0..{len(clip) - 1})")
    if frame_numbers is not None and len(frame_numbers) != len(clip):
        raise ValueError(f"{len(frame_numbers)} frame numbers for a clip of {len(clip)} frames")
    device = next(model.parameters()).device
    x = x.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits, attention = model.forward_with_attention(x)
        pixels = x[0]
        tuned = first_component(patch_features(model.backbone, pixels))
        untuned_feats, untuned_label = untuned_features(trained, pixels)
        untuned = first_component(untuned_feats)
    finally:
        model.train(was_training)
    probs = logits.softmax(dim=-1)[0].float().cpu().numpy()
    top = int(probs.argmax())
    probabilities = {label: float(p) for label, p in zip(trained.labels, probs, strict=True)}
    answer = f"predicted {trained.labels[top]} (p={probs[top]:.2f})"
    if true_label is not None:
        answer = f"true {true_label} / " + answer
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = safe_name(name)
    notes = [untuned_label]
    paths = plot_pca(
        clip,
        tuned,
        untuned,
        out / f"{stem}_pca",
        apex_index=apex_index,
        frame_numbers=frame_numbers,
        labels=(untuned_label, _tuned_label(trained)),
        title=f"{name}: {answer}",
    )
    no_attention = ""
    if attention is None:
        no_attention = (
            f"fusion.variant={cfg.fusion.variant} has no inter-frame fusion (IFFA): there is no frame-to-frame "
            "attention to show"
        )
        logger.info("%s: %s", name, no_attention)
        notes.append(no_attention)
    iffa = "" if attention is None else f" (fusion.iffa={cfg.fusion.iffa})"
    paths += plot_attention(
        clip,
        None if attention is None else attention[0].float().cpu().numpy(),
        out / f"{stem}_iffa",
        apex_index=apex_index,
        frame_numbers=frame_numbers,
        title=f"{name}: {answer}\nIFFA attention over the {len(clip)} frames{iffa}",
        no_attention=no_attention,
    )
    return Explanation(name, paths, trained.labels[top], probabilities, attention is not None, notes)


def apex_of(sample_id: str, samples: pd.DataFrame | None, frame_numbers: Sequence[int]) -> int | None:
    """Index of the sampled frame nearest the sample's apex (``samples.csv``), None when it has none."""
    if samples is None or sample_id not in samples.index:
        return None
    try:
        apex = int(float(str(samples.loc[sample_id, "apex"])))
    except (TypeError, ValueError):
        return None
    return nearest_index(frame_numbers, apex)


def run_explanations(
    run_dir: Path, preds: pd.DataFrame, run_info: dict[str, Any], limit: int = RUN_CLIPS
) -> list[FigureRecord]:
    """Fig. 4 and Fig. 5 of the first test clip of each dataset (at most ``limit``), each drawn with the model
    of the fold that tested it, into ``RUN/explain/``. Returns one record per clip; never raises for a clip."""
    from hlora_mer import run_folder as rf

    title = "backbone features and IFFA attention (Fig. 4, Fig. 5)"
    if preds.empty:
        return [FigureRecord(EXPLAIN_DIR, title, missing="no test predictions")]
    try:
        cache = run_cache(run_info)
    except FigureUnavailable as why:
        logger.info("Fig. 4 / Fig. 5 not drawn: %s", why)
        return [FigureRecord(EXPLAIN_DIR, title, missing=str(why))]
    first = preds[preds["seed"] == preds["seed"].min()].sort_values("sample_id")
    chosen = first.drop_duplicates("dataset").head(limit)
    folds = {f.name: f for f in rf.read_folds(run_dir)}
    samples = None
    if (run_dir / rf.SAMPLES_FILE).is_file():
        samples = rf.parse_samples((run_dir / rf.SAMPLES_FILE).read_text(encoding="utf-8"))
    records = []
    for row in chosen.to_dict("records"):
        sid, seed, fold = str(row["sample_id"]), int(row["seed"]), folds.get(str(row["fold"]))
        clip_title = f"{sid}: backbone features (Fig. 4) and IFFA attention (Fig. 5)"

        def make(sid: str = sid, seed: int = seed, fold: Any = fold, label: str = str(row["label"])) -> list[Path]:
            from hlora_mer.inference import load_trained

            if fold is None:
                raise FigureUnavailable("its fold is not in folds.json")
            checkpoint = rf.fold_dir(run_dir, seed, fold) / rf.CHECKPOINT_DIR
            if not checkpoint.is_dir():
                raise FigureUnavailable(f"no checkpoint of fold {fold.name} (train.save_checkpoints=false)")
            try:
                clip = cache.load_clip(sid)
            except (FileNotFoundError, UserError) as err:
                raise FigureUnavailable(str(err)) from None
            numbers = list(cache.clips[sid].get("frame_numbers") or range(1, len(clip) + 1))
            trained = load_trained(checkpoint)
            return explain_clip(
                trained,
                clip,
                run_dir / EXPLAIN_DIR,
                apex_index=apex_of(sid, samples, numbers),
                name=sid,
                frame_numbers=numbers,
                true_label=label,
            ).paths

        records.append(draw(f"{EXPLAIN_DIR}/{safe_name(sid)}", clip_title, make))
    return records
