"""Run folders never mix two versions of the data, and what the engine trains on and reports is what it claims.

Each test names the fault it guards against (docs/reliability.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.cli import main
from hlora_mer.config import TrainConfig
from hlora_mer.errors import ConfigError
from hlora_mer.evaluation.report import finalize_run
from hlora_mer.models.checkpoint import load_checkpoint
from hlora_mer.models.mer_model import build_model
from hlora_mer.training.data import TensorSource
from hlora_mer.training.engine import Predictions, seed_everything, train_fixed_budget
from hlora_mer.training.runner import RunCallbacks, run_experiment
from train_fixtures import CLASSES, tiny_experiment, tiny_source


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _with_table(source: TensorSource, table: pd.DataFrame, clips: torch.Tensor | None = None) -> TensorSource:
    return TensorSource(
        table, source.clips if clips is None else clips, source.classes, source.flip_prob, dict(source.info)
    )


# --------------------------------------------------------------------------------------------------
# 1 + 2: a resume after a data change is refused, and the refusal writes nothing


@pytest.mark.parametrize("change", ["label", "onset", "clip"])
def test_resume_after_a_data_change_is_refused_and_leaves_the_run_untouched(tmp_path, change) -> None:
    source = tiny_source(subjects=3)
    table = source.table.assign(onset=10, apex=15, offset=20)
    source = _with_table(source, table)
    cfg = tiny_experiment()
    run = tmp_path / "run"
    run_experiment(cfg, run, source)
    shutil.rmtree(run / "folds" / "seed0" / "toy__03")  # half finished: one fold still to run
    before = _snapshot(run)

    changed = table.copy()
    clips = None
    sid = "toy/02/clip10"
    row = changed.index[changed["sample_id"] == sid][0]
    if change == "label":  # disgust -> happiness, as an edited coding file would give
        changed.loc[row, ["label", "label_index"]] = [CLASSES[2], 2]
    elif change == "onset":
        changed.loc[row, "onset"] = 11
    else:  # the aligned clip was re-made from other pixels
        clips = source.clips.clone()
        clips[row] += 0.25
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, run, _with_table(source, changed, clips))
    message = str(err.value)
    assert sid in message and "1 sample(s) changed" in message and "start afresh" in message
    assert {"label": f"label {CLASSES[1]} -> {CLASSES[2]}", "onset": "onset 10 -> 11", "clip": "clip "}[
        change
    ] in message
    assert _snapshot(run) == before  # config, run.json, folds.json, samples.csv, excluded.csv: byte-identical


def test_resume_with_a_removed_sample_is_refused_before_writing(tmp_path) -> None:
    source = tiny_source(subjects=3)
    run_experiment(
        tiny_experiment(), tmp_path / "run", source, excluded=pd.DataFrame({"sample_id": ["x"], "reason": ["why"]})
    )
    before = _snapshot(tmp_path / "run")
    keep = (source.table["sample_id"] != "toy/01/clip00").to_numpy()
    smaller = TensorSource(source.table[keep], source.clips[torch.from_numpy(keep.copy())], source.classes)
    with pytest.raises(ConfigError, match=r"1 sample\(s\) removed: toy/01/clip00"):
        run_experiment(tiny_experiment(), tmp_path / "run", smaller)
    assert _snapshot(tmp_path / "run") == before


def test_a_fold_whose_samples_changed_is_never_reused(tmp_path) -> None:
    """Even where samples.csv was edited along with the data, a finished fold's own data hash must match."""
    from hlora_mer.run_folder import samples_text
    from hlora_mer.training.data import sample_records

    source = tiny_source(subjects=2)
    run = tmp_path / "run"
    run_experiment(tiny_experiment(), run, source)
    table = source.table.copy()
    table.loc[0, ["label", "label_index"]] = ["surprise", 2]
    changed = _with_table(source, table)
    (run / "samples.csv").write_text(samples_text(sample_records(changed)))
    with pytest.raises(ConfigError, match="trained on other samples"):
        run_experiment(tiny_experiment(), run, changed)


