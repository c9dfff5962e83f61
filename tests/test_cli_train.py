"""``hlora-mer train / evaluate / report`` end to end on a generated CASME II-format tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hlora_mer.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "model.backbone.name=test_vit_reg",
    "model.backbone.pretrained=false",
    "model.image_size=28",
    "train.steps=2",
    "train.batch_size=4",
    "train.device=cpu",
    "data.detector=none",
    "eval.bootstrap=20",
]


def test_table3_config_with_tiny_backbone_produces_the_run_folder(synth_root, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "-c",
        str(CONFIGS / "table3_casme2_5cls.yaml"),
        f"data.roots.casme2={synth_root}",
        *TINY,
        "-o",
        str(run),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out  # -q drops progress bars and info logs, never the result
    assert f"table3_casme2_5cls: run folder {run}" in out and "| table3_casme2_5cls |" in out and "UF1" in out
    for name in (
        "config.yaml",
        "run.json",
        "folds.json",
        "excluded.csv",
        "predictions.csv",
        "metrics.json",
        "report.md",
        "confusion.png",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["per_fold"]) == 3
    # the console shows the interval report.md quotes, with the same numbers
    interval = next(line for line in (run / "report.md").read_text().splitlines() if "bootstrap interval" in line)
    assert "95% bootstrap interval over test subjects (20 resamples): ACC [" in interval and interval in out
    assert metrics["classes"] == ["happiness", "disgust", "repression", "surprise", "others"]
    assert (run / "folds" / "seed0" / "casme2__01" / "checkpoint" / "model.safetensors").is_file()
    assert (tmp_path / "cache").is_dir()  # the clip cache sits beside the run, shared by runs
    first = (run / "metrics.json").read_bytes()

    # a second call resumes: nothing is retrained and the metrics are the same
    assert main(argv) == 0
    assert (run / "metrics.json").read_bytes() == first

    assert main(["-q", "evaluate", str(run)]) == 0
    assert (run / "metrics.json").read_bytes() == first
    capsys.readouterr()
    assert main(["report", str(run), str(run), "--metrics", "acc,uf1,uar"]) == 0
    out = capsys.readouterr().out
    # two rows with one config name are told apart by their folder
    assert out.count(f"| table3_casme2_5cls ({run}) |") == 2 and "UAR" in out


def test_debug_config_sweep_runs_each_variant(synth_root, tmp_path) -> None:
    out = tmp_path / "sweep"
    argv = [
        "-q",
        "train",
        "-c",
        str(CONFIGS / "debug_tiny.yaml"),
        f"data.roots.casme2={synth_root}",
        "sweep={a: [model.lora.last_n_blocks=1], b: [model.lora.last_n_blocks=2]}",
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    assert (out / "a" / "metrics.json").is_file() and (out / "b" / "metrics.json").is_file()
    assert main(["report", str(out)]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["train.stepz=3"], "unknown key 'train.stepz'"),
        ([], "no root folder for dataset 'casme2'"),
        (["data.roots.casme2=/nonexistent/casme2"], "does not exist"),
        (["data.roots.casme2=/tmp", "model.backbone.name=/nonexistent/dinov2"], "backbone"),
    ],
)
def test_user_errors_are_one_line_exit_2(extra, message, tmp_path, capsys) -> None:
    argv = ["train", "-c", str(CONFIGS / "debug_tiny.yaml"), *extra, "-o", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_missing_backbone_weights_is_a_user_error(synth_root, tmp_path, capsys) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()  # a backbone folder without config.json
    argv = [
        "train",
        "-c",
        str(CONFIGS / "debug_tiny.yaml"),
        f"data.roots.casme2={synth_root}",
        f"model.backbone.name={weights}",
        "-o",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 2
    assert "config.json" in capsys.readouterr().err


def test_report_and_evaluate_reject_non_runs(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_dry_run_prints_the_resolved_config(capsys) -> None:
    assert main(["train", "-c", str(CONFIGS / "fig3_lora_depth_samm.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("# variant nl") == 5 and "last_n_blocks: 4" in out


def test_overrides_may_follow_the_options(capsys):
    from pathlib import Path

    from hlora_mer.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "debug_tiny.yaml"
    assert main(["train", "-c", str(config), "--dry-run", "train.steps=7", "eval.seeds=[3]"]) == 0
    out = capsys.readouterr().out
    assert "steps: 7" in out and "- 3" in out


def test_too_many_validation_subjects_fail_before_preprocessing(synth_root, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "-c",
        str(CONFIGS / "table3_casme2_5cls.yaml"),
        f"data.roots.casme2={synth_root}",
        *TINY,
        "train.val_subjects=5",
        "-o",
        str(run),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train.val_subjects=5" in err and "fold casme2/01" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists() and not run.exists()  # no clip aligned, no run folder made


def test_an_all_subjects_run_says_where_its_model_is(synth_root, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["-q", "train", "-c", str(CONFIGS / "all_subjects_casme2_5cls.yaml"), f"data.roots.casme2={synth_root}"]
    assert main([*argv, *TINY, "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no test scores" in out and str(run / "folds" / "seed0" / "all" / "checkpoint") in out
    assert f"hlora-mer predict VIDEO_OR_FRAME_FOLDER... --model {run}" in out


def test_each_log_record_of_a_run_is_shown_once(synth_root, tmp_path, capsys) -> None:
    # the package's handler shows each record; nothing may print it a second time (e.g. through the root logger)
    argv = ["train", "-c", str(CONFIGS / "all_subjects_casme2_5cls.yaml"), f"data.roots.casme2={synth_root}"]
    assert main([*argv, *TINY, "-o", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "165 train" in line or "train, 0 val" in line]
    assert len(lines) == 1, lines
