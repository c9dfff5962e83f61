"""``hlora-mer demo`` (= ``make demo``): the whole pipeline on SynthME, with a table next to chance."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on SynthME: synth, load, align, LOSO, report",
        description="Generate SynthME once (cached in the work folder), align it, run LOSO with the tiny "
        "synthme_vit backbone shipped with the package (or --backbone) and print ACC / UF1 / UAR next to "
        "chance level.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="overrides of the demo experiment, e.g. train.steps=400 (see hlora_mer/configs/demo.yaml)",
    )
    p.add_argument(
        "--workdir", default="runs/demo", help="where SynthME, the aligned clips and the run go (default: %(default)s)"
    )
    p.add_argument(
        "--backbone",
        help="a registered backbone or a local checkpoint folder, e.g. dinov2_vits14 "
        "(pretrained weights from the Hugging Face cache) or test_vit_reg (tiny, random-init); "
        "default: synthme_vit, tiny and pretrained without labels on other SynthME identities",
    )
    p.add_argument(
        "--amplitude",
        type=float,
        default=2.5,
        help="SynthME motion at the apex in pixels; 0 is the no-motion control (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="SynthME seed (default: %(default)s)")
    p.add_argument("--subjects", type=int, default=12, help="SynthME subjects = LOSO folds (default: %(default)s)")
    p.add_argument(
        "--clips-per-class", type=int, default=3, help="SynthME clips per class and subject (default: %(default)s)"
    )
    p.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    import hashlib
    from pathlib import Path

    from tqdm import tqdm

    from hlora_mer.cli.train import check_outputs, result_text, run_variant
    from hlora_mer.files import check_writable_dir
    from hlora_mer.models.backbones import BACKBONES, has_weights
    from hlora_mer.synthme.demo import demo_config, ensure_synthme, synthme_root
    from hlora_mer.synthme.generate import SynthConfig

    workdir = Path(args.workdir)
    overrides = list(args.overrides)
    if args.backbone:
        spec = BACKBONES.get(args.backbone)
        pretrained = spec is None or has_weights(spec)
        chosen = [f"model.backbone.name={args.backbone}", f"model.backbone.pretrained={str(pretrained).lower()}"]
        if spec is None or spec.hub_id is not None:  # DINOv2 proper: the paper's frame size
            chosen.append("model.image_size=224")
        overrides = [*chosen, *overrides]
    synth_cfg = SynthConfig(
        amplitude=args.amplitude, seed=args.seed, subjects=args.subjects, clips_per_class=args.clips_per_class
    )
    total = synth_cfg.subjects * synth_cfg.clips_per_class * 5
    root = synthme_root(workdir, synth_cfg)
    # The settings and every folder the demo writes are checked before SynthME is generated.
    cfg = demo_config([f"data.roots.casme2={root}", f"data.cache_dir={workdir / 'cache'}", *overrides])
    backbone = cfg.model.backbone
    run_dir = workdir / f"run-{root.name.removeprefix('synthme-')}-{backbone.name.replace('/', '_')}"
    if args.overrides:  # other settings, another run folder (a run folder resumes only its own settings)
        digest = hashlib.sha256(" ".join(args.overrides).encode()).hexdigest()[:8]
        run_dir = run_dir.with_name(f"{run_dir.name}-{digest}")
    check_writable_dir(workdir, "demo work folder", "choose another folder with --workdir")
    check_outputs({run_dir: cfg}, "choose another folder with --workdir")
    with tqdm(total=total, desc="SynthME", unit="clip", disable=args.quiet, delay=1) as bar:  # no bar when cached
        ensure_synthme(workdir, synth_cfg, progress=lambda done, _: bar.update(done - bar.n))
    spec = BACKBONES.get(backbone.name)
    if not backbone.pretrained:
        weights = "RANDOM-INIT weights, not pretrained"
    elif spec is not None and spec.about:
        weights = f"pretrained weights: {spec.about}"
    else:
        weights = "pretrained weights"
    print(f"SynthME: {root} (amplitude {args.amplitude:g} px, seed {args.seed})")
    print(f"backbone: {backbone.name} with {weights}")
    metrics = run_variant(cfg, run_dir, args.quiet)
    classes = metrics.get("classes") or []
    chance = 100.0 / len(classes) if classes else float("nan")
    print()
    print(result_text(run_dir, metrics))
    if metrics.get("table"):
        print(
            f"chance level (a uniform random guess over {len(classes)} balanced classes): "
            f"ACC {chance:.2f}, UF1 {chance:.2f}, UAR {chance:.2f}"
        )
    print(f"report: {run_dir / 'report.md'}")
    return 0
