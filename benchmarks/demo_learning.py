"""Does the demo learn? ``hlora-mer demo`` with the motion and at zero amplitude (the control).

Runs the demo exactly as ``make demo`` does (same command, same defaults) once per ``--amplitudes``
value, in ``--workdir`` (SynthME and the aligned clips are reused between runs), and records the
pooled LOSO ACC / UF1 / UAR with their bootstrap intervals over test subjects, the wall time of each run and the
machine. With the motion, UF1 should be well above chance (20 %); at amplitude 0 it should be at
chance. Not a test: the figures take minutes and depend on the machine.

    python benchmarks/demo_learning.py [--amplitudes 2.5 0] [--workdir runs/demo] [--backbone NAME]
        [--out benchmarks/results/demo_learning.json] [KEY=VALUE ...]

``--backbone test_vit_reg --amplitudes 2.5 --out benchmarks/results/demo_learning_random_init.json``
measures the demo with a random-init backbone instead of the shipped ``synthme_vit``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine_info

from hlora_mer.cli import main as cli


def _run_dir(workdir: Path, started: float) -> Path:
    """The run folder this call of the demo wrote last (its metrics.json is the newest)."""
    runs = [p for p in workdir.glob("run-*/metrics.json") if p.stat().st_mtime >= started]
    if not runs:
        raise SystemExit(f"the demo wrote no metrics.json under {workdir}")
    return max(runs, key=lambda p: p.stat().st_mtime).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[2.5, 0.0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--backbone", help="passed on to the demo (default: the demo's own, synthme_vit)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_learning.json"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="passed on to the demo")
    args = parser.parse_args()

    results = []
    for amplitude in args.amplitudes:
        started = time.time()
        backbone = ["--backbone", args.backbone] if args.backbone else []
        code = cli(
            ["-q", "demo", "--workdir", str(args.workdir), "--amplitude", f"{amplitude:g}", *backbone, *args.overrides]
        )
        if code != 0:
            raise SystemExit(f"the demo failed at amplitude {amplitude:g} (exit {code})")
        seconds = time.time() - started
        run = _run_dir(args.workdir, started)
        metrics = json.loads((run / "metrics.json").read_text())
        per_seed = metrics["pooled"]["per_seed"]["0"]
        ci = metrics.get("ci") or {}
        results.append(
            {
                "amplitude_px": amplitude,
                "run": str(run),
                "samples": per_seed["n"],
                "chance": 1 / len(metrics["classes"]),
                **{k: per_seed[k] for k in ("acc", "uf1", "uar")},
                "ci": {k: [ci[k]["low"], ci[k]["high"]] for k in ("acc", "uf1", "uar") if k in ci},
                "seconds": round(seconds, 1),
            }
        )
        print(
            f"amplitude {amplitude:g} px: UF1 {100 * per_seed['uf1']:.1f} %, ACC {100 * per_seed['acc']:.1f} %, "
            f"UAR {100 * per_seed['uar']:.1f} % (chance {100 / len(metrics['classes']):.0f} %) in {seconds:.0f} s"
        )

    record = {
        "benchmark": "demo_learning",
        "machine": machine_info(),
        "backbone": args.backbone or "the demo's default",
        "overrides": args.overrides,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
