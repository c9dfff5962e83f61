"""``hlora-mer export``: each format reloads, with the tools its users have, to the model that was trained.

The reference is the checkpoint's own model (``MERModel``, LoRA unmerged) on the same clips. Round trips of
the PEFT adapter and the merged folder must agree to ``TORCH_TOLERANCE`` in logits (the same arithmetic up to
float rounding); ONNX to ``ONNX_TOLERANCE`` in probabilities, the tolerance the export itself enforces.
"""

from __future__ import annotations

import json

import pytest
import torch

from apply_fixtures import APPLY_ALPHA, APPLY_CLASSES, APPLY_FRAMES, APPLY_NL, APPLY_RANK, APPLY_SCHEME, tune_lora
from hlora_mer.cli import main
from hlora_mer.errors import UserError
from hlora_mer.inference.export import (
    ONNX_TOLERANCE,
    ClipClassifier,
    ExportError,
    export_model,
    load_fusion_head,
    sample_clips,
)
from hlora_mer.inference.load import load_trained, resolve_checkpoint
from hlora_mer.models.lora import lora_target_names
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_experiment, tiny_source

CLASSES = APPLY_CLASSES

TORCH_TOLERANCE = 1e-5


def _train(base, name: str, **sections):
    run = base / name
    run_experiment(tiny_experiment(**sections), run, tiny_source(subjects=2))
    # Two training steps leave B (initialised at zero) tiny, and a LoRA that barely acts passes any round
    # trip: give it weights that move the logits, so that a wrong rank, alpha or target shows.
    checkpoint = resolve_checkpoint(run) if sections.get("eval", {}).get("protocol") == "all" else None
    for ckpt in [checkpoint] if checkpoint else sorted(run.rglob("checkpoint")):
        tune_lora(ckpt)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, apply_run):
    base = tmp_path_factory.mktemp("export_runs")
    return {
        # the shared model (apply_fixtures): T = 6, apex sampling, hde_3cls, N_l = 3, rank 4, dropout on
        "all": apply_run,
        # N_l = 0 with the time mean instead of the HFM (Table 9's "w/o HFM"): one run for both.
        "nl0": _train(
            base, "nl0", eval={"protocol": "all"}, model={"lora": {"last_n_blocks": 0}, "fusion": {"variant": "none"}}
        ),
        "stfa": _train(base, "stfa", eval={"protocol": "all"}, model={"fusion": {"variant": "no_iffa"}}),
        "loso": _train(base, "loso"),
    }


def _reference(run, batch: int = 3):
    """The trained model's logits and probabilities on seeded clips, and the clips."""
    trained = load_trained(run)
    clips = sample_clips(trained, batch) * 1.5
    with torch.no_grad():
        logits = trained.model(clips)
    return clips, logits, logits.softmax(-1)


def _base_class(out):
    import transformers

    return getattr(transformers, json.loads((out / "hlora_mer.json").read_text())["backbone"]["class"])


def test_the_peft_adapter_loads_onto_the_rebuilt_base_with_the_same_logits(runs, tmp_path) -> None:
    from peft import PeftModel

    out = tmp_path / "peft"
    result = export_model(runs["all"], "peft", out)
    clips, logits, _ = _reference(runs["all"])
    base = _base_class(out).from_pretrained(out / "base")
    head = load_fusion_head(out)
    with torch.no_grad():
        unadapted = ClipClassifier(base, head).eval()(clips)
        model = ClipClassifier(PeftModel.from_pretrained(base, out / "adapter"), head).eval()
        got = model(clips)
    assert (got - logits).abs().max() <= TORCH_TOLERANCE
    assert (unadapted - logits).abs().max() > 100 * TORCH_TOLERANCE  # the adapter is what makes them equal

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    trained = load_trained(runs["all"])
    lora = trained.model.config.lora
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (lora.rank, lora.alpha, "LORA")
    assert config["target_modules"] == sorted(lora_target_names(trained.model.backbone, lora))
    assert head.labels == list(CLASSES) == (out / "labels.txt").read_text().split()
    assert {str(p) for p in result.files} >= {
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "base/config.json",
        "base/model.safetensors",
        "fusion_head.safetensors",
        "hlora_mer.json",
        "labels.txt",
        "README.md",
    }


