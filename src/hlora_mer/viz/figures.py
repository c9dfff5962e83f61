"""Figures drawn from a run folder's files: confusion matrices, per-subject scores, training losses, failure
cases (paper Fig. 6) and ACC / UF1 against N_l over a sweep (paper Fig. 3).

Every figure goes through :func:`save_figure`: PNG and PDF beside each other, written atomically, with the
metadata that would change from one drawing to the next (software version, creation date) left out.
Figures never stop a run: :func:`draw` turns any failure into a log line and a :class:`FigureRecord` that
says why the figure is missing, which ``report.md`` shows in its place.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hlora_mer.files import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

# File stems of the run folder's figures (each written as .png and .pdf).
CONFUSION = "confusion"
PER_SUBJECT = "per_subject"
LOSS = "loss"
FAILURES = "failures"
NL_SWEEP = "nl_sweep"
EXPLAIN_DIR = "explain"  # Fig. 4 and Fig. 5 of a few test clips

FORMATS = ("png", "pdf")
_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
}
DPI = 110
# Misclassified clips shown in Fig. 6.
FAILURE_LIMIT = 6


class FigureUnavailable(Exception):
    """A figure cannot be drawn from what there is (no matplotlib, no clip cache, nothing to show)."""


@dataclass
class FigureRecord:
    """One figure of a run: where its files are, or why it is missing."""

    name: str  # file stem, relative to the run folder
    title: str  # what it shows, for report.md
    paths: list[Path] = field(default_factory=list)
    missing: str | None = None


def new_figure(width: float, height: float) -> Figure:
    """An Agg figure outside pyplot's global state (nothing to close, safe in any thread)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise FigureUnavailable("matplotlib is not installed; pip install 'hlora-mer[viz]'") from None
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; the same figure gives the same bytes."""
    paths = []
    for fmt in FORMATS:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=_METADATA[fmt])
        path = stem.parent / f"{stem.name}.{fmt}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def draw(name: str, title: str, make: Callable[[], list[Path]]) -> FigureRecord:
    """Call ``make`` and record its files; a failure becomes a log line and the reason the figure is missing."""
    try:
        return FigureRecord(name, title, make())
    except FigureUnavailable as why:
        logger.info("figure %s not drawn: %s", name, why)
        return FigureRecord(name, title, missing=str(why))
    except Exception as err:  # a figure never fails a run
        logger.warning("figure %s failed (%s: %s); the run goes on without it", name, type(err).__name__, err)
        logger.debug("figure %s failed", name, exc_info=True)
        return FigureRecord(name, title, missing=f"drawing it failed ({type(err).__name__}: {err})")


# --------------------------------------------------------------------------------------------------
# confusion matrices


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], stem: Path, title: str = "") -> list[Path]:
    """Counts and row-normalised fractions side by side (rows = true class)."""
    counts = np.asarray(cm, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.4 + 0.55 * len(classes)
    fig = new_figure(2 * size + 1.6, size + 0.6)
    axes = fig.subplots(1, 2)
    panels = (
        (axes[0], counts, "counts", counts.max() or 1.0, lambda v: f"{int(v)}"),
        (axes[1], norm, "fraction of the true class", 1.0, lambda v: f"{v:.2f}"),
    )
    for ax, values, label, vmax, fmt in panels:
        im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
        ax.set_xticks(range(len(classes)), list(classes), rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), list(classes))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(label, fontsize=10)
        for i in range(len(classes)):
            for j in range(len(classes)):
                dark = values[i, j] > 0.5 * vmax
                ax.text(j, i, fmt(values[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "k")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, stem)


# --------------------------------------------------------------------------------------------------
# per-subject scores


def subject_scores(preds: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """Per test subject: samples per seed, ACC and UF1 (each computed per seed, then averaged over seeds)."""
    from hlora_mer.evaluation.metrics import scores

    rows = []
    for subject, g in preds.groupby("subject", sort=True):
        per_seed = [
            scores(s["label_index"].to_numpy(), s["prediction_index"].to_numpy(), num_classes)
            for _, s in g.groupby("seed")
        ]
        rows.append(
            {
                "subject": str(subject),
                "n": int(len(g) // max(1, g["seed"].nunique())),
                "acc": float(np.mean([s["acc"] for s in per_seed])),
                "uf1": float(np.mean([s["uf1"] for s in per_seed])),
            }
        )
    return pd.DataFrame(rows, columns=["subject", "n", "acc", "uf1"])


def plot_per_subject(preds: pd.DataFrame, classes: Sequence[str], stem: Path, title: str = "") -> list[Path]:
    """ACC and UF1 of each test subject; a subject with one test sample is hatched (its scores are 0 or 1)."""
    if preds.empty:
        raise FigureUnavailable("no test predictions")
    table = subject_scores(preds, len(classes))
    x = np.arange(len(table))
    fig = new_figure(max(4.5, 1.5 + 0.42 * len(table)), 3.4)
    ax = fig.subplots()
    single = (table["n"] == 1).to_numpy()
    for offset, key, colour in ((-0.2, "acc", "tab:blue"), (0.2, "uf1", "tab:orange")):
        bars = ax.bar(x + offset, 100 * table[key].to_numpy(), width=0.4, color=colour, label=key.upper())
        for bar, one in zip(bars, single, strict=True):
            if one:
                bar.set_hatch("///")
                bar.set_edgecolor("k")
    ax.set_xticks(x, [f"{s} (n={n})" for s, n in zip(table["subject"], table["n"], strict=True)], rotation=90)
    ax.set_ylim(0, 105)
    ax.set_ylabel("score (%)")
    ax.set_xlabel("test subject (test samples per seed)")
    if single.any():
        from matplotlib.patches import Patch

        handles, labels = ax.get_legend_handles_labels()
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="///"))
        labels.append(f"one test sample ({int(single.sum())} subjects): score 0 or 100")
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    else:
        ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or "per-subject scores", fontsize=10)
    return save_figure(fig, stem)


# --------------------------------------------------------------------------------------------------
# training losses


def losses_figure(results: Sequence[dict[str, Any]], title: str = "") -> Figure:
    """Every step's training loss: one light line per fold run, and their mean (a single run: its line)."""
    curves = [np.asarray(r["losses"], dtype=np.float64) for r in results if r.get("losses")]
    if not curves:
        raise FigureUnavailable("result.json holds no per-step losses (a run of an older version)")
    longest = max(len(c) for c in curves)
    padded = np.full((len(curves), longest), np.nan)
    for i, c in enumerate(curves):
        padded[i, : len(c)] = c
    steps = np.arange(1, longest + 1)
    fig = new_figure(5.5, 3.4)
    ax = fig.subplots()
    if len(curves) == 1:  # one fold run (e.g. all subjects): its own line, no mean to speak of
        ax.plot(steps, curves[0], color="k", linewidth=1.2, label="the run's one fold run")
    else:
        for c in curves:
            ax.plot(np.arange(1, len(c) + 1), c, color="tab:blue", alpha=0.25, linewidth=0.8)
        with np.errstate(all="ignore"):
            mean = np.nanmean(padded, axis=0)
        ax.plot(steps, mean, color="k", linewidth=1.8, label=f"mean over {len(curves)} fold runs")
        ax.plot([], [], color="tab:blue", alpha=0.4, linewidth=0.8, label="one fold run")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.set_title(title or "training loss per fold", fontsize=10)
    return fig


