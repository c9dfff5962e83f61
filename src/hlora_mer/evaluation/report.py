"""Turn a run folder's per-fold predictions into ``predictions.csv``, ``metrics.json``, ``report.md`` and its
figures (``hlora_mer.viz``), and put several runs side by side (``hlora-mer report``).

Everything here is a function of the files, so a resumed run and an uninterrupted one give byte-identical
``metrics.json`` (no timestamps in it). Scores are pooled over all folds of a seed (MEGC convention,
``metrics.py``), then averaged over seeds; per-fold numbers appear only in their own table.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hlora_mer import run_folder as rf
from hlora_mer.errors import UserError
from hlora_mer.evaluation.metrics import (
    METRIC_NAMES,
    bootstrap_ci,
    confusion_matrix,
    fold_averaged,
    mean_std,
    scores,
    summary,
)
from hlora_mer.files import atomic_write_text
from hlora_mer.run_folder import METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE
from hlora_mer.viz.figures import CONFUSION, FigureRecord, run_figures

logger = logging.getLogger(__name__)

SUBSET_NOTE = (
    "a SUBSET of the protocol's folds (eval.folds): these scores pool only the listed folds and are "
    "not comparable with a full run"
)
LEAKY_NOTE = (
    "LEAKY, for comparison only: each fold's evaluation point with the best accuracy ON ITS TEST "
    "SUBJECT (the official code's best_acc). Model selection on the test set inflates scores "
    "(Varanka et al. 2022); this is never the result."
)
ABSENT_RULE = (
    "a class with no true sample and no prediction in a subset is left out of UF1 and UAR; one with "
    "no true sample but some predictions counts F1 = 0 in UF1 and is left out of UAR"
)
_LABELS = {"acc": "ACC", "uf1": "UF1", "uar": "UAR", "war": "WAR"}
PROTOCOL_WORDS = {
    "loso": "leave one subject out: one fold per subject",
    "composite": "leave one subject out over several datasets, with per-dataset scores",
    "hde": "holdout database: train on one dataset, test on another",
    "all": "trained on every subject: one model, no test subject, no scores",
}


def load_fold_predictions(run_dir: Path) -> tuple[pd.DataFrame, list[dict[str, Any]], int]:
    """All finished folds' predictions and result records, in (seed, fold index) order.

    Returns ``(predictions, results, expected fold runs)``.
    """
    cfg = rf.read_config(run_dir)
    folds = rf.read_folds(run_dir)
    frames, results = [], []
    for seed in cfg.eval.seeds:
        for fold in folds:
            result = rf.read_result(run_dir, seed, fold)
            if result is None:
                continue
            results.append(result)
            if fold.test_ids:
                frames.append(rf.read_fold_predictions(run_dir, seed, fold))
    preds = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return preds, results, len(folds) * len(cfg.eval.seeds)


def _seed_key(key: Any) -> int:
    """A ``seed`` group key as an int (pandas-stubs types group keys as any hashable; the column holds ints)."""
    return int(key)


def _seed_scores(preds: pd.DataFrame, m: int, column: str = "prediction_index") -> dict[int, dict[str, float]]:
    return {
        _seed_key(s): scores(g["label_index"].to_numpy(), g[column].to_numpy(), m) for s, g in preds.groupby("seed")
    }


def _agg(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {k: mean_std([v[k] for v in per_seed.values()]) for k in METRIC_NAMES}


def compute_metrics(
    preds: pd.DataFrame,
    results: list[dict[str, Any]],
    classes: Sequence[str],
    *,
    protocol: str,
    table_metrics: Sequence[str],
    bootstrap: int,
    confidence: float,
    expected_runs: int,
) -> dict[str, Any]:
    """The content of ``metrics.json`` (see ``docs/training.md``)."""
    m = len(classes)
    out: dict[str, Any] = {
        "protocol": protocol,
        "classes": list(classes),
        "seeds": sorted({int(r["seed"]) for r in results}),
        "fold_runs_finished": len(results),
        "fold_runs_expected": expected_runs,
        "complete": len(results) == expected_runs,
        "absent_class_rule": ABSENT_RULE,
    }
    if preds.empty:
        out["note"] = "no test predictions (protocol 'all' trains on every subject)"
        out["table"] = []
        return out
    y, p = preds["label_index"].to_numpy(), preds["prediction_index"].to_numpy()
    per_seed = _seed_scores(preds, m)
    out["samples_per_seed"] = int(len(preds) // max(1, preds["seed"].nunique()))
    out["pooled"] = {
        **{k: v for k, v in _agg(per_seed).items()},
        "per_seed": {
            str(s): summary(g["label_index"].to_numpy(), g["prediction_index"].to_numpy(), classes)
            for s, g in preds.groupby("seed")
        },
    }
    out["confusion_all_seeds"] = confusion_matrix(y, p, m).tolist()
    out["ci"] = bootstrap_ci(
        y, p, preds["subject"].to_numpy(), m, seeds=preds["seed"].to_numpy(), resamples=bootstrap, confidence=confidence
    )
    out["ci_resamples"] = bootstrap

    group_by = "fold" if protocol == "hde" else "dataset"
    groups: dict[str, Any] = {}
    if protocol == "hde" or preds["dataset"].nunique() > 1:
        for name, g in preds.groupby(group_by, sort=False):
            groups[str(name)] = _agg(_seed_scores(g, m))
    out["groups"] = {"by": group_by, "scores": groups}
    if protocol == "hde" and groups:
        # The paper's "Avg." column (Table 7): the mean over directions of each direction's score.
        per_seed_avg = []
        for _, by_seed in preds.groupby("seed"):
            directions = [_seed_scores(g, m) for _, g in by_seed.groupby("fold")]
            per_seed_avg.append(
                {k: float(np.mean([next(iter(d.values()))[k] for d in directions])) for k in METRIC_NAMES}
            )
        out["hde_average"] = {k: mean_std([a[k] for a in per_seed_avg]) for k in METRIC_NAMES}

    per_fold = []
    for (seed, fold), g in preds.groupby(["seed", "fold"], sort=False):
        s = scores(g["label_index"].to_numpy(), g["prediction_index"].to_numpy(), m)
        rec = next((r for r in results if r["fold"] == fold and int(r["seed"]) == _seed_key(seed)), {})
        row = {
            "fold": str(fold),
            "seed": _seed_key(seed),
            "n_test": int(len(g)),
            "classes_present": int(g["label_index"].nunique()),
            **{k: s[k] for k in ("acc", "uf1", "uar")},
        }
        if "leaky_best" in rec:
            row["leaky_best_acc"] = rec["leaky_best"]["acc"]
            row["leaky_best_step"] = rec["leaky_best"]["step"]
        per_fold.append(row)
    out["per_fold"] = per_fold
    out["fold_averaged_not_the_result"] = {
        str(s): fold_averaged(g["label_index"].to_numpy(), g["prediction_index"].to_numpy(), g["fold"].to_numpy(), m)
        for s, g in preds.groupby("seed")
    }
    if "leaky_prediction_index" in preds.columns and preds["leaky_prediction_index"].notna().all():
        out["leaky_best_epoch_on_test"] = {"note": LEAKY_NOTE, **_agg(_seed_scores(preds, m, "leaky_prediction_index"))}
    out["table"] = paper_table_cells(out, protocol, table_metrics)
    return out


def paper_table_cells(metrics: dict[str, Any], protocol: str, table_metrics: Sequence[str]) -> list[dict[str, Any]]:
    """The cells of the paper-style row: ``[{"group", "metric", "mean", "std"}]``.

    LOSO: the pooled scores. Composite: pooled, then each dataset. HDE: each direction, then "Avg.".
    """
    cells = []

    def add(group: str, source: dict[str, Any]) -> None:
        for k in table_metrics:
            cells.append({"group": group, "metric": k, "mean": source[k]["mean"], "std": source[k]["std"]})

    groups = metrics.get("groups", {}).get("scores", {})
    if protocol == "hde":
        for name, g in groups.items():
            add(name, g)
        if "hde_average" in metrics:
            add("Avg.", metrics["hde_average"])
    else:
        add("composite" if groups else "all", metrics["pooled"])
        for name, g in groups.items():
            add(name, g)
    return cells


def _fmt(mean: float, std: float, n_seeds: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{100 * mean:.2f}"
    return f"{text} ± {100 * std:.2f}" if n_seeds > 1 else text


def _table_markdown(rows: list[tuple[str, list[dict[str, Any]], int]]) -> str:
    """Markdown table: one row per (name, cells, number of seeds); columns by (group, metric)."""
    columns: list[tuple[str, str]] = []
    for _, cells, _ in rows:
        for c in cells:
            if (c["group"], c["metric"]) not in columns:
                columns.append((c["group"], c["metric"]))
    head = "| run | " + " | ".join(f"{g} {_LABELS[mt]}" if g != "all" else _LABELS[mt] for g, mt in columns) + " |"
    sep = "|---|" + "---:|" * len(columns)
    lines = [head, sep]
    for name, cells, n in rows:
        by = {(c["group"], c["metric"]): c for c in cells}
        vals = [_fmt(by[k]["mean"], by[k]["std"], n) if k in by else "–" for k in columns]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _figure_lines(figures: Sequence[FigureRecord], run_dir: Path) -> list[str]:
    from hlora_mer.viz.figures import figures_markdown

    if not figures:
        return []
    return ["## Figures", "", *figures_markdown(figures, run_dir)]


def render_report(
    run_dir: Path,
    metrics: dict[str, Any],
    cfg: Any,
    run_info: dict[str, Any],
    figures: Sequence[FigureRecord] = (),
) -> str:
    """``report.md``; ``figures`` (drawn by ``viz.figures.run_figures``) are linked, or said to be missing."""
    n_seeds = len(metrics["seeds"])
    confusion = next((f for f in figures if f.name == CONFUSION), None)
    others = [f for f in figures if f is not confusion]
    lines = [f"# {cfg.name}", ""]
    protocol = metrics["protocol"]
    if cfg.description:
        lines += [cfg.description, ""]
        if "LOSO" in cfg.description and protocol not in ("loso", "composite"):
            lines += [
                f"(The description names LOSO; this run's protocol is **{protocol}**: eval.protocol was set.)",
                "",
            ]
    lines += [
        f"- protocol: **{protocol}** ({PROTOCOL_WORDS.get(protocol, protocol)}), "
        f"label scheme `{cfg.data.label_scheme}` "
        f"({', '.join(metrics['classes'])}), datasets {', '.join(cfg.data.datasets)}",
        f"- budget: {cfg.train.optimizer}, lr {cfg.train.lr:g}, batch {cfg.train.batch_size}, "
        f"{cfg.train.steps} steps per fold, weights kept: **{cfg.train.select}**"
        + (f" (validation: {cfg.train.val_subjects:g} of the training subjects)" if cfg.train.val_subjects else ""),
        f"- seeds: {', '.join(map(str, metrics['seeds'])) or '–'}; fold runs finished "
        f"{metrics['fold_runs_finished']} of {metrics['fold_runs_expected']}"
        + ("" if metrics["complete"] else " — **INCOMPLETE: scores cover the finished folds only**"),
        *(
            [f"- **SUBSET**: folds {', '.join(metrics['subset']['folds'])} only — {metrics['subset']['note']}"]
            if metrics.get("subset")
            else []
        ),
        f"- hlora-mer {run_info.get('hlora_mer_version')}, commit {run_info.get('commit')}"
        + (" (with local changes)" if run_info.get("dirty") else ""),
        "",
    ]
    if not metrics.get("table"):
        lines += [metrics.get("note", "no scores"), ""]
        return "\n".join(lines + _figure_lines(others, run_dir))
    lines += [
        "## Result (pooled over all folds; mean ± std over seeds, in %)",
        "",
        _table_markdown([(cfg.name, metrics["table"], n_seeds)]),
        "",
    ]
    interval = interval_text(metrics)
    if interval:
        lines += [interval, ""]
    pooled = metrics["pooled"]
    lines += [
        "All pooled scores: "
        + ", ".join(f"{_LABELS[k]} {_fmt(pooled[k]['mean'], pooled[k]['std'], n_seeds)}" for k in METRIC_NAMES),
        "",
        f"Absent classes: {metrics['absent_class_rule']}.",
        "",
    ]
    if "leaky_best_epoch_on_test" in metrics:
        lk = metrics["leaky_best_epoch_on_test"]
        lines += [
            "## Leaky comparison column (NOT the result)",
            "",
            lk["note"],
            "",
            "| | " + " | ".join(_LABELS[k] for k in METRIC_NAMES) + " |",
            "|---|" + "---:|" * 4,
            "| best epoch on test (leaky) | "
            + " | ".join(_fmt(lk[k]["mean"], lk[k]["std"], n_seeds) for k in METRIC_NAMES)
            + " |",
            "",
        ]
    lines += [
        "## Confusion matrix (all seeds, pooled; rows = true class)",
        "",
        *(_confusion_figure(confusion, run_dir)),
        "| true \\ predicted | " + " | ".join(metrics["classes"]) + " |",
        "|---|" + "---:|" * len(metrics["classes"]),
    ]
    for c, row in zip(metrics["classes"], metrics["confusion_all_seeds"], strict=True):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Per fold (for inspection only: many subjects have one sample or one class)", ""]
    has_leaky = any("leaky_best_acc" in r for r in metrics["per_fold"])
    lines += [
        "| fold | seed | n | classes | ACC | UF1 | UAR |" + (" best-on-test ACC (leaky) |" if has_leaky else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_leaky else ""),
    ]
    for r in metrics["per_fold"]:
        cells = [
            r["fold"],
            str(r["seed"]),
            str(r["n_test"]),
            str(r["classes_present"]),
            *(_fmt(r[k], 0.0, 1) for k in ("acc", "uf1", "uar")),
        ]
        if has_leaky:
            cells.append(_fmt(r.get("leaky_best_acc", float("nan")), 0.0, 1))
        lines.append("| " + " | ".join(cells) + " |")
    fa = metrics["fold_averaged_not_the_result"]
    lines += [
        "",
        "Fold-averaged scores, shown only to contrast with the pooled result: "
        + "; ".join(f"seed {s}: UF1 {100 * v['uf1']:.2f}, ACC {100 * v['acc']:.2f}" for s, v in fa.items()),
        "",
    ]
    return "\n".join(lines + _figure_lines(others, run_dir))


def interval_text(metrics: dict[str, Any]) -> str:
    """The bootstrap confidence interval of a run's scores as one line ("" without one); ``report.md`` and the
    console summary of ``hlora-mer train`` both show it."""
    ci = metrics.get("ci")
    if not ci:
        return ""
    conf = next(iter(ci.values()))["confidence"]
    return (
        f"{int(round(conf * 100))}% bootstrap interval over test subjects ({metrics['ci_resamples']} resamples): "
        + ", ".join(f"{_LABELS[k]} [{100 * v['low']:.2f}, {100 * v['high']:.2f}]" for k, v in ci.items())
    )


def _confusion_figure(record: FigureRecord | None, run_dir: Path) -> list[str]:
    if record is None:
        return []
    if not record.paths:
        return [f"*(figure missing: {record.missing})*", ""]
    png = next(p for p in record.paths if p.suffix == ".png")
    pdf = next((p for p in record.paths if p.suffix == ".pdf"), None)
    link = f" ([PDF]({pdf.relative_to(run_dir).as_posix()}))" if pdf else ""
    return [f"![confusion matrices: counts and row-normalised]({png.relative_to(run_dir).as_posix()}){link}", ""]


def finalize_run(run_dir: str | Path) -> dict[str, Any]:
    """Pool the run's fold files into ``predictions.csv``, ``metrics.json``, ``report.md`` and the figures
    (``viz.figures.run_figures``: confusion, per-subject scores, losses, failure cases, Fig. 4 / 5)."""
    run_dir = Path(run_dir)
    preds, results, expected = load_fold_predictions(run_dir)
    cfg = rf.read_config(run_dir)
    run_info = rf.read_run_info(run_dir)
    classes = run_info["classes"]
    if len(results) < expected:
        logger.warning("%s: %d of %d fold runs finished; scores cover those only", run_dir, len(results), expected)
    metrics = compute_metrics(
        preds,
        results,
        classes,
        protocol=cfg.eval.protocol,
        table_metrics=cfg.eval.metrics,
        bootstrap=cfg.eval.bootstrap,
        confidence=cfg.eval.confidence,
        expected_runs=expected,
    )
    metrics["name"] = cfg.name
    if cfg.eval.folds:
        metrics["subset"] = {"folds": list(cfg.eval.folds), "note": SUBSET_NOTE}
    if not preds.empty:
        atomic_write_text(run_dir / PREDICTIONS_FILE, preds.to_csv(index=False))
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=1, allow_nan=True) + "\n")
    figures = run_figures(run_dir, metrics, preds, results, run_info, cfg.name)
    atomic_write_text(run_dir / REPORT_FILE, render_report(run_dir, metrics, cfg, run_info, figures))
    return metrics


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders among ``paths``: a folder with ``metrics.json``, or the sweep variants inside one."""
    runs = []
    for p in map(Path, paths):
        if (p / METRICS_FILE).is_file():
            runs.append(p)
        else:
            inner = sorted(q.parent for q in p.glob(f"*/{METRICS_FILE}"))
            if not inner:
                raise UserError(
                    f"{p} holds no {METRICS_FILE}; pass run folders written by 'hlora-mer train' "
                    "(or run 'hlora-mer evaluate' on an interrupted one)"
                )
            runs.extend(inner)
    return runs


