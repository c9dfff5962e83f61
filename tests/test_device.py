"""One device resolution for training and for predict: the same rules, each message in its caller's words."""

from __future__ import annotations

import pytest
import torch

from hlora_mer.cli import main
from hlora_mer.errors import ConfigError
from hlora_mer.training.engine import resolve_device


def test_auto_is_cpu_without_cuda_and_a_missing_cuda_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^train\.device=cuda:1: no CUDA device is available; use train\.device=cpu"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match=r"^--device cuda: no CUDA device is available; use --device cpu"):
        resolve_device("cuda", option="--device {}")


def test_a_device_torch_does_not_know_is_one_message() -> None:
    with pytest.raises(ConfigError, match=r"^--device gpu: .*; use cpu, cuda, cuda:N or auto"):
        resolve_device("gpu", option="--device {}")
    with pytest.raises(ConfigError, match=r"^train\.device=cpu:x: .*; use cpu, cuda, cuda:N or auto"):
        resolve_device("cpu:x")


def test_predict_resolves_its_device_the_same_way(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["predict", str(tmp_path / "clip.mp4"), "--model", str(tmp_path / "run"), "--cache", str(tmp_path / "c")]
    assert main([*argv, "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --device cuda:1: no CUDA device is available; use --device cpu or --device auto\n"
    assert main([*argv, "--device", "gpu"]) == 2
    assert capsys.readouterr().err.startswith("error: --device gpu: ")