def plot_losses(results: Sequence[dict[str, Any]], stem: Path, title: str = "") -> list[Path]:
    """The training losses (:func:`losses_figure`) written as ``stem.png`` and ``stem.pdf``."""
    return save_figure(losses_figure(results, title), stem)


# --------------------------------------------------------------------------------------------------
# Fig. 6: failure cases


@dataclass
class FailureCase:
    sample_id: str
    label: str
    prediction: str
    probability: float
    onset: np.ndarray  # (S, S, 3) uint8, the first sampled frame
    apex: np.ndarray  # (S, S, 3) uint8, the sampled frame nearest the apex
    onset_frame: int
    apex_frame: int
    apex_known: bool
    annotated_apex: int | None = None  # the apex frame number of samples.csv (None when it has none)


def apex_label(sampled: int, apex: int | None) -> str:
    """What the frame marked as the apex is: the apex itself, or only the sampled frame nearest to it.

    ``sampled`` is the frame number of that sampled frame, ``apex`` the annotated apex (None when unknown).
    """
    if apex is not None and int(apex) == int(sampled):
        return f"apex (frame {sampled})"
    label = f"nearest sampled frame to the apex (frame {sampled}"
    return label + (f"; apex: frame {apex})" if apex is not None else ")")


def nearest_index(frame_numbers: Sequence[int], frame: int | None) -> int | None:
    """Index of the sampled frame nearest ``frame`` (None when there is no frame)."""
    if frame is None or not len(frame_numbers):
        return None
    return int(np.argmin(np.abs(np.asarray(frame_numbers, dtype=np.int64) - int(frame))))