def test_unchanged_data_resumes_and_a_run_without_finished_folds_restarts(tmp_path) -> None:
    source = tiny_source(subjects=2)
    run = tmp_path / "run"
    run_experiment(tiny_experiment(), run, source)
    first = (run / "metrics.json").read_bytes()
    run_experiment(tiny_experiment(), run, source)  # same data: resumes, nothing retrained
    assert (run / "metrics.json").read_bytes() == first
    shutil.rmtree(run / "folds")
    table = source.table.copy()
    table.loc[0, ["label", "label_index"]] = ["surprise", 2]
    run_experiment(tiny_experiment(), run, _with_table(source, table))  # nothing finished: nothing to mix
    assert pd.read_csv(run / "samples.csv").loc[0, "label"] == "surprise"


def test_cli_resume_after_editing_the_coding_file_is_refused(tmp_path, capsys) -> None:
    pytest.importorskip("skimage")
    import openpyxl

    from hlora_mer.synthme.generate import ANNOTATION_FILE, SynthConfig, generate

    root = tmp_path / "synth"
    generate(root, SynthConfig(subjects=2, clips_per_class=1, frame_size=32, min_frames=8, max_frames=10))
    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "-c",
        str(Path(__file__).resolve().parents[1] / "configs" / "table3_casme2_5cls.yaml"),
        f"data.roots.casme2={root}",
        "model.backbone.name=test_vit_reg",
        "model.backbone.pretrained=false",
        "model.image_size=28",
        "train.steps=1",
        "train.batch_size=4",
        "train.device=cpu",
        "data.detector=none",
        "eval.bootstrap=0",
        "-o",
        str(run),
    ]
    assert main(argv) == 0
    before = _snapshot(run)
    book = openpyxl.load_workbook(root / ANNOTATION_FILE)
    sheet = book.active
    header = [c.value for c in sheet[1]]
    col = header.index("Estimated Emotion") + 1
    for r in range(2, sheet.max_row + 1):
        if sheet.cell(r, col).value == "disgust":
            sheet.cell(r, col).value = "happiness"
            edited = f"{sheet.cell(r, 1).value}/{sheet.cell(r, 2).value}"
            break
    book.save(root / ANNOTATION_FILE)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "label disgust -> happiness" in err and "start afresh" in err and "Traceback" not in err
    assert edited.split("/")[-1] in err
    assert _snapshot(run) == before


# --------------------------------------------------------------------------------------------------
# 3: comparison-only options leave the result byte-identical


def _main_columns(run: Path) -> bytes:
    preds = pd.read_csv(run / "predictions.csv")
    return preds.drop(columns=[c for c in preds.columns if c.startswith("leaky")]).to_csv(index=False).encode()


@pytest.mark.parametrize(
    "option",
    [
        {"eval": {"leaky_best_epoch": True}, "train": {"eval_every": 1}},
        {"train": {"eval_every": 1, "val_subjects": 1}},
    ],
)
def test_comparison_only_options_leave_the_predictions_byte_identical(tmp_path, option) -> None:
    base = {
        "train": {"steps": 4, "eval_every": 2, "val_subjects": option.get("train", {}).get("val_subjects", 0)},
        "model": {"fusion": {"head_dropout": 0.3}, "lora": {"dropout": 0.2}},
    }
    source = tiny_source(subjects=4)
    plain = tiny_experiment(**base)
    other = tiny_experiment(**{**base, "eval": option.get("eval", {}), "train": {**base["train"], **option["train"]}})
    run_experiment(plain, tmp_path / "a", source)
    run_experiment(other, tmp_path / "b", source)
    assert _main_columns(tmp_path / "a") == _main_columns(tmp_path / "b")


# --------------------------------------------------------------------------------------------------
# what the engine trains on, what it evaluates, what it keeps, what it reports