def _run_labels(runs: Sequence[Path], names: Sequence[str]) -> list[str]:
    """Row labels: the config name, or, where several runs share one, the name and the run folder."""
    counts = pd.Series(list(names)).value_counts()
    return [f"{name} ({run})" if counts[name] > 1 else name for run, name in zip(runs, names, strict=True)]


def compare_runs(paths: Sequence[str | Path], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table with one row per run, the paper-style columns of each (``hlora-mer report``)."""
    if metrics:
        bad = [k for k in metrics if k not in METRIC_NAMES]
        if bad:
            raise UserError(f"unknown metric(s) {bad}; choose from {', '.join(METRIC_NAMES)}")
    runs = find_runs(paths)
    data = [rf.read_json(run / METRICS_FILE) for run in runs]
    rows = []
    for label, d in zip(
        _run_labels(runs, [d.get("name", r.name) for r, d in zip(runs, data, strict=True)]), data, strict=True
    ):
        cells = d.get("table", [])
        if metrics:
            cells = paper_table_cells(d, d["protocol"], metrics) if d.get("pooled") else []
        if not d.get("complete", True):
            label += " (incomplete)"
        if d.get("subset"):
            label += " (subset of folds)"
        rows.append((label, cells, len(d.get("seeds", []))))
    note = (
        "Scores in %, pooled over all folds (UF1 and UAR computed once on the concatenated predictions), "
        "mean ± std over seeds where there are several."
    )
    return _table_markdown(rows) + "\n\n" + note + "\n"