def _frame_number(value: Any) -> int | None:
    """A frame number from samples.csv ('' when missing)."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def sample_apex(sample_id: str, samples: pd.DataFrame | None) -> int | None:
    """The apex frame number of a sample in ``samples.csv`` (None when the sample or its apex is missing)."""
    if samples is None or sample_id not in samples.index:
        return None
    return _frame_number(samples.loc[sample_id, "apex"])


def run_cache(run_info: dict[str, Any]) -> Any:
    """The preprocessing cache the run's clips came from (``run.json`` data.cache_dir), opened for reading."""
    from hlora_mer.preprocess.cache import open_cache_dir

    cache_dir = (run_info.get("data") or {}).get("cache_dir")
    if not cache_dir:
        raise FigureUnavailable("the run did not read its clips from a preprocessing cache (no data.cache_dir)")
    try:
        return open_cache_dir(cache_dir)
    except FileNotFoundError:
        raise FigureUnavailable(f"the clip cache {cache_dir} is gone") from None


def failure_cases(
    preds: pd.DataFrame, samples: pd.DataFrame | None, run_info: dict[str, Any], limit: int = FAILURE_LIMIT
) -> list[FailureCase]:
    """Up to ``limit`` misclassified test clips of the first seed, the most confident mistakes first."""
    from hlora_mer.errors import DatasetError

    if preds.empty:
        raise FigureUnavailable("no test predictions")
    first = preds[preds["seed"] == preds["seed"].min()]
    wrong = first[first["label_index"] != first["prediction_index"]].copy()
    if wrong.empty:
        raise FigureUnavailable("every test clip was classified correctly")
    wrong["p"] = [float(r.get(f"prob_{r['prediction']}", float("nan"))) for r in wrong.to_dict("records")]
    wrong = wrong.sort_values(["p", "sample_id"], ascending=[False, True], na_position="last")
    cache = run_cache(run_info)
    cases: list[FailureCase] = []
    for row in wrong.to_dict("records"):
        if len(cases) >= limit:
            break
        sid = str(row["sample_id"])
        try:
            clip = cache.load_clip(sid)
        except (FileNotFoundError, DatasetError) as err:
            logger.info("failure cases: %s left out: %s", sid, err)
            continue
        numbers = list(cache.clips[sid].get("frame_numbers") or range(len(clip)))
        apex = sample_apex(sid, samples)
        idx = nearest_index(numbers, apex)
        apex_idx = idx if idx is not None else len(clip) // 2
        cases.append(
            FailureCase(
                sid,
                str(row["label"]),
                str(row["prediction"]),
                float(row["p"]),
                clip[0],
                clip[apex_idx],
                int(numbers[0]),
                int(numbers[apex_idx]),
                idx is not None,
                apex,
            )
        )
    if not cases:
        raise FigureUnavailable(f"none of the {len(wrong)} misclassified clips could be read from {cache.dir}")
    return cases


def frame_difference(onset: np.ndarray, apex: np.ndarray) -> tuple[np.ndarray, float]:
    """Apex minus onset in grey levels (mean over RGB, -255..255) and the level shown at full colour.

    The limit is the 99.5th percentile of the absolute difference (at least 1 grey level), so a motion of
    a few grey levels fills the colour scale; the few larger values saturate.
    """
    diff = apex.astype(np.float64).mean(axis=-1) - onset.astype(np.float64).mean(axis=-1)
    limit = float(max(1.0, np.ceil(np.percentile(np.abs(diff), 99.5))))
    return diff, limit


