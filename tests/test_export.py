"""``hlora-mer export``: each format reloads, with the tools its users have, to the model that was trained.

The reference is the checkpoint's own model (``MERModel``, LoRA unmerged) on the same clips. Round trips of
the PEFT adapter and the merged folder must agree to ``TORCH_TOLERANCE`` in logits (the same arithmetic up to
float rounding); ONNX to ``ONNX_TOLERANCE`` in probabilities, the tolerance the export itself enforces.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hlora_mer.cli import main
from hlora_mer.errors import UserError
from hlora_mer.export import (
    ONNX_TOLERANCE,
    ClipClassifier,
    ExportError,
    export_model,
    load_fusion_head,
    sample_clips,
)
from hlora_mer.inference import load_trained, resolve_checkpoint
from hlora_mer.models.lora import lora_target_names
from hlora_mer.training.runner import run_experiment
from train_fixtures import CLASSES, tiny_experiment, tiny_source

TORCH_TOLERANCE = 1e-5


def _train(base, name: str, **sections):
    run = base / name
    run_experiment(tiny_experiment(**sections), run, tiny_source(subjects=2))
    # Two training steps leave B (initialised at zero) tiny, and a LoRA that barely acts passes any round
    # trip: give it weights that move the logits, so that a wrong rank, alpha or target shows.
    checkpoint = resolve_checkpoint(run) if sections.get("eval", {}).get("protocol") == "all" else None
    for ckpt in [checkpoint] if checkpoint else sorted(run.rglob("checkpoint")):
        tensors = load_file(str(ckpt / "model.safetensors"))
        gen = torch.Generator().manual_seed(1)
        for key in tensors:
            if "lora_B" in key:
                tensors[key] = torch.randn(tensors[key].shape, generator=gen) * 2.0
        save_file(tensors, str(ckpt / "model.safetensors"))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("export_runs")
    return {
        "all": _train(base, "all", eval={"protocol": "all"}),
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
    assert "N_l = 0 of 5 blocks" in card and "backbone = base  # N_l = 0" in card
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
    for fact in (
        "test_vit_reg",
        "Dinov2WithRegistersModel",
        trained.model.backbone.weights_id,
        "N_l = 2 of 5 blocks, rank r = 16, alpha = 1",
        "`full`: IFFA (paper) + STFA",
        ", ".join(CLASSES),
        "casme2_3cls",
        "| datasets | toy |",
        "protocol `all`",
        "**no test metrics**",
        "T = 8, sampled `uniform`",
        "28 x 28 px",
        "detector `none`",
        'PeftModel.from_pretrained(base, "adapter")',
        'Dinov2WithRegistersModel.from_pretrained("base")',
    ):
        assert fact in card, fact


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
    out = tmp_path / "onnx"
    with pytest.raises(ExportError, match=r"differ from PyTorch's by up to .* more than the tolerance 1e-15"):
        export_model(runs["all"], "onnx", out, tolerance=1e-15)
    assert not out.exists() and not list(tmp_path.iterdir())


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
    from hlora_mer import export
    from hlora_mer.cli import export as cli_export

    assert (cli_export.FORMATS, cli_export.ONNX_TOLERANCE) == (export.FORMATS, export.ONNX_TOLERANCE)
