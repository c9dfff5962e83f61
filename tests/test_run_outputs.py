"""What a run writes follows the model's label order, and its result comes from the final predictions.

The fixture's classes are out of alphabetical order (``train_fixtures.CLASSES``), so a column or a matrix
row built from ``sorted(labels)`` is caught; and its model changes its predictions during training
(``train_fixtures.LEAKY_TRAIN``), so a result read from the leaky best-epoch-on-test column is caught.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hlora_mer.evaluation.metrics import confusion_matrix, scores
from hlora_mer.models.checkpoint import load_checkpoint
from hlora_mer.training.runner import run_experiment
from train_fixtures import CLASSES, LEAKY_TRAIN, tiny_experiment, tiny_source


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory):
    """A LOSO run with the leaky comparison column, whose final and best-on-test predictions differ."""
    run = tmp_path_factory.mktemp("leaky") / "run"
    metrics = run_experiment(tiny_experiment(eval={"leaky_best_epoch": True}, train=LEAKY_TRAIN), run, tiny_source(3))
    return run, metrics, pd.read_csv(run / "predictions.csv")


def test_the_fixture_tells_the_orders_and_the_columns_apart(leaky_run) -> None:
    _, _, preds = leaky_run
    assert list(CLASSES) != sorted(CLASSES)
    y = preds["label_index"].to_numpy()
    final = scores(y, preds["prediction_index"].to_numpy(), len(CLASSES))
    leaky = scores(y, preds["leaky_prediction_index"].to_numpy(), len(CLASSES))
    assert all(final[k] != leaky[k] for k in ("acc", "uf1", "uar"))


def test_per_class_outputs_follow_the_models_label_order(leaky_run) -> None:
    run, metrics, preds = leaky_run
    probs = [c for c in preds.columns if c.startswith("prob_")]
    assert probs == [f"prob_{c}" for c in CLASSES]
    # each row's names and indices agree with the model's order, and the predicted class has the top probability
    assert (preds["label"] == [CLASSES[i] for i in preds["label_index"]]).all()
    assert (preds["prediction"] == [CLASSES[i] for i in preds["prediction_index"]]).all()
    assert (preds[probs].to_numpy().argmax(axis=1) == preds["prediction_index"].to_numpy()).all()
    expected_cm = [[int(((preds["label"] == t) & (preds["prediction"] == p)).sum()) for p in CLASSES] for t in CLASSES]
    assert metrics["classes"] == list(CLASSES)
    assert metrics["confusion_all_seeds"] == expected_cm
    per_seed = metrics["pooled"]["per_seed"]["0"]
    assert per_seed["confusion"] == expected_cm and list(per_seed["per_class"]) == list(CLASSES)
    for c in CLASSES:
        mine = preds[preds["label"] == c]
        recall = float((mine["prediction"] == c).mean())
        assert per_seed["per_class"][c]["recall"] == pytest.approx(recall)
        assert per_seed["per_class"][c]["support"] == len(mine)
    report = (run / "report.md").read_text()
    assert "| true \\ predicted | " + " | ".join(CLASSES) + " |" in report
    for c, row in zip(CLASSES, expected_cm, strict=True):
        assert f"| {c} | " + " | ".join(map(str, row)) + " |" in report
    assert json.loads((run / "run.json").read_text())["classes"] == list(CLASSES)
    _, meta = load_checkpoint(run / "folds" / "seed0" / "toy__01" / "checkpoint")
    assert meta["labels"] == list(CLASSES)


def test_the_pooled_result_is_the_final_models_never_the_leaky_column(leaky_run) -> None:
    run, metrics, preds = leaky_run
    y, final = preds["label_index"].to_numpy(), preds["prediction_index"].to_numpy()
    expected = scores(y, final, len(CLASSES))
    for k, v in expected.items():
        assert metrics["pooled"][k]["mean"] == pytest.approx(v)
    assert metrics["confusion_all_seeds"] == confusion_matrix(y, final, len(CLASSES)).tolist()
    for row in metrics["per_fold"]:
        g = preds[preds["fold"] == row["fold"]]
        assert row["acc"] == pytest.approx(scores(g["label_index"], g["prediction_index"], len(CLASSES))["acc"])
    assert [c["mean"] for c in metrics["table"]] == pytest.approx([expected[c["metric"]] for c in metrics["table"]])
    # the bootstrap interval is around the final result: its resamples are drawn from the final predictions
    leaky = scores(y, preds["leaky_prediction_index"].to_numpy(), len(CLASSES))
    assert metrics["leaky_best_epoch_on_test"]["acc"]["mean"] == pytest.approx(leaky["acc"])
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["pooled"]["uf1"]["mean"] == pytest.approx(expected["uf1"])
    report = (run / "report.md").read_text()
    pooled_line = next(line for line in report.splitlines() if line.startswith("All pooled scores"))
    assert f"UF1 {100 * expected['uf1']:.2f}" in pooled_line and f"ACC {100 * expected['acc']:.2f}" in pooled_line
    table_row = next(line for line in report.splitlines() if line.startswith("| tiny |"))
    assert f"{100 * expected['uf1']:.2f}" in table_row


def test_the_interval_is_drawn_from_the_final_predictions(leaky_run) -> None:
    from hlora_mer.evaluation.metrics import bootstrap_ci

    _, metrics, preds = leaky_run
    args = dict(seeds=preds["seed"].to_numpy(), resamples=50, confidence=0.95)
    y, subjects = preds["label_index"].to_numpy(), preds["subject"].to_numpy()
    final = bootstrap_ci(y, preds["prediction_index"].to_numpy(), subjects, len(CLASSES), **args)
    leaky = bootstrap_ci(y, preds["leaky_prediction_index"].to_numpy(), subjects, len(CLASSES), **args)
    assert final != leaky
    assert metrics["ci"] == final
    assert np.isfinite(metrics["ci"]["uf1"]["low"])