def failures_figure(cases: Sequence[FailureCase], title: str = "") -> Figure:
    """Fig. 6: per misclassified clip, its onset and apex frames and their difference, amplified."""
    if not cases:
        raise FigureUnavailable("no failure case to show")
    # two clips side by side; each image near its pixel size (an aligned frame is 112-224 px wide)
    rows, cols = (len(cases) + 1) // 2, min(2, len(cases))
    fig = new_figure(3.9 * cols, 1.9 * rows + 0.4)
    subfigs = fig.subfigures(rows, cols, squeeze=False).ravel()
    for sub, case in zip(subfigs, cases, strict=False):
        p = "" if np.isnan(case.probability) else f" (p={case.probability:.2f})"
        sub.suptitle(f"{case.sample_id}\ntrue {case.label} / predicted {case.prediction}{p}", fontsize=7)
        axes = sub.subplots(1, 3)
        if case.apex_known:
            apex_title = "\n".join(wrap_words(apex_label(case.apex_frame, case.annotated_apex), 22))
        else:
            apex_title = f"middle (frame {case.apex_frame},\nno apex)"
        for ax, image, label in (
            (axes[0], case.onset, f"onset (frame {case.onset_frame})"),
            (axes[1], case.apex, apex_title),
        ):
            ax.imshow(image)
            ax.set_title(label, fontsize=6)
        diff, limit = frame_difference(case.onset, case.apex)
        im = axes[2].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[2].set_label("difference")
        gain = 255.0 / limit
        axes[2].set_title(f"{'apex' if case.apex_known else 'middle'} - onset\n(amplified x{gain:.0f})", fontsize=6)
        bar = sub.colorbar(im, ax=axes[2], shrink=0.7)
        bar.set_label("grey levels", fontsize=6)
        bar.ax.tick_params(labelsize=6)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_failures(cases: Sequence[FailureCase], stem: Path, title: str = "") -> list[Path]:
    """Fig. 6 (:func:`failures_figure`) written as ``stem.png`` and ``stem.pdf``."""
    return save_figure(failures_figure(cases, title), stem)


