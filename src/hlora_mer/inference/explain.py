"""What a trained model looks at in one clip: paper Fig. 4 (backbone patch features) and Fig. 5 (IFFA attention).

- Fig. 4: the patch tokens after the backbone's final layer norm (CLS and register tokens dropped) of the
  run's HLoRA-tuned backbone and of the same backbone untuned (its LoRA disabled, i.e. N_l = 0; for a fully
  fine-tuned run, its original weights); their first principal component, one PCA (numpy SVD) over the
  patches of both backbones on all the clip's frames, so the two rows share one scale and colour bar; below
  them, tuned minus untuned on its own symmetric scale; the title gives how much the tuning changes the
  CLS token and the patch tokens (relative L2 norm).
- Fig. 5: the inter-frame fusion's attention, a T x T map of frame-to-frame weights (row i: how frame i
  weighs its neighbours, the k nearest frames for ``fusion.iffa=paper``, averaged over channels; the
  adjacent frames for ``official``, averaged over heads); cells outside a row's neighbours are hatched, not
  drawn as zero weight; per row, the entropy over log k and the largest deviation from uniform 1/k. Beside
  the sampled frames, the apex marked (or, when the apex itself was not sampled, the nearest sampled frame,
  called so). A variant without IFFA says so in the figure.

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
    apex_label,
    draw,
    nearest_index,
    new_figure,
    run_cache,
    sample_apex,
    save_figure,
    wrap_words,
)

if TYPE_CHECKING:
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from torch import nn

    from hlora_mer.inference.load import TrainedModel
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
    change: TuningChange | None = None  # how much the tuning moves the backbone's output on this clip
    marked: str = ""  # what the frame marked in red is (the apex, or the sampled frame nearest to it)


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


@dataclass
class Tokens:
    """A backbone's output tokens after its final layer norm, for N frames."""

    cls: np.ndarray  # (N, d)
    patches: np.ndarray  # (N, g, g, d), register tokens dropped


def backbone_tokens(backbone: DinoBackbone, pixels: torch.Tensor) -> Tokens:
    """``(N, 3, S, S)`` normalised frames -> the CLS token and the patch tokens after the final layer norm."""
    import torch

    with torch.no_grad():
        tokens = backbone.prefix(pixels, backbone.depth)
        tokens = backbone.model.layernorm(tokens)  # (N, prefix + g*g, d)
    patches = tokens[:, backbone.num_prefix_tokens :]
    n, count, dim = patches.shape
    grid = pixels.shape[-1] // backbone.patch_size
    if grid * grid != count:
        raise ValueError(f"{count} patch tokens do not make a {grid} x {grid} grid")
    return Tokens(
        tokens[:, 0].float().cpu().numpy(),
        patches.reshape(n, grid, grid, dim).float().cpu().numpy(),  # (N, g, g, d)
    )


def patch_features(backbone: DinoBackbone, pixels: torch.Tensor) -> np.ndarray:
    """``(N, 3, S, S)`` normalised frames -> ``(N, g, g, d)`` patch tokens after the final layer norm."""
    return backbone_tokens(backbone, pixels).patches


def relative_change(tuned: np.ndarray, untuned: np.ndarray) -> float:
    """``||tuned - untuned|| / ||untuned||`` over every value (0 when both are zero)."""
    base = float(np.linalg.norm(untuned.astype(np.float64)))
    diff = float(np.linalg.norm(tuned.astype(np.float64) - untuned.astype(np.float64)))
    return diff / base if base > 0 else float(diff > 0)


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