class _RecordingSource:
    """A TensorSource that records which samples each training dataset hands out, per fold."""

    def __init__(self, source: TensorSource) -> None:
        self.inner = source
        self.table, self.classes, self.info = source.table, source.classes, source.info
        self.fold: str | None = None
        self.trained_on: dict[str, set[str]] = {}

    def clip_fingerprints(self) -> dict[str, str]:
        return self.inner.clip_fingerprints()

    def dataset(self, sample_ids, *, train: bool):
        inner = self.inner.dataset(sample_ids, train=train)
        if not train:
            return inner
        seen = self.trained_on.setdefault(self.fold, set())

        class Recording(torch.utils.data.Dataset):
            flip_prob, train = inner.flip_prob, inner.train

            def __len__(self) -> int:
                return len(inner)

            def __getitem__(self, key):  # noqa: ANN204
                sample = inner[key]
                seen.add(sample["sample_id"])
                return sample

        return Recording()


def test_the_engine_never_trains_on_the_test_or_validation_subjects(tmp_path) -> None:
    source = _RecordingSource(tiny_source(subjects=4, per_class=2))
    cfg = tiny_experiment(train={"steps": 6, "val_subjects": 1, "feature_cache": False})

    def start(fold: str, seed: int, steps: int) -> None:
        source.fold = fold

    run_experiment(cfg, tmp_path / "run", source, callbacks=RunCallbacks(on_fold_start=start))
    subject = source.table.set_index("sample_id")["subject"]
    assert set(source.trained_on) == {"toy/01", "toy/02", "toy/03", "toy/04"}
    for fold, seen in source.trained_on.items():
        result = json.loads(
            (tmp_path / "run" / "folds" / "seed0" / fold.replace("/", "__") / "result.json").read_text()
        )
        held_out = {fold, *result["val_subjects"]}
        assert len(held_out) == 2
        assert seen and not {subject[s] for s in seen} & held_out
        assert len(seen) == result["n_train"]  # every training sample is used, and only those


def test_predictions_are_the_kept_model_on_unflipped_test_clips(tmp_path) -> None:
    """The reported predictions are those of the fold's saved (last) model on the plain test clips: not a
    re-pooling of the same files, not a flipped clip, not another step's weights."""
    source = tiny_source(subjects=3)
    cfg = tiny_experiment(
        eval={"leaky_best_epoch": True},
        data={"flip_prob": 1.0},
        train={"eval_every": 1, "steps": 3, "feature_cache_dtype": "fp32"},
    )
    run_experiment(cfg, tmp_path / "run", source)
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    positions = {sid: i for i, sid in enumerate(source.table["sample_id"])}
    for fold, rows in preds.groupby("fold"):
        model, _ = load_checkpoint(tmp_path / "run" / "folds" / "seed0" / fold.replace("/", "__") / "checkpoint")
        clips = source.clips[[positions[s] for s in rows["sample_id"]]]
        with torch.no_grad():
            expected = torch.softmax(model(clips), dim=-1).numpy()
        got = rows[[f"prob_{c}" for c in CLASSES]].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        # a model this small tells a clip from its mirror image: the check would see a flip
        with torch.no_grad():
            mirrored = torch.softmax(model(clips.flip(-1)), dim=-1).numpy()
        assert not np.allclose(got, mirrored, rtol=1e-5, atol=1e-6)


