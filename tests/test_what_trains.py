"""What a fold trains is exactly the LoRA of the last N_l blocks (plus fusion and head), and the frozen-prefix
feature cache stores the tokens leaving the first depth - N_l blocks.

The tiny backbone has 5 blocks, so N_l = 2 (LoRA) and the 3 frozen blocks are different numbers: code that
confuses the two is caught.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.models.mer_model import build_model
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.engine import seed_everything
from hlora_mer.training.runner import default_model_factory, run_experiment
from train_fixtures import tiny_experiment, tiny_source

DEPTH = 5  # test_vit_reg


def _lora_tensors(blocks: list[int]) -> set[str]:
    return {
        f"backbone.model.encoder.layer.{i}.attention.{proj}.lora_{ab}.default.weight"
        for i in blocks
        for proj in ("q_proj", "v_proj")
        for ab in ("A", "B")
    }


@pytest.mark.parametrize("n_l", [2, 1])
def test_a_fold_trains_exactly_the_lora_of_the_last_n_l_blocks(tmp_path, n_l: int) -> None:
    built: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = []

    def factory(cfg):
        model = default_model_factory(cfg)
        built.append((model, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return model

    cfg = tiny_experiment(model={"lora": {"last_n_blocks": n_l}}, train={"steps": 3, "lr": 1e-2})
    run_experiment(cfg, tmp_path / "run", tiny_source(subjects=2), model_factory=factory)
    assert len(built) == 3  # the feature cache's fill, then one model per fold
    expected = _lora_tensors(list(range(DEPTH - n_l, DEPTH)))
    for model, before in built[1:]:
        after = model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k].to(before[k].device))}
        assert {k for k in changed if k.startswith("backbone.")} == expected
        assert any(k.startswith("fusion.") for k in changed) and any(k.startswith("head.") for k in changed)
        assert model.frozen_blocks == DEPTH - n_l


@pytest.mark.parametrize("n_l", [2, 1])
def test_the_feature_cache_stores_the_output_of_the_frozen_blocks(n_l: int) -> None:
    source = tiny_source(subjects=1)
    seed_everything(0)
    model = build_model(tiny_model_config(lora={"last_n_blocks": n_l})).eval()
    cfg = tiny_experiment(model={"lora": {"last_n_blocks": n_l}}, train={"feature_cache_dtype": "fp32"})
    prepared = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert prepared is not None
    sid = str(source.table["sample_id"][0])
    stored = prepared[0].cache.get(sid)[0].float()  # (T, L, d), the unflipped clip
    with torch.no_grad():
        # the backbone's own account: hidden_states[k] is the output of its first k blocks
        hidden = model.backbone.model(source.clips[0], output_hidden_states=True).hidden_states
    assert len(hidden) == DEPTH + 1
    torch.testing.assert_close(stored, hidden[DEPTH - n_l], rtol=0, atol=1e-5)
    assert not torch.allclose(stored, hidden[n_l], atol=1e-3)  # not the N_l-th block's output