def shared_component(untuned: np.ndarray, tuned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first principal component of both backbones' ``(N, g, g, d)`` patch features together.

    One PCA over the patches of both (:func:`first_component` of the two stacked), so both maps are the
    same direction of the feature space on the same [0, 1] scale and their difference is the tuning's
    effect along it. Returns the untuned and the tuned ``(N, g, g)`` maps.
    """
    if untuned.shape != tuned.shape:
        raise ValueError(f"patch features of shapes {untuned.shape} and {tuned.shape} cannot share a PCA")
    both = first_component(np.concatenate([untuned, tuned]))  # (2N, g, g)
    return both[: len(untuned)], both[len(untuned) :]


def shown_frames(num_frames: int, apex_index: int | None, limit: int = MAX_SHOWN_FRAMES) -> list[int]:
    """Frame indices shown in Fig. 4: all of them, or ``limit`` evenly spaced with the apex among them."""
    if num_frames <= limit:
        return list(range(num_frames))
    chosen = set(np.linspace(0, num_frames - 1, limit).round().astype(int).tolist())
    if apex_index is not None and apex_index not in chosen:
        chosen.discard(min(chosen - {0}, key=lambda i: abs(i - apex_index)))
        chosen.add(apex_index)
    return sorted(chosen)


def untuned_tokens(trained: TrainedModel, pixels: torch.Tensor) -> tuple[Tokens, str]:
    """Output tokens of the run's backbone without its tuning, and how that backbone was obtained."""
    from hlora_mer.models.lora import lora_layers

    model = trained.model
    cfg = model.config
    assert cfg is not None  # load_checkpoint builds the model from its config
    if lora_layers(model.backbone):
        with adapters_disabled(model.backbone):
            return backbone_tokens(model.backbone, pixels), "untuned: the same backbone, LoRA disabled (N_l = 0)"
    if cfg.backbone.finetune == "full":
        from hlora_mer.models.backbones import build_backbone

        original = build_backbone(cfg.backbone.name, cfg.backbone.pretrained, cfg.backbone.init_seed)
        original.to(pixels.device)
        return backbone_tokens(original, pixels), "untuned: the backbone's original weights"
    return backbone_tokens(model.backbone, pixels), "N_l = 0: the run's backbone is not tuned (both rows alike)"


def untuned_features(trained: TrainedModel, pixels: torch.Tensor) -> tuple[np.ndarray, str]:
    """Patch features of the run's backbone without its tuning, and how that backbone was obtained."""
    tokens, note = untuned_tokens(trained, pixels)
    return tokens.patches, note


def _tuned_label(trained: TrainedModel) -> str:
    cfg = trained.model.config
    assert cfg is not None
    if cfg.backbone.finetune == "full":
        return "fully fine-tuned"
    return f"HLoRA-tuned (N_l = {cfg.lora.last_n_blocks}, r = {cfg.lora.rank})"


def _apex_heading(number: int, apex_frame: int | None) -> str:
    """Short label under a frame marked as the apex (the full wording is in the figure's title)."""
    return "apex" if apex_frame is not None and int(apex_frame) == int(number) else "nearest to apex"


def _apex_line(numbers: Sequence[int], apex_index: int | None, apex_frame: int | None) -> str:
    """The title line that says what the frame marked in red is."""
    if apex_index is None:
        return "apex unknown: no frame marked"
    return "red: " + apex_label(numbers[apex_index], apex_frame)


@dataclass
class TuningChange:
    """How much the tuning moves the backbone's output on one clip: ``||tuned - untuned|| / ||untuned||``."""

    cls: float  # the CLS token (what the fusion reads), over the clip's frames
    patches: float  # every patch token of the clip's frames

    def text(self) -> str:
        return (
            f"the tuning changes the CLS token by {100 * self.cls:.0f} % and the patch tokens by "
            f"{100 * self.patches:.0f} % (relative L2 norm over the clip's frames)"
        )


def pca_figure(
    clip: np.ndarray,
    tuned: np.ndarray,
    untuned: np.ndarray,
    *,
    apex_index: int | None,
    frame_numbers: Sequence[int] | None,
    labels: tuple[str, str],
    title: str,
    change: TuningChange | None = None,
    apex_frame: int | None = None,
) -> Figure:
    """Fig. 4: aligned frames; the untuned and the tuned backbone's first PCA component over them, on one
    shared scale (``untuned`` and ``tuned`` are :func:`shared_component` maps); tuned minus untuned.

    The two component rows share one colour scale and colour bar; the difference row has its own,
    symmetric around 0. Axes are labelled ``pca:frame``, ``pca:untuned``, ``pca:tuned``, ``pca:difference``.
    """
    cols = shown_frames(len(clip), apex_index)
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(1, len(clip) + 1))
    maps = [m[cols] for m in (untuned, tuned)]  # each (C, g, g): one value per patch, drawn as a square
    diff = maps[1] - maps[0]
    limit = float(np.abs(diff).max()) or 1e-6
    fig = new_figure(1.2 * len(cols) + 2.2, 6.2)
    axes = fig.subplots(4, len(cols), squeeze=False)
    row_labels = ("aligned frame", labels[0], labels[1], "tuned minus untuned")
    row_names = ("frame", "untuned", "tuned", "difference")
    images: list[Any] = [None] * 4
    for c, t in enumerate(cols):
        apex = t == apex_index
        head = f"frame {numbers[t]}" + (f"\n{_apex_heading(numbers[t], apex_frame)}" if apex else "")
        for r in range(4):
            ax = axes[r, c]
            ax.set_label(f"pca:{row_names[r]}")
            if r == 0:
                ax.imshow(clip[t])
                ax.set_title(head, fontsize=7, color="red" if apex else "black")
            elif r < 3:
                images[r] = ax.imshow(maps[r - 1][c], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                images[r] = ax.imshow(diff[c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if apex:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(1.5)
            if c == 0:
                ax.set_ylabel("\n".join(wrap_words(row_labels[r], 22)), fontsize=6)
    shared = fig.colorbar(images[1], ax=list(axes[1:3].ravel()), shrink=0.9, aspect=25)
    shared.set_label("first PCA component\n(shared scale)", fontsize=6)
    delta = fig.colorbar(images[3], ax=list(axes[3]), shrink=0.9, aspect=12)
    delta.set_label("tuned - untuned", fontsize=6)
    for bar in (shared, delta):
        bar.ax.tick_params(labelsize=6)
    lines = [
        title,
        "first PCA component of the patch features: one PCA over both backbones' patches (one scale)",
    ]
    if change is not None:
        lines.append(change.text())
    lines.append(_apex_line(numbers, apex_index, apex_frame))
    fig.suptitle("\n".join(lines), fontsize=7)
    return fig


def plot_pca(clip: np.ndarray, tuned: np.ndarray, untuned: np.ndarray, stem: Path, **kwargs: Any) -> list[Path]:
    """Fig. 4 (:func:`pca_figure`) written as ``stem.png`` and ``stem.pdf``."""
    return save_figure(pca_figure(clip, tuned, untuned, **kwargs), stem)


def attention_spread(attention: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a ``(T, T)`` attention map over its neighbours (``neighbours``, boolean ``(T, T)``): the
    entropy divided by its uniform value log k (1 = the k neighbours weighed alike; NaN when k = 1) and the
    largest deviation from uniform, ``max_j |a_ij - 1/k|``."""
    entropy = np.full(len(attention), np.nan)
    deviation = np.full(len(attention), np.nan)
    for i, (row, mask) in enumerate(zip(attention.astype(np.float64), neighbours, strict=True)):
        weights = row[mask]
        k = len(weights)
        if not k or weights.sum() <= 0:
            continue
        weights = weights / weights.sum()
        deviation[i] = float(np.abs(weights - 1.0 / k).max())
        if k > 1:
            positive = weights[weights > 0]
            entropy[i] = float(-(positive * np.log(positive)).sum() / np.log(k))
    return entropy, deviation


def attention_figure(
    clip: np.ndarray,
    attention: np.ndarray | None,
    *,
    apex_index: int | None,
    frame_numbers: Sequence[int] | None,
    title: str,
    neighbours: np.ndarray | None = None,
    shown: str = "",
    no_attention: str = "",
    apex_frame: int | None = None,
) -> Figure:
    """Fig. 5: the sampled frames (apex marked) above the T x T IFFA attention map.

    Cells outside a row's neighbours (``neighbours`` false; default: weight 0) carry no weight at all: they
    are left blank and hatched, not drawn as zero attention. Right of each row: its normalised entropy and
    largest deviation from uniform (:func:`attention_spread`). ``shown`` says what the rows are.
    """
    t = len(clip)
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(1, t + 1))
    fig = new_figure(max(5.6, 0.8 * t + 2.6), 0.8 * 1.0 + 4.8)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 4.0], squeeze=False)[:, 0]
    thumbs = top.subplots(1, t, squeeze=False)[0]
    for i, ax in enumerate(thumbs):
        ax.imshow(clip[i])
        ax.set_xticks([])
        ax.set_yticks([])
        apex = i == apex_index
        head = f"{numbers[i]}" + (f"\n{_apex_heading(numbers[i], apex_frame)}" if apex else "")
        ax.set_title(head, fontsize=6, color="red" if apex else "black")
        if apex:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.0)
    ax = bottom.subplots()
    ax.set_label("attention")
    lines = [title]
    if attention is None:
        ax.axis("off")
        ax.text(0.5, 0.5, no_attention, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes)
    else:
        _draw_attention(bottom, ax, attention, attention > 0 if neighbours is None else neighbours, numbers)
        if apex_index is not None:
            for lab in (ax.get_xticklabels()[apex_index], ax.get_yticklabels()[apex_index]):
                lab.set_color("red")
                lab.set_fontweight("bold")
            for pos in (apex_index - 0.5, apex_index + 0.5):
                ax.axhline(pos, color="red", linewidth=0.8, linestyle="--")
                ax.axvline(pos, color="red", linewidth=0.8, linestyle="--")
        if shown:
            lines += wrap_words(shown, 110)
    lines.append(_apex_line(numbers, apex_index, apex_frame))
    fig.suptitle("\n".join(lines), fontsize=7)
    return fig


def _draw_attention(sub: Any, ax: Axes, attention: np.ndarray, neighbours: np.ndarray, numbers: list[int]) -> None:
    """The map: neighbours coloured by weight, the other cells hatched; per row, entropy and deviation."""
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.transforms import blended_transform_factory

    t = len(attention)
    weights = np.ma.masked_array(attention, mask=~neighbours)
    cmap = _colormap("magma").with_extremes(bad="white")
    im = ax.imshow(weights, cmap=cmap, vmin=0.0, vmax=float(attention[neighbours].max(initial=0.0)) or 1.0)
    for i, j in zip(*np.nonzero(~neighbours), strict=True):
        cell = Rectangle((j - 0.5, i - 0.5), 1.0, 1.0, facecolor="none", edgecolor="0.6", hatch="////", linewidth=0)
        cell.set_label("not a neighbour")
        ax.add_patch(cell)
    ax.set_xticks(range(t), [str(n) for n in numbers], fontsize=7)
    ax.set_yticks(range(t), [str(n) for n in numbers], fontsize=7)
    ax.set_xlabel("frame j (aggregated)")
    ax.set_ylabel("frame i (aggregating)")
    entropy, deviation = attention_spread(attention, neighbours)
    side = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(1.03, -0.9, "H/log k   max|a-1/k|", transform=side, fontsize=6, va="center", ha="left")
    for i in range(t):
        h = "  -  " if np.isnan(entropy[i]) else f"{entropy[i]:.3f}"
        d = "-" if np.isnan(deviation[i]) else f"{deviation[i]:.3f}"
        ax.text(1.03, i, f"{h}      {d}", transform=side, fontsize=6, va="center", ha="left", gid="spread")
    ax.legend(
        handles=[Patch(facecolor="white", edgecolor="0.6", hatch="////", label="not a neighbour (no weight)")],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        fontsize=6,
        frameon=False,
    )
    bar = sub.colorbar(im, ax=ax, shrink=0.8, pad=0.2)
    bar.set_label("attention weight a_ij (rows sum to 1 over the neighbours)", fontsize=6)
    bar.ax.tick_params(labelsize=6)


def _colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]


def plot_attention(clip: np.ndarray, attention: np.ndarray | None, stem: Path, **kwargs: Any) -> list[Path]:
    """Fig. 5 (:func:`attention_figure`) written as ``stem.png`` and ``stem.pdf``."""
    return save_figure(attention_figure(clip, attention, **kwargs), stem)


def _attention_with_neighbours(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None, Any, str]:
    """Logits, the ``(T, T)`` attention of the clip (None without IFFA), the boolean neighbour mask of its
    rows and what a row shows."""
    import torch

    from hlora_mer.models.fusion import ChainGraphAttention, InterFrameAggregator

    iffa = getattr(model.fusion, "iffa", None)
    captured: list[torch.Tensor] = []
    handle = None
    if iffa is not None:
        handle = iffa.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    try:
        with torch.no_grad():
            logits, attention = model.forward_with_attention(x)
    finally:
        if handle is not None:
            handle.remove()
    if attention is None:
        return logits, None, None, ""
    att = attention[0].float().cpu().numpy()
    hatched = "hatched: not a neighbour of frame i, no weight (not a zero weight)"
    if isinstance(iffa, InterFrameAggregator) and captured:
        with torch.no_grad():
            mask = iffa.neighbours(iffa.proj(captured[0]))[0].cpu().numpy()  # (T, T)
        k = iffa.num_neighbors
        shown = (
            f"row i: how frame i weighs its k = {k} nearest frames in the learned feature space (self excluded), "
            f"mean over channels; uniform would be 1/k = {1 / k:.3f}; {hatched}; right: the row's entropy "
            "over log k (1 = uniform) and its largest deviation from 1/k"
        )
        return logits, att, mask, shown
    if isinstance(iffa, ChainGraphAttention):
        mask = cast("torch.Tensor", iffa.adjacency).cpu().numpy()  # (T, T) registered buffer
        shown = (
            "row i: graph attention of frame i over itself and its adjacent frames (a fixed chain), mean over "
            f"heads; {hatched}; right: the row's entropy over log k (1 = uniform) and its largest deviation "
            "from 1/k"
        )
        return logits, att, mask, shown
    return logits, att, att > 0, f"row i: how frame i weighs the frames it aggregates; {hatched}"


def explain_clip(
    trained: TrainedModel,
    clip: np.ndarray,
    out_dir: str | Path,
    *,
    apex_index: int | None = None,
    name: str = "clip",
    frame_numbers: Sequence[int] | None = None,
    true_label: str | None = None,
    apex_frame: int | None = None,
) -> Explanation:
    """Draw Fig. 4 (``NAME_pca``) and Fig. 5 (``NAME_iffa``) for one aligned clip into ``out_dir``.

    Args:
        trained: the model (:func:`hlora_mer.inference.load.load_trained`).
        clip: ``(T, S, S, 3)`` uint8, prepared with the model's preprocessing.
        out_dir: created if needed; each figure is written as PNG and PDF.
        apex_index: index (0..T-1) of the sampled frame nearest the apex, marked in both figures.
        name: file-name stem (made safe for file names).
        frame_numbers: the source frame number of each sampled frame, for the axis labels.
        true_label: the clip's class, shown in the titles when known.
        apex_frame: the apex's own frame number, when known: the marked frame is called the apex only when
            it is that frame, else "nearest sampled frame to the apex".

    Raises:
        UserError: the clip does not fit the model.
        FigureUnavailable: matplotlib is not installed.
    """
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
        logits, attention, neighbours, shown = _attention_with_neighbours(model, x)
        pixels = x[0]
        tuned_tokens = backbone_tokens(model.backbone, pixels)
        plain_tokens, untuned_label = untuned_tokens(trained, pixels)
    finally:
        model.train(was_training)
    change = TuningChange(
        relative_change(tuned_tokens.cls, plain_tokens.cls),
        relative_change(tuned_tokens.patches, plain_tokens.patches),
    )
    untuned, tuned = shared_component(plain_tokens.patches, tuned_tokens.patches)
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
        change=change,
        apex_frame=apex_frame,
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
        attention,
        out / f"{stem}_iffa",
        apex_index=apex_index,
        frame_numbers=frame_numbers,
        title=f"{name}: {answer}\nIFFA attention over the {len(clip)} frames{iffa}",
        neighbours=neighbours,
        shown=shown,
        no_attention=no_attention,
        apex_frame=apex_frame,
    )
    numbers = list(frame_numbers) if frame_numbers is not None else list(range(1, len(clip) + 1))
    marked = "" if apex_index is None else apex_label(numbers[apex_index], apex_frame)
    return Explanation(name, paths, trained.labels[top], probabilities, attention is not None, notes, change, marked)


def apex_of(sample_id: str, samples: pd.DataFrame | None, frame_numbers: Sequence[int]) -> int | None:
    """Index of the sampled frame nearest the sample's apex (``samples.csv``), None when it has none."""
    return nearest_index(frame_numbers, sample_apex(sample_id, samples))


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
            from hlora_mer.inference.load import load_trained

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
                apex_frame=sample_apex(sid, samples),
            ).paths

        records.append(draw(f"{EXPLAIN_DIR}/{safe_name(sid)}", clip_title, make))
    return records