def test_validation_selection_restores_the_weights_of_the_selected_step() -> None:
    source = tiny_source(subjects=3)
    table = source.table
    train_ids = list(table.loc[table.subject != "toy/03", "sample_id"])
    val_ids = list(table.loc[table.subject == "toy/03", "sample_id"])

    def trained(steps: int, val_uf1: list[float] | None = None) -> tuple[int, dict[str, torch.Tensor]]:
        seed_everything(0)
        model = build_model(tiny_model_config())
        if val_uf1 is None:
            cfg, val_set, score = TrainConfig(steps=steps, batch_size=4, device="cpu"), None, None
        else:
            script = iter(val_uf1)
            cfg = TrainConfig(steps=steps, batch_size=4, device="cpu", val_subjects=1, select="val", eval_every=1)
            val_set = source.dataset(val_ids, train=False)

            def score(_p: Predictions) -> dict[str, float]:
                return {"acc": 0.0, "uf1": next(script)}

        result = train_fixed_budget(
            model, source.dataset(train_ids, train=True), cfg, seed=5, val_set=val_set, score_fn=score
        )
        return result.selected_step, {k: v.clone() for k, v in model.trainable_state_dict().items()}

    step, selected = trained(4, [0.2, 0.9, 0.1, 0.3])  # step 2 is the best on validation
    assert step == 2
    _, two_steps = trained(2)
    _, last = trained(4)
    for name in selected:  # the kept weights are exactly those after step 2 ...
        torch.testing.assert_close(selected[name], two_steps[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(selected[n], last[n]) for n in selected)  # ... not the last ones


def test_reported_scores_are_pooled_not_fold_averaged(tmp_path) -> None:
    """metrics.json's UF1/UAR are computed once on the concatenated predictions of all folds."""
    from sklearn.metrics import f1_score, recall_score

    run = tmp_path / "run"
    run_experiment(tiny_experiment(eval={"bootstrap": 0}), run, tiny_source(subjects=3, per_class=2))
    # Rewrite the fold files with predictions whose pooled and fold-averaged scores differ.
    rng = np.random.default_rng(0)
    for path in sorted((run / "folds" / "seed0").glob("*/predictions.csv")):
        frame = pd.read_csv(path)
        frame["prediction_index"] = rng.integers(0, 3, len(frame))
        frame["prediction"] = [CLASSES[i] for i in frame["prediction_index"]]
        path.write_text(frame.to_csv(index=False))
    metrics = finalize_run(run)
    pooled = pd.read_csv(run / "predictions.csv")
    y, p = pooled["label_index"], pooled["prediction_index"]
    uf1, uar = f1_score(y, p, average="macro"), recall_score(y, p, average="macro")
    by_fold = np.mean(
        [f1_score(g["label_index"], g["prediction_index"], average="macro") for _, g in pooled.groupby("fold")]
    )
    assert abs(uf1 - by_fold) > 0.01  # the example tells the two apart
    assert metrics["pooled"]["uf1"]["mean"] == pytest.approx(uf1)
    assert metrics["pooled"]["uar"]["mean"] == pytest.approx(uar)
    assert json.loads((run / "metrics.json").read_text())["table"][1]["mean"] == pytest.approx(uf1)


def test_a_subset_of_folds_is_marked_in_metrics_and_report(tmp_path) -> None:
    from hlora_mer.evaluation.report import compare_runs

    run = tmp_path / "run"
    metrics = run_experiment(tiny_experiment(eval={"folds": ["toy/01"]}), run, tiny_source(subjects=3))
    assert metrics["subset"]["folds"] == ["toy/01"] and "SUBSET" in (run / "report.md").read_text()
    assert "(subset of folds)" in compare_runs([run])
    full = run_experiment(tiny_experiment(), tmp_path / "full", tiny_source(subjects=3))
    assert "subset" not in full


def test_files_follow_the_umask(tmp_path) -> None:
    import os

    old = os.umask(0o022)
    try:
        run_experiment(tiny_experiment(), tmp_path / "run", tiny_source(subjects=2))
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_a_moved_dataset_resumes_but_other_data_there_does_not(tmp_path) -> None:
    source = tiny_source(subjects=2)
    cfg = tiny_experiment(data={"roots": {"toy": str(tmp_path / "here")}})
    run_experiment(cfg, tmp_path / "run", source)
    moved = tiny_experiment(data={"roots": {"toy": str(tmp_path / "there")}})
    run_experiment(moved, tmp_path / "run", source)  # the same samples under another path: resumes
    table = source.table.copy()
    table.loc[0, ["label", "label_index"]] = ["surprise", 2]
    with pytest.raises(ConfigError, match="1 sample"):
        run_experiment(moved, tmp_path / "run", _with_table(source, table))