def test_the_merged_folder_loads_with_from_pretrained_with_the_same_logits(runs, tmp_path) -> None:
    for name in ("all", "nl0"):
        out = tmp_path / name
        export_model(runs[name], "merged", out)
        clips, logits, _ = _reference(runs[name])
        backbone = _base_class(out).from_pretrained(out / "backbone")
        assert not any("lora" in key for key in backbone.state_dict())
        with torch.no_grad():
            got = ClipClassifier(backbone, load_fusion_head(out)).eval()(clips)
        assert (got - logits).abs().max() <= TORCH_TOLERANCE, name


def test_without_lora_there_is_no_adapter_and_the_base_gives_the_logits(runs, tmp_path) -> None:
    out = tmp_path / "nl0"
    result = export_model(runs["nl0"], "peft", out)
    assert not (out / "adapter").exists()
    assert any("N_l = 0" in note and "no adapter" in note for note in result.notes)
    clips, logits, _ = _reference(runs["nl0"])
    base = _base_class(out).from_pretrained(out / "base")
    with torch.no_grad():
        got = ClipClassifier(base, load_fusion_head(out)).eval()(clips)
    assert (got - logits).abs().max() <= TORCH_TOLERANCE
    card = (out / "README.md").read_text()
    depth = load_trained(runs["nl0"]).model.backbone.depth
    assert f"N_l = 0 of {depth} blocks" in card and "backbone = base  # N_l = 0" in card
    assert "`none`: no HFM" in card
    assert "PeftModel" not in card


def test_the_stfa_only_fusion_round_trips(runs, tmp_path) -> None:
    out = tmp_path / "stfa"
    export_model(runs["stfa"], "peft", out)
    from peft import PeftModel

    clips, logits, _ = _reference(runs["stfa"])
    backbone = PeftModel.from_pretrained(_base_class(out).from_pretrained(out / "base"), out / "adapter")
    with torch.no_grad():
        got = ClipClassifier(backbone, load_fusion_head(out)).eval()(clips)
    assert (got - logits).abs().max() <= TORCH_TOLERANCE
    assert "`no_iffa`: STFA only" in (out / "README.md").read_text()


def test_the_model_card_holds_the_key_facts(runs, tmp_path) -> None:
    out = tmp_path / "card"
    export_model(runs["all"], "peft", out)
    card = (out / "README.md").read_text()
    trained = load_trained(runs["all"])
    depth = trained.model.backbone.depth
    assert depth - APPLY_NL != APPLY_NL  # the fixture tells N_l from the frozen count
    for fact in (
        "test_vit_reg",
        "Dinov2WithRegistersModel",
        trained.model.backbone.weights_id,
        # N_l, rank and alpha as trained (none of them a default), never the frozen count
        f"N_l = {APPLY_NL} of {depth} blocks, rank r = {APPLY_RANK}, alpha = {APPLY_ALPHA:g}",
        "`full`: IFFA (paper) + STFA",
        ", ".join(APPLY_CLASSES),
        APPLY_SCHEME,
        "| datasets | toy |",
        "protocol `all`",
        "**no test metrics**",
        f"T = {APPLY_FRAMES}, sampled `apex`",
        "centred in a 28 x 28 square",
        "**alignment**: none",
        'PeftModel.from_pretrained(base, "adapter")',
        'Dinov2WithRegistersModel.from_pretrained("base")',
    ):
        assert fact in card, fact
    assert f"N_l = {depth - APPLY_NL} " not in card and "T = 8" not in card and "`uniform`" not in card
    assert (out / "labels.txt").read_text().split() == list(APPLY_CLASSES)


def test_a_fold_checkpoints_card_shows_the_runs_metrics_and_its_own(runs, tmp_path) -> None:
    fold = runs["loso"] / "folds" / "seed0" / "toy__01"
    out = tmp_path / "fold"
    export_model(fold, "merged", out)
    card = (out / "README.md").read_text()
    metrics = json.loads((runs["loso"] / "metrics.json").read_text())
    pooled = metrics["pooled"]
    assert f"{100 * pooled['acc']['mean']:.2f} ± {100 * pooled['acc']['std']:.2f}" in card
    assert f"{100 * pooled['uf1']['mean']:.2f}" in card
    own = next(f for f in metrics["per_fold"] if f["fold"] == "toy/01")
    assert f"fold `toy/01` (seed 0); on its {own['n_test']} held-out test samples: ACC {100 * own['acc']:.2f}" in card
    assert "no test metrics" not in card and "Protocol **loso**" in card


