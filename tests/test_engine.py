"""The fixed-budget engine: exact step count, determinism, learning, validation selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.config import TrainConfig
from hlora_mer.models.mer_model import build_model
from hlora_mer.training.engine import FixedStepBatchSampler, derive_seed, predict, seed_everything, train_fixed_budget
from train_fixtures import tiny_source


def _indices(sampler: FixedStepBatchSampler) -> list[list[int]]:
    return [[i for i, _ in batch] for batch in sampler]


def test_sampler_yields_exactly_the_budget() -> None:
    batches = _indices(FixedStepBatchSampler(n=10, batch_size=4, steps=7, seed=0))
    assert len(batches) == 7
    assert all(len(b) == 4 for b in batches)
    # each epoch is a permutation: its two batches share no index
    assert not set(batches[0]) & set(batches[1])
    assert batches == _indices(FixedStepBatchSampler(10, 4, 7, 0))
    assert batches != _indices(FixedStepBatchSampler(10, 4, 7, 1))
    small = _indices(FixedStepBatchSampler(n=3, batch_size=36, steps=2, seed=0))
    assert [sorted(b) for b in small] == [[0, 1, 2], [0, 1, 2]]


def test_derive_seed_is_stable_and_distinct() -> None:
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(50)}) == 50


def _train(seed: int, steps: int = 3):
    source = tiny_source(subjects=2)
    ids = list(source.table["sample_id"])
    seed_everything(seed)
    model = build_model(tiny_model_config())
    cfg = TrainConfig(steps=steps, batch_size=4, device="cpu")
    losses = []
    train_fixed_budget(
        model, source.dataset(ids, train=True), cfg, seed=seed, on_step=lambda s, t, loss: losses.append(loss)
    )
    return predict(model, source.dataset(ids, train=False), batch_size=4), losses


def test_same_seed_same_predictions_on_cpu() -> None:
    a, la = _train(0)
    b, lb = _train(0)
    assert la == lb and len(la) == 3
    np.testing.assert_array_equal(a.probs, b.probs)
    c, _ = _train(1)
    assert not np.array_equal(a.probs, c.probs)


def test_training_lowers_the_loss_on_learnable_data() -> None:
    source = tiny_source(subjects=2, per_class=2)
    ids = list(source.table["sample_id"])
    seed_everything(0)
    model = build_model(tiny_model_config())
    losses = []
    train_fixed_budget(
        model,
        source.dataset(ids, train=False),
        TrainConfig(steps=30, batch_size=12, lr=3e-3),
        seed=0,
        on_step=lambda s, t, loss: losses.append(loss),
    )
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_validation_selection_restores_the_best_step_and_never_reads_test() -> None:
    from hlora_mer.evaluation.metrics import scores

    source = tiny_source(subjects=3)
    table = source.table
    train_ids = list(table.loc[table.subject != "toy/03", "sample_id"])
    val_ids = list(table.loc[table.subject == "toy/03", "sample_id"])

    class Exploding(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i):  # noqa: ANN204
            raise AssertionError("the test set was read without leaky=True")

    seen = []  # the validation probabilities at each evaluation point

    def score(p):  # noqa: ANN001, ANN202
        seen.append(p.probs.copy())
        return scores(p.labels, p.preds, 3)

    seed_everything(0)
    model = build_model(tiny_model_config())
    cfg = TrainConfig(steps=4, batch_size=4, val_subjects=1, select="val", eval_every=1)
    val_set = source.dataset(val_ids, train=False)
    result = train_fixed_budget(
        model, source.dataset(train_ids, train=True), cfg, seed=0, val_set=val_set, test_set=Exploding(), score_fn=score
    )
    assert [p.step for p in result.curve] == [1, 2, 3, 4]
    best = max(result.curve, key=lambda p: p.val["uf1"])  # first maximum
    assert result.selected_step == best.step
    # the model left behind is the one of the selected step: it predicts what that step predicted
    np.testing.assert_array_equal(predict(model, val_set, batch_size=4).probs, seen[best.step - 1])
    assert all(p.test is None for p in result.curve)
    assert result.leaky_best is None


def test_leaky_curve_is_recorded_separately() -> None:
    source = tiny_source(subjects=2)
    ids = list(source.table["sample_id"])
    seed_everything(0)
    model = build_model(tiny_model_config())
    cfg = dataclasses.replace(TrainConfig(steps=2, batch_size=4, eval_every=1))
    result = train_fixed_budget(
        model,
        source.dataset(ids[:3], train=True),
        cfg,
        seed=0,
        test_set=source.dataset(ids[3:], train=False),
        leaky=True,
    )
    assert result.selected_step == 2  # the result is still the last model
    assert result.leaky_best["step"] in (1, 2)
    assert result.leaky_best["acc"] == max(p.test["acc"] for p in result.curve)


def test_config_rejects_selection_without_validation() -> None:
    from hlora_mer.errors import ConfigError

    with pytest.raises(ConfigError, match="val_subjects"):
        TrainConfig(select="val")


def test_sampler_draws_each_clips_flip_from_its_own_generator() -> None:
    keys = [k for batch in FixedStepBatchSampler(n=12, batch_size=4, steps=30, seed=0, flip_prob=0.5) for k in batch]
    flips = [f for _, f in keys]
    assert 0.3 < np.mean(flips) < 0.7
    # the same seed gives the same flips whatever the global generator does in between
    torch.manual_seed(123)
    again = [k for batch in FixedStepBatchSampler(n=12, batch_size=4, steps=30, seed=0, flip_prob=0.5) for k in batch]
    assert again == keys
    # and the batch order does not depend on the flip probability
    no_flip = FixedStepBatchSampler(n=12, batch_size=4, steps=30, seed=0, flip_prob=0.0)
    assert [i for i, _ in keys] == [i for batch in no_flip for i, _ in batch]
    assert not any(f for batch in no_flip for _, f in batch)
