"""``hlora-mer params``: parameter counts without weights."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "params",
        help="count LoRA / fusion / head / backbone parameters without downloading or allocating weights",
        description="Build the model on the meta device and print its parameter counts.",
    )
    p.add_argument("--backbone", default="dinov2_vitg14_reg", help="registered backbone name (default: %(default)s)")
    p.add_argument("--lora-blocks", type=int, default=2, help="N_l, blocks with LoRA (default: %(default)s)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank r (default: %(default)s)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip T (default: %(default)s)")
    p.add_argument("--classes", type=int, default=5, help="number of classes (default: %(default)s)")
    p.add_argument("--finetune", choices=("lora", "full"), default="lora", help="lora (HLoRA) or full fine-tuning")
    p.add_argument(
        "--variant", choices=("full", "no_stfa", "no_iffa", "none"), default="full", help="fusion variant (Table 9)"
    )
    p.set_defaults(func=params)


def params(args: argparse.Namespace) -> int:
    from hlora_mer.config import BackboneConfig, FusionConfig, LoRAConfig, ModelConfig
    from hlora_mer.models.mer_model import parameter_report

    cfg = ModelConfig(
        backbone=BackboneConfig(name=args.backbone, finetune=args.finetune),
        lora=LoRAConfig(last_n_blocks=args.lora_blocks, rank=args.rank),
        fusion=FusionConfig(variant=args.variant),
        num_frames=args.frames,
        num_classes=args.classes,
    )
    counts = parameter_report(cfg)
    tuning = f"N_l={args.lora_blocks}, r={args.rank}" if args.finetune == "lora" else "full fine-tuning"
    print(f"HLoRA-MER parameters: {args.backbone}, {tuning}, T={args.frames}, {args.classes} classes")
    print("(built on the meta device: no weights downloaded or allocated)")
    backbone_state = "trainable" if args.finetune == "full" else "frozen"
    rows = [
        ("LoRA (trainable)", counts["lora"]),
        ("fusion (trainable)", counts["fusion"]),
        ("head (trainable)", counts["head"]),
        (f"backbone ({backbone_state})", counts["backbone"]),
        ("trainable total", counts["trainable"]),
    ]
    for label, value in rows:
        print(f"  {label:<22}{value:>16,}")
    return 0
