"""One LoRA merge: ``merge_lora`` folds the update in place; ``merged`` does it for a block and then restores every
tensor bit for bit; the export's merged backbone is that merge."""

from __future__ import annotations

import torch

from conftest import tiny_model_config
from hlora_mer.inference.export import backbone_state
from hlora_mer.models.lora import lora_layers, merged
from hlora_mer.models.mer_model import build_model
from test_model import clips, perturb_lora_b


def _model():
    model = build_model(tiny_model_config()).eval()
    perturb_lora_b(model)
    return model


def test_merged_folds_the_update_for_the_block_then_restores_every_tensor() -> None:
    model = _model()
    x = clips()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)
        with merged(model.backbone.model):
            assert all(layer.merged for layer in lora_layers(model))
            inside = model(x)
        after = model(x)
    torch.testing.assert_close(inside, expected)
    assert not any(layer.merged for layer in lora_layers(model))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == []  # bit for bit, not only close: unmerging alone leaves rounding in the weights
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_the_exported_merged_backbone_is_the_in_place_merge() -> None:
    model = _model()
    backbone = model.backbone
    exported = backbone_state(backbone, merge=True)
    with merged(backbone.model):
        in_place = {k.replace(".base_layer.", "."): v.clone() for k, v in backbone.model.state_dict().items()}
    adapted = [k for k in exported if any(f"{name}.weight" == k for name in _adapted(backbone.model))]
    assert len(adapted) == 4  # q and v of the last 2 blocks
    for key in exported:
        assert torch.equal(exported[key], in_place[key]), key
    base = backbone_state(backbone, merge=False)
    assert all(not torch.equal(base[k], exported[k]) for k in adapted)  # the update is really in there


def _adapted(module: torch.nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if m in lora_layers(module)]
