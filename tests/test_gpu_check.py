"""benchmarks/gpu_check.py in its tiny CPU mode: every measurement is made and written, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hlora_mer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    return gpu_check


@pytest.mark.slow  # the real runner end to end: preprocessing, a fold, the report and its figures (~10 s)
def test_tiny_mode_measures_every_phase(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--tiny", "--out", str(out)])
    result = json.loads(out.read_text())
    cfg = result["config"]
    assert result["mode"] == "cpu-tiny"
    assert result["phases"] == ["step", "memory", "fill", "loso"]
    assert result["machine"]["device"] == "cpu" and result["machine"]["logical_cpus"] >= 1

    step = result["step"]
    assert len(step["step_s_all"]["cached"]) == len(step["step_s_all"]["uncached"]) == cfg["steps"]
    assert min(step["steps_per_s"].values()) > 0 and step["speedup"] > 0
    n, n_l = step["depth"], cfg["last_n"]
    assert step["theoretical_speedup"] == pytest.approx((n + 2 * n_l) / (3 * n_l), abs=1e-3)
    assert step["speedup"] == pytest.approx(step["steps_per_s"]["cached"] / step["steps_per_s"]["uncached"], rel=0.01)

    assert set(result["memory"]["peak_mib"]) == {"cached", "uncached"}
    assert min(result["memory"]["peak_mib"].values()) > 0

    fill = result["fill"]
    assert fill["clips"] == cfg["batch"] and fill["frames"] == cfg["batch"] * cfg["frames_per_clip"]
    assert fill["seconds"] > 0 and fill["frames_per_s"] > 0

    loso = result["loso"]
    assert loso["subjects"] == loso["folds_total"] == cfg["subjects"]
    assert loso["clips"] == cfg["clips"] < loso["clips_generated"]  # trimmed to the configured size
    assert loso["folds_timed"] == len(loso["fold_s"]) == cfg["folds"] > 0
    assert loso["seconds_per_fold"] > 0 and loso["preprocess_s"] > 0 and loso["synth_s"] > 0
    assert loso["cache_fill_clips"] == loso["clips"] and loso["cache_fill_s"] > 0
    per_fold_min = loso["seconds_per_fold"] * loso["folds_total"] / 60
    assert loso["extrapolated_folds_min"] == pytest.approx(per_fold_min, abs=1e-3)
    run_min = per_fold_min + (loso["cache_fill_s"] + loso["other_run_s"]) / 60
    assert loso["extrapolated_run_min"] == pytest.approx(run_min, abs=2e-3)
    assert loso["meets_target"] == (loso["extrapolated_run_min"] < loso["target_min"])
    assert "cpu-tiny" in capsys.readouterr().out


def test_phases_selects_the_measurements(gpu_check, tmp_path):
    out = tmp_path / "fill.json"
    gpu_check.main(["--tiny", "--phases", "fill", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["phases"] == ["fill"]
    assert result["fill"]["frames_per_s"] > 0
    assert not {"step", "memory", "loso"} & set(result)


def test_wrapper_runs_the_script_and_rejects_unknown_phases(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(hlora_mer.__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        ["sh", str(BENCHMARKS / "gpu_check.sh"), "--tiny", "--phases", "speed", "--out", str(tmp_path / "x.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "--phases takes a comma-separated subset of step,memory,fill,loso; got 'speed'" in done.stderr
    assert not (tmp_path / "x.json").exists()
