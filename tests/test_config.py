import pytest

from hlora_mer.config import ModelConfig, apply_overrides, from_dict, load_yaml, to_dict, to_yaml
from hlora_mer.errors import ConfigError


def test_round_trip_through_yaml(tmp_path):
    cfg = apply_overrides(ModelConfig(), ["lora.rank=8", "lora.targets=[q, k, v]", "fusion.iffa_dim=64"])
    path = tmp_path / "model.yaml"
    path.write_text(to_yaml(cfg))
    assert load_yaml(ModelConfig, path) == cfg
    assert to_dict(cfg)["lora"]["targets"] == ["q", "k", "v"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"lora": {"rnak": 4}}, "unknown key lora.rnak; allowed under lora: last_n_blocks, rank"),
        ({"typo": 1}, "unknown key typo"),
        ({"lora": {"rank": "big"}}, "lora.rank must be an integer"),
        ({"lora": {"rank": 0}}, "lora.rank must be >= 1"),
        ({"lora": {"targets": ["q", "x"]}}, "subset of q, k, v, o"),
        ({"fusion": {"variant": "half"}}, "fusion.variant must be one of"),
        ({"backbone": {"finetune": "partial"}}, "backbone.finetune must be one of"),
        ({"num_frames": 1}, "num_frames must be >= 2"),
    ],
)
def test_bad_values_name_the_key(data, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        from_dict(ModelConfig, data)


def test_unknown_override_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed under fusion: variant"):
        apply_overrides(ModelConfig(), ["fusion.varient=none"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(ModelConfig(), ["lora.rank"])


def test_missing_yaml_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(ModelConfig, tmp_path / "nope.yaml")
