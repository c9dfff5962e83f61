import pytest

from hlora_mer.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "params" in out and "demo" in out


def test_params_prints_the_papers_lora_count(capsys):
    assert main(["params", "--backbone", "dinov2_vitg14_reg", "--lora-blocks", "2", "--rank", "16"]) == 0
    out = capsys.readouterr().out
    assert "LoRA (trainable)" in out and "196,608" in out
    assert "1,136,486,912" in out


def test_params_full_fine_tuning_makes_the_backbone_trainable(capsys):
    assert main(["params", "--backbone", "dinov2_vits14", "--finetune", "full"]) == 0
    out = capsys.readouterr().out
    assert "backbone (trainable)" in out


def test_unknown_backbone_is_one_clear_message(capsys):
    assert main(["params", "--backbone", "dinov3_huge"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown backbone 'dinov3_huge'; choose one of")
    assert "Traceback" not in err


def test_missing_weights_say_what_to_download(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    from hlora_mer.errors import BackboneNotFoundError
    from hlora_mer.models.backbones import build_backbone

    with pytest.raises(BackboneNotFoundError) as err:
        build_backbone("dinov2_vits14_reg")
    message = str(err.value)
    assert "'dinov2_vits14_reg' (facebook/dinov2-with-registers-small)" in message
    assert "hf download facebook/dinov2-with-registers-small" in message
    assert str(tmp_path) in message


def test_local_directory_backbone_loads_strictly(tmp_path):
    import torch

    from hlora_mer.models.backbones import build_backbone

    saved = build_backbone("test_vit", pretrained=False, init_seed=3)
    saved.model.save_pretrained(tmp_path / "tiny")
    loaded = build_backbone(str(tmp_path / "tiny"), pretrained=True)
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(loaded(x), saved(x), rtol=0, atol=0)
    assert loaded.weights_id.startswith(str(tmp_path / "tiny"))