@pytest.mark.slow
def test_the_onnx_graph_gives_the_probabilities_with_any_batch_size(runs, tmp_path) -> None:
    import onnxruntime as ort

    out = tmp_path / "onnx"
    result = export_model(runs["all"], "onnx", out)
    assert result.onnx_max_difference is not None and result.onnx_max_difference <= ONNX_TOLERANCE
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # traced with 2
        clips, _, probabilities = _reference(runs["all"], batch)
        got = torch.from_numpy(session.run(None, {"clips": clips.numpy()})[0])
        assert got.shape == probabilities.shape
        assert (got - probabilities).abs().max() <= ONNX_TOLERANCE
    assert not (out / "fusion_head.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "ort.InferenceSession" in card and f"tolerance {ONNX_TOLERANCE:g}" in card


@pytest.mark.slow
def test_an_onnx_graph_outside_the_tolerance_is_refused_and_nothing_is_written(runs, tmp_path) -> None:
    out = tmp_path / "new" / "folders" / "onnx"  # the folders above -o are made by the export, and removed
    with pytest.raises(ExportError, match=r"differ from PyTorch's by up to .* more than the tolerance 1e-15"):
        export_model(runs["all"], "onnx", out, tolerance=1e-15)
    assert not list(tmp_path.iterdir())


def test_a_non_empty_folder_is_refused_unless_forced_and_an_earlier_export(runs, tmp_path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty; pass --force"):
        export_model(runs["all"], "merged", out)
    with pytest.raises(UserError, match="holds something other than an export"):
        export_model(runs["all"], "merged", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"

    again = tmp_path / "again"
    export_model(runs["all"], "peft", again)
    export_model(runs["all"], "merged", again, force=True)
    assert (again / "backbone").is_dir() and not (again / "adapter").exists()
    with pytest.raises(UserError, match="holds the checkpoint being exported"):
        export_model(runs["all"], "merged", runs["all"], force=True)


def test_an_unknown_format_is_refused(runs, tmp_path, capsys) -> None:
    with pytest.raises(UserError, match="unknown export format 'gguf'; choose one of peft, merged, onnx"):
        export_model(runs["all"], "gguf", tmp_path / "x")
    with pytest.raises(SystemExit):
        main(["export", str(runs["all"]), "--format", "gguf", "-o", str(tmp_path / "x")])
    assert "invalid choice: 'gguf'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_cli_prints_each_file_it_wrote(runs, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["export", str(runs["all"]), "--format", "merged", "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert [line.split(" (")[0] for line in printed if line.startswith("wrote ")] == [f"wrote {out / f}" for f in files]
    assert printed[-1].startswith(f"exported merged to {out}")
    assert main(["export", str(runs["all"]), "--format", "merged", "-o", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_the_cli_offers_the_librarys_formats_and_tolerance() -> None:
    from hlora_mer.cli import export as cli_export
    from hlora_mer.inference import export

    assert (cli_export.FORMATS, cli_export.ONNX_TOLERANCE) == (export.FORMATS, export.ONNX_TOLERANCE)


def _card_code(out, clip, apex: int) -> str:
    """The model card's code, for the clip ``clip`` with its apex."""
    card = (out / "README.md").read_text()
    assert "randn" not in card and "## Preprocessing" in card and "**layout**: float32 (batch, 6, 3, 28, 28)" in card
    code = card.split("## How to load it")[1].split("```python\n")[1].split("```")[0]
    assert 'prepare_input(".", "path/to/clip.mp4", apex=None)' in code
    return code.replace("path/to/clip.mp4", str(clip)).replace("apex=None", f"apex={apex}")


def _run_card(out, code: str, monkeypatch):
    monkeypatch.chdir(out)
    namespace: dict = {}
    exec(compile(code, str(out / "README.md"), "exec"), namespace)
    return torch.as_tensor(namespace["probabilities"])


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_the_model_cards_code_turns_a_clip_into_the_probabilities_predict_gives(
    fmt, runs, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # prepare_input's default cache
    expected, _ = _predicted(runs, tmp_path)
    out = tmp_path / fmt
    export_model(runs["all"], fmt, out)
    got = _run_card(out, _card_code(out, tmp_path / "clip", 7), monkeypatch)
    assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-5
    assert list((tmp_path / "xdg" / "hlora-mer" / "predict").iterdir())  # the clip went through predict's cache


def _predicted(runs, tmp_path):
    """``predict`` on a real clip (a frame folder, apex given), and the normalised clip the model saw."""
    import numpy as np
    from PIL import Image

    from hlora_mer.inference.predict import predict_clips, requests_from_inputs
    from hlora_mer.preprocess.cache import open_cache_dir
    from hlora_mer.training.clip_dataset import normalize_clip

    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for k in range(1, 13):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(folder / f"img{k}.png")
    trained = load_trained(runs["all"])
    report = predict_clips(trained, requests_from_inputs([folder], apex=7), tmp_path / "cache")
    (clip,) = report.clips
    assert clip.error is None and 7 in clip.frames
    pixels = normalize_clip(open_cache_dir(report.cache_dir).load_clip(clip.cache_key))[None]
    return torch.tensor([[clip.probabilities[c] for c in APPLY_CLASSES]]), pixels


def _dropout_is_on(runs) -> None:
    cfg = load_trained(runs["all"]).model.config
    assert cfg.lora.dropout > 0 and cfg.fusion.head_dropout > 0  # a model in train mode would give other numbers


def test_peft_and_merged_exports_equal_predict_on_a_real_clip(runs, tmp_path) -> None:
    from peft import PeftModel

    _dropout_is_on(runs)
    expected, pixels = _predicted(runs, tmp_path)
    export_model(runs["all"], "peft", tmp_path / "peft")
    export_model(runs["all"], "merged", tmp_path / "merged")
    base = _base_class(tmp_path / "peft").from_pretrained(tmp_path / "peft" / "base")
    backbones = {
        "peft": PeftModel.from_pretrained(base, tmp_path / "peft" / "adapter"),
        "merged": _base_class(tmp_path / "merged").from_pretrained(tmp_path / "merged" / "backbone"),
    }
    for fmt, backbone in backbones.items():
        model = ClipClassifier(backbone, load_fusion_head(tmp_path / fmt)).eval()
        with torch.no_grad():
            got = model(pixels).softmax(-1)
        assert (got - expected).abs().max() <= 1e-5, fmt


@pytest.mark.slow
def test_the_onnx_export_equals_predict_on_a_real_clip(runs, tmp_path, monkeypatch) -> None:
    import onnxruntime as ort

    _dropout_is_on(runs)
    expected, pixels = _predicted(runs, tmp_path)
    export_model(runs["all"], "onnx", tmp_path / "onnx")
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"clips": pixels.numpy()})[0])
    assert (got - expected).abs().max() <= ONNX_TOLERANCE
    # and the model card's code, from the clip's folder to the probabilities
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    got = _run_card(tmp_path / "onnx", _card_code(tmp_path / "onnx", tmp_path / "clip", 7), monkeypatch)
    assert (got - expected).abs().max() <= ONNX_TOLERANCE
    # the trained model itself is left as it was: LoRA unmerged, in eval mode
    trained = load_trained(runs["all"])
    assert not trained.model.training


@pytest.mark.slow
def test_an_export_stopped_by_sigterm_leaves_no_temporary_folder(runs, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "made" / "onnx"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in map(os.path.abspath, sys.path) if p])}
    command = [sys.executable, "-m", "hlora_mer", "-q", "export", str(runs["all"]), "--format", "onnx", "-o", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.parent.exists() and list(out.parent.glob(".onnx.*"))):  # the export's temporary folder
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.strip().endswith("interrupted"), err
    assert not list(tmp_path.iterdir())  # neither the temporary folder nor the folders made above -o
