"""The engine's loaders start under ``spawn``, and restoring the selected step's weights names any key mismatch."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.config import TrainConfig
from hlora_mer.models.mer_model import build_model
from hlora_mer.training.engine import FixedStepBatchSampler, seed_everything, train_fixed_budget, train_loader
from train_fixtures import tiny_source


class _SeedReporting(torch.utils.data.Dataset):
    """Each sample's id is the torch seed of the process that read it (a worker reports its own seed)."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        index, _flip = key
        return {"clip": torch.zeros(2, 3, 4, 4), "label": index, "sample_id": str(torch.initial_seed())}


def test_train_loader_runs_spawned_workers_seeded_by_the_run_seed() -> None:
    seed = 11
    sampler = FixedStepBatchSampler(n=3, batch_size=3, steps=2, seed=seed)
    loader = train_loader(_SeedReporting(), sampler, seed=seed, num_workers=1, multiprocessing_context="spawn")
    batches = list(loader)
    assert len(batches) == 2
    # The one worker (w = 0) was seeded by the engine's init function with seed + 1 + w, not torch's own seed.
    assert {sid for b in batches for sid in b["sample_id"]} == {str(seed + 1)}
    assert sorted(batches[0]["label"].tolist()) == [0, 1, 2]


def _train_with_selection(model) -> None:  # noqa: ANN001
    source = tiny_source(subjects=3)
    table = source.table
    train_ids = list(table.loc[table.subject != "toy/03", "sample_id"])
    val_ids = list(table.loc[table.subject == "toy/03", "sample_id"])
    cfg = TrainConfig(steps=2, batch_size=4, val_subjects=1, select="val", eval_every=1)
    train_fixed_budget(
        model, source.dataset(train_ids, train=True), cfg, seed=0, val_set=source.dataset(val_ids, train=False)
    )


def test_restoring_the_selected_step_refuses_a_state_without_every_trainable_tensor() -> None:
    seed_everything(0)
    model = build_model(tiny_model_config())
    full = model.trainable_state_dict
    head = sorted(k for k in full() if k.startswith("head."))
    assert head
    # A snapshot that leaves out the head: restoring it silently would keep the last step's head.
    model.trainable_state_dict = lambda: {k: v for k, v in full().items() if not k.startswith("head.")}  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match=rf"{head[0]}"):
        _train_with_selection(model)
