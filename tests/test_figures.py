"""The figures of a run folder: each written, non-empty and not a constant image, linked from report.md, the
same bytes when drawn again; a missing clip cache or a failing figure never fails the run (Fig. 3, 6 and the rest).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hlora_mer.cli import main
from hlora_mer.evaluation.report import finalize_run
from hlora_mer.training.runner import run_experiment
from hlora_mer.viz import figures
from train_fixtures import tiny_experiment, tiny_source
from viz_fixtures import build_cache_run

pytest.importorskip("matplotlib")

RUN_FIGURES = ("confusion", "per_subject", "loss", "failures")


def assert_picture(path: Path) -> None:
    """A PNG that is a real picture: loads, varies, and has more than a handful of colours."""
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 0, path
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.var() > 0, f"{path} is a constant image"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 16, f"{path} has only {len(colours)} colours"


def report_links(run: Path) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", (run / "report.md").read_text())


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory) -> Path:
    return build_cache_run(tmp_path_factory.mktemp("viz"))


def test_a_run_folder_gets_every_figure_linked_from_its_report(cache_run) -> None:
    for stem in RUN_FIGURES:
        assert_picture(cache_run / f"{stem}.png")
        assert (cache_run / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    explained = sorted(p.name for p in (cache_run / "explain").glob("*.png"))
    assert explained == ["toy_01_c0_iffa.png", "toy_01_c0_pca.png"]
    for name in explained:
        assert_picture(cache_run / "explain" / name)
    links = report_links(cache_run)
    for link in links:
        assert (cache_run / link).is_file(), link
    linked = {Path(link).as_posix() for link in links}
    for stem in RUN_FIGURES:
        assert {f"{stem}.png", f"{stem}.pdf"} <= linked
    assert {"explain/toy_01_c0_pca.png", "explain/toy_01_c0_iffa.png"} <= linked
    assert "figure missing" not in (cache_run / "report.md").read_text()


def test_figures_drawn_again_are_the_same_bytes(cache_run, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(cache_run, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.suffix in (".png", ".pdf")}
    finalize_run(run)
    after = {p: p.read_bytes() for p in run.rglob("*") if p.suffix in (".png", ".pdf")}
    assert after.keys() == before.keys()
    changed = [p.name for p in before if before[p] != after[p]]
    assert not changed


def test_failure_cases_show_the_misclassified_clips_with_their_apex(cache_run) -> None:
    preds = pd.read_csv(cache_run / "predictions.csv", dtype={"sample_id": str, "subject": str})
    wrong = preds[preds["label_index"] != preds["prediction_index"]]
    assert len(wrong) > 0  # the tiny model after two steps gets some wrong
    run_info = json.loads((cache_run / "run.json").read_text())
    cases = figures.failure_cases(preds, None, run_info, limit=2)
    assert 1 <= len(cases) <= 2 and {c.sample_id for c in cases} <= set(wrong["sample_id"])
    assert all(c.label != c.prediction for c in cases)
    p = [c.probability for c in cases]
    assert p == sorted(p, reverse=True)  # the most confident mistakes first
    assert not any(c.apex_known for c in cases)  # no samples.csv given: the middle frame stands in
    from hlora_mer.run_folder import parse_samples

    samples = parse_samples((cache_run / "samples.csv").read_text())
    case = figures.failure_cases(preds, samples, run_info, limit=1)[0]
    assert case.apex_known and case.apex_frame == int(samples.loc[case.sample_id, "apex"])


def test_a_gone_cache_leaves_out_the_clip_figures_and_says_so(cache_run, tmp_path, caplog) -> None:
    run = tmp_path / "run"
    shutil.copytree(cache_run, run)
    for p in [*run.glob("failures.*"), *(run / "explain").glob("*")]:
        p.unlink()
    info = json.loads((run / "run.json").read_text())
    info["data"]["cache_dir"] = str(tmp_path / "deleted")
    (run / "run.json").write_text(json.dumps(info))
    with caplog.at_level(logging.INFO, logger="hlora_mer.viz"):
        finalize_run(run)
    assert not (run / "failures.png").exists() and not list((run / "explain").glob("*"))
    report = (run / "report.md").read_text()
    assert f"figure missing — the clip cache {tmp_path / 'deleted'} is gone" in report
    assert "is gone" in caplog.text
    for stem in ("confusion", "per_subject", "loss"):
        assert_picture(run / f"{stem}.png")


def test_a_failing_figure_is_a_warning_and_a_note_never_a_failed_run(cache_run, tmp_path, monkeypatch, caplog) -> None:
    run = tmp_path / "run"
    shutil.copytree(cache_run, run)
    (run / "loss.png").unlink()

    def broken(*args, **kwargs):
        raise RuntimeError("no room on the canvas")

    monkeypatch.setattr(figures, "plot_losses", broken)
    with caplog.at_level(logging.WARNING):
        metrics = finalize_run(run)
    assert metrics["complete"]
    assert "figure loss failed (RuntimeError: no room on the canvas)" in caplog.text
    report = (run / "report.md").read_text()
    assert "training loss per fold**: figure missing — drawing it failed (RuntimeError" in report
    assert not (run / "loss.png").exists()
    assert_picture(run / "per_subject.png")


def test_per_subject_scores_count_samples_per_seed_and_average_seeds() -> None:
    rows = []
    # subject a: 2 samples, seed 0 gets both right, seed 1 one of two; subject b: one sample, always wrong
    for seed, preds_a in ((0, (0, 1)), (1, (0, 0))):
        for true, pred in zip((0, 1), preds_a, strict=True):
            rows.append({"subject": "a", "seed": seed, "label_index": true, "prediction_index": pred})
        rows.append({"subject": "b", "seed": seed, "label_index": 1, "prediction_index": 0})
    table = figures.subject_scores(pd.DataFrame(rows), 2).set_index("subject")
    assert table.loc["a", "n"] == 2 and table.loc["b", "n"] == 1
    assert table.loc["a", "acc"] == pytest.approx((1.0 + 0.5) / 2)
    assert table.loc["b", "acc"] == 0.0


def test_a_run_without_losses_or_predictions_says_why(tmp_path) -> None:
    with pytest.raises(figures.FigureUnavailable, match="no per-step losses"):
        figures.plot_losses([{"fold": "x", "seed": 0}], tmp_path / "loss")
    with pytest.raises(figures.FigureUnavailable, match="no test predictions"):
        figures.plot_per_subject(pd.DataFrame(), ["a"], tmp_path / "s")
    assert not list(tmp_path.iterdir())


def test_a_run_from_memory_has_no_clip_figures_but_the_rest(tmp_path) -> None:
    run = tmp_path / "run"
    run_experiment(tiny_experiment(), run, tiny_source(subjects=2))
    for stem in ("confusion", "per_subject", "loss"):
        assert_picture(run / f"{stem}.png")
    report = (run / "report.md").read_text()
    assert "misclassified clips, onset and apex frames and their difference**: figure missing" in report
    assert "no data.cache_dir" in report


# --------------------------------------------------------------------------------------------------
# Fig. 3


@pytest.fixture(scope="module")
def nl_sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("sweep")
    for name, n_l in (("nl1", 1), ("nl3", 3)):
        cfg = tiny_experiment(name=f"tiny_{name}", model={"lora": {"last_n_blocks": n_l}})
        run_experiment(cfg, sweep / name, tiny_source(subjects=2))
    return sweep


def test_report_on_an_nl_sweep_draws_acc_and_uf1_against_nl(nl_sweep, tmp_path, capsys) -> None:
    assert main(["report", str(nl_sweep)]) == 0
    out = capsys.readouterr().out
    assert_picture(nl_sweep / "nl_sweep.png")
    assert (nl_sweep / "nl_sweep.pdf").is_file()
    assert f"ACC and UF1 against N_l: {nl_sweep / 'nl_sweep.png'}" in out
    points = figures.sweep_points(sorted(p.parent for p in nl_sweep.glob("*/metrics.json")))
    assert [p.last_n_blocks for p in points] == [1, 3] and all(p.series == "" for p in points)

    table = tmp_path / "tables" / "nl.md"
    table.parent.mkdir()
    assert main(["report", str(nl_sweep), "-o", str(table)]) == 0
    assert_picture(tmp_path / "tables" / "nl_nl_sweep.png")
    assert "![ACC and UF1 against N_l](nl_nl_sweep.png)" in table.read_text()


def test_runs_with_one_nl_get_no_sweep_figure(nl_sweep, tmp_path, capsys) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    shutil.copytree(nl_sweep / "nl1", sweep / "nl1")
    shutil.copytree(nl_sweep / "nl1", sweep / "again")
    assert main(["report", str(sweep)]) == 0
    assert "N_l" not in capsys.readouterr().out
    assert not (sweep / "nl_sweep.png").exists()


# --------------------------------------------------------------------------------------------------
# Fig. 6: the difference image and the apex label


def failure_case(apex_frame: int, annotated_apex: int | None, apex_known: bool = True) -> figures.FailureCase:
    """Onset and apex alike but for a 4 x 4 square 6 grey levels brighter at the apex (a small motion)."""
    rng = np.random.default_rng(3)
    onset = rng.integers(60, 190, (28, 28, 3), dtype=np.uint8)
    apex = onset.copy()
    apex[5:9, 11:15] += 6
    return figures.FailureCase(
        "toy/01/c2", "surprise", "negative", 0.7, onset, apex, 4, apex_frame, apex_known, annotated_apex
    )


def labelled_axes(fig, label: str) -> list:
    return [ax for ax in fig.axes if ax.get_label() == label]


def test_fig6_shows_apex_minus_onset_amplified_with_its_scale() -> None:
    cases = [failure_case(10, 10), failure_case(12, 9)]
    fig = figures.failures_figure(cases, "misclassified")
    panels = labelled_axes(fig, "difference")
    assert len(panels) == len(cases)
    for ax, case in zip(panels, cases, strict=True):
        (image,) = ax.get_images()
        diff = np.asarray(image.get_array())
        expected = case.apex.astype(float).mean(axis=-1) - case.onset.astype(float).mean(axis=-1)
        np.testing.assert_allclose(diff, expected)
        assert diff[5:9, 11:15].min() == 6.0 and not diff[:5].any()
        low, high = image.get_clim()
        assert low == -high and 1.0 <= high <= 6.0  # amplified: 6 grey levels reach (or pass) full colour
        assert image.colorbar is not None and "grey levels" in image.colorbar.ax.get_ylabel()
        assert f"amplified x{255 / high:.0f}" in ax.get_title()


def test_the_apex_label_says_when_only_the_nearest_frame_was_sampled() -> None:
    assert figures.apex_label(10, 10) == "apex (frame 10)"
    assert figures.apex_label(10, 9) == "nearest sampled frame to the apex (frame 10; apex: frame 9)"
    assert figures.apex_label(10, None) == "nearest sampled frame to the apex (frame 10)"
    fig = figures.failures_figure([failure_case(10, 10), failure_case(12, 9), failure_case(7, None, False)])
    titles = [" ".join(ax.get_title().split()) for ax in fig.axes]
    assert "apex (frame 10)" in titles
    assert "nearest sampled frame to the apex (frame 12; apex: frame 9)" in titles
    assert "middle (frame 7, no apex)" in titles
    assert not any(t.startswith("apex (frame 12") for t in titles)


def test_failure_cases_carry_the_annotated_apex_when_it_was_not_sampled(cache_run) -> None:
    from hlora_mer.run_folder import parse_samples

    preds = pd.read_csv(cache_run / "predictions.csv", dtype={"sample_id": str, "subject": str})
    run_info = json.loads((cache_run / "run.json").read_text())
    samples = parse_samples((cache_run / "samples.csv").read_text())
    case = figures.failure_cases(preds, samples, run_info, limit=1)[0]
    cache = figures.run_cache(run_info)
    numbers = list(cache.clips[case.sample_id]["frame_numbers"])
    missing = next(n for n in range(1, 11) if n not in numbers)  # 8 of 10 frames are sampled
    samples.loc[case.sample_id, "apex"] = str(missing)
    case = figures.failure_cases(preds, samples, run_info, limit=1)[0]
    assert case.annotated_apex == missing and case.apex_frame != missing
    assert case.apex_frame == numbers[figures.nearest_index(numbers, missing)]


def test_the_loss_figure_of_a_single_fold_run_speaks_of_no_mean() -> None:
    one = [{"fold": "all", "seed": 0, "losses": [1.6, 1.2, 0.9]}]
    three = one + [{"fold": f, "seed": 0, "losses": [1.5, 1.1]} for f in ("b", "c")]
    legends = {
        len(results): [t.get_text() for t in figures.losses_figure(results).axes[0].get_legend().get_texts()]
        for results in (one, three)
    }
    assert legends[1] == ["the run's one fold run"]
    assert legends[3] == ["mean over 3 fold runs", "one fold run"]


# --------------------------------------------------------------------------------------------------
# the copies in docs/figures


def test_the_figures_in_docs_are_full_colour_pngs_the_readme_shows_whole() -> None:
    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    pngs = sorted((root / "docs" / "figures").glob("*.png"))
    assert pngs
    for png in pngs:
        with Image.open(png) as image:
            assert image.mode in ("RGB", "RGBA"), f"{png.name} is {image.mode} (palette-reduced?)"
        assert png.stat().st_size < 700_000, png.name
    shown = re.findall(r"\]\((docs/figures/[^)]+\.png)\)", (root / "README.md").read_text(encoding="utf-8"))
    assert {"docs/figures/demo_failures.png", "docs/figures/demo_fig4_pca.png"} <= set(shown)
    for path in shown:
        assert (root / path).is_file(), path