def wrap_words(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters (one line when it has no spaces)."""
    import textwrap

    return textwrap.wrap(text, width) or [text]


# --------------------------------------------------------------------------------------------------
# Fig. 3: ACC and UF1 against N_l


@dataclass
class SweepPoint:
    run: Path
    name: str
    last_n_blocks: int
    scores: dict[str, dict[str, float]]  # metric -> {"mean", "std"}
    ci: dict[str, dict[str, float]]  # metric -> {"low", "high", "confidence"} (may be empty)
    series: str = ""


_SWEEP_IGNORED = frozenset({"name", "model.lora.last_n_blocks"})


def sweep_points(runs: Sequence[Path]) -> list[SweepPoint]:
    """The runs that can go on an N_l plot (LoRA runs with pooled scores), each with its series label.

    Runs that differ in more than N_l are split into series, each labelled by the settings that set it apart.
    """
    from hlora_mer import run_folder as rf

    points, identities = [], []
    for run in runs:
        metrics = rf.read_json(run / rf.METRICS_FILE)
        cfg = rf.read_config(run)
        if cfg.model.backbone.finetune != "lora" or not metrics.get("pooled"):
            logger.info("%s left out of the N_l plot (full fine-tuning or no pooled scores)", run)
            continue
        pooled = metrics["pooled"]
        points.append(
            SweepPoint(
                run,
                str(metrics.get("name", run.name)),
                int(cfg.model.lora.last_n_blocks),
                {k: pooled[k] for k in ("acc", "uf1")},
                dict(metrics.get("ci") or {}),
            )
        )
        identities.append({k: v for k, v in rf.training_identity(cfg).items() if k not in _SWEEP_IGNORED})
    keys = sorted({json.dumps(i, sort_keys=True, default=str) for i in identities})
    if len(keys) > 1:
        differing = sorted(
            k for k in set().union(*identities) if len({json.dumps(i.get(k), default=str) for i in identities}) > 1
        )
        for point, ident in zip(points, identities, strict=True):
            point.series = ", ".join(f"{k}={ident.get(k)}" for k in differing[:3])
    return points


def is_nl_sweep(points: Sequence[SweepPoint]) -> bool:
    """Fig. 3 is drawn when at least two runs have different N_l."""
    return len({p.last_n_blocks for p in points}) >= 2


def plot_nl_sweep(points: Sequence[SweepPoint], stem: Path, title: str = "") -> list[Path]:
    """Fig. 3: pooled ACC and UF1 (%) against N_l; error bars = std over seeds, band = bootstrap interval."""
    if not is_nl_sweep(points):
        raise FigureUnavailable("fewer than two different N_l (model.lora.last_n_blocks) among the runs")
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    series = sorted({p.series for p in points})
    styles = {"acc": ("o", "-"), "uf1": ("s", "--")}
    colours = {"acc": "tab:blue", "uf1": "tab:orange"}
    band_conf = None
    for s_index, s in enumerate(series):
        pts = sorted((p for p in points if p.series == s), key=lambda p: (p.last_n_blocks, str(p.run)))
        x = np.array([p.last_n_blocks for p in pts], dtype=np.float64)
        for metric in ("acc", "uf1"):
            marker, line = styles[metric]
            mean = np.array([100 * p.scores[metric]["mean"] for p in pts])
            std = np.array([100 * p.scores[metric]["std"] for p in pts])
            label = metric.upper() + (f" [{s}]" if s else "")
            colour = colours[metric] if len(series) == 1 else f"C{2 * s_index + (metric == 'uf1')}"
            ax.errorbar(x, mean, yerr=std, marker=marker, linestyle=line, capsize=3, color=colour, label=label)
            if all(metric in p.ci for p in pts):
                low = np.array([100 * p.ci[metric]["low"] for p in pts])
                high = np.array([100 * p.ci[metric]["high"] for p in pts])
                ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
                band_conf = pts[0].ci[metric].get("confidence")
    ax.set_xticks(sorted({p.last_n_blocks for p in points}))
    ax.set_xlabel("$N_l$ (blocks with LoRA)")
    ax.set_ylabel("pooled score (%)")
    note = "error bars: std over seeds"
    if band_conf is not None:
        note += f"; bands: {int(round(100 * band_conf))}% bootstrap interval"
    ax.set_title((title + "\n" if title else "") + note, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, stem)


def sweep_figure(runs: Sequence[Path], stem: Path) -> FigureRecord | None:
    """Fig. 3 for ``runs`` when they span at least two N_l; None when they do not (nothing to draw)."""
    try:
        points = sweep_points(runs)
    except Exception as err:  # a figure never fails the report
        logger.warning("N_l figure not drawn: %s", err)
        return FigureRecord(stem.name, "ACC and UF1 against N_l", missing=str(err))
    if not is_nl_sweep(points):
        return None
    title = "ACC and UF1 against N_l"
    return draw(stem.name, title, lambda: plot_nl_sweep(points, stem, title))


# --------------------------------------------------------------------------------------------------
# a run folder's figures


def run_figures(
    run_dir: Path,
    metrics: dict[str, Any],
    preds: pd.DataFrame,
    results: Sequence[dict[str, Any]],
    run_info: dict[str, Any],
    title: str = "",
) -> list[FigureRecord]:
    """Draw every figure of a finished (or partly finished) run into ``run_dir``; never raises."""
    from hlora_mer import run_folder as rf

    classes = list(metrics.get("classes") or run_info.get("classes") or [])
    records = []
    cm = metrics.get("confusion_all_seeds")
    records.append(
        draw(
            CONFUSION,
            "confusion matrices (all seeds pooled; counts and row-normalised)",
            lambda: (
                plot_confusion(cm, classes, run_dir / CONFUSION, title) if cm else _unavailable("no test predictions")
            ),
        )
    )
    records.append(
        draw(PER_SUBJECT, "per-subject ACC and UF1", lambda: plot_per_subject(preds, classes, run_dir / PER_SUBJECT))
    )
    records.append(draw(LOSS, "training loss per fold", lambda: plot_losses(results, run_dir / LOSS)))

    def failures() -> list[Path]:
        samples = None
        if (run_dir / rf.SAMPLES_FILE).is_file():
            samples = rf.parse_samples((run_dir / rf.SAMPLES_FILE).read_text(encoding="utf-8"))
        cases = failure_cases(preds, samples, run_info)
        return plot_failures(cases, run_dir / FAILURES, "misclassified test clips (first seed)")

    records.append(
        draw(
            FAILURES,
            "failure cases (Fig. 6): misclassified clips, onset and apex frames and their difference",
            failures,
        )
    )
    from hlora_mer.inference.explain import run_explanations

    try:
        records.extend(run_explanations(run_dir, preds, run_info))
    except Exception as err:  # a figure never fails a run
        logger.warning("Fig. 4 / Fig. 5 not drawn (%s: %s)", type(err).__name__, err)
        records.append(
            FigureRecord(EXPLAIN_DIR, "backbone features and IFFA attention (Fig. 4, Fig. 5)", missing=str(err))
        )
    return records


def _unavailable(reason: str) -> list[Path]:
    raise FigureUnavailable(reason)


def figures_markdown(records: Sequence[FigureRecord], base: Path) -> list[str]:
    """Report lines: each figure linked (PNG shown, PDF linked), or why it is missing."""
    lines = []
    for r in records:
        if r.paths:
            pdfs = [p for p in r.paths if p.suffix == ".pdf"]
            links = ", ".join(f"[{p.name}]({p.relative_to(base).as_posix()})" for p in pdfs)
            lines += [f"**{r.title}**" + (f" (PDF: {links})" if links else ""), ""]
            lines += [f"![{r.title}]({p.relative_to(base).as_posix()})" for p in r.paths if p.suffix == ".png"]
            lines.append("")
        else:
            lines += [f"**{r.title}**: figure missing — {r.missing}", ""]
    return lines
