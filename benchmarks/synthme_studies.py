"""The paper's studies in miniature on SynthME: Fig. 3 (N_l) and Table 9 (HFM parts), several seeds each.

Generates the demo's SynthME (the same identities, motions and amplitude as ``make demo``) into
``--workdir`` once, then trains ``configs/synthme_fig3_lora_depth.yaml`` and
``configs/synthme_table9_hfm_ablation.yaml`` with the shipped ``synthme_vit`` through ``hlora-mer train``,
and records each variant's pooled ACC / UF1 (mean and std over seeds, bootstrap interval over test
subjects), the wall time and the machine in ``--out``. ``hlora-mer report`` draws the Fig. 3 plot beside
the table. These are not the paper's numbers: they show whether each part of the model matters on data
we can ship. Not a test: a full run takes about two hours on 2 CPU cores (18 LOSO runs of 12 folds).

    python benchmarks/synthme_studies.py [--studies fig3 table9] [--workdir runs/studies]
        [--out benchmarks/results/synthme_studies.json] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _machine import machine_info

from hlora_mer.cli import main as cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STUDIES = {"fig3": "synthme_fig3_lora_depth", "table9": "synthme_table9_hfm_ablation"}


def _summary(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    pooled, ci = metrics["pooled"], metrics.get("ci") or {}
    return {
        "variant": run.name,
        "seeds": metrics["seeds"],
        "complete": metrics["complete"],
        **{k: {"mean": pooled[k]["mean"], "std": pooled[k]["std"]} for k in ("acc", "uf1", "uar")},
        "ci": {k: [ci[k]["low"], ci[k]["high"]] for k in ("acc", "uf1", "uar") if k in ci},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", choices=sorted(STUDIES), default=sorted(STUDIES))
    parser.add_argument("--workdir", type=Path, default=Path("runs/studies"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synthme_studies.json"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="passed on to every run")
    args = parser.parse_args()

    from hlora_mer.synthme.demo import ensure_synthme
    from hlora_mer.synthme.generate import SynthConfig

    root = ensure_synthme(args.workdir, SynthConfig())  # the demo's defaults
    record: dict = {
        "benchmark": "synthme_studies",
        "machine": machine_info(),
        "synthme": str(root),
        "overrides": args.overrides,
        "studies": {},
    }
    for study in args.studies:
        name = STUDIES[study]
        out = args.workdir / name
        started = time.time()
        argv = [
            "-q",
            "train",
            "-c",
            str(CONFIGS / f"{name}.yaml"),
            f"data.roots.casme2={root}",
            f"data.cache_dir={args.workdir / 'cache'}",
            *args.overrides,
            "-o",
            str(out),
        ]
        if cli(argv) != 0:
            raise SystemExit(f"{name} failed")
        table = args.workdir / f"{name}.md"
        if cli(["report", str(out), "--metrics", "acc,uf1,uar", "-o", str(table)]) != 0:
            raise SystemExit(f"the report of {name} failed")
        record["studies"][study] = {
            "config": f"configs/{name}.yaml",
            "seconds": round(time.time() - started, 1),
            "variants": [_summary(run) for run in sorted(p.parent for p in out.glob("*/metrics.json"))],
            "table": table.read_text(),
        }
        print(record["studies"][study]["table"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
