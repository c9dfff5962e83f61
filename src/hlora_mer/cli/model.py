"""``hlora-mer params`` (parameter counts without weights) and ``hlora-mer demo``."""

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
    p.add_argument("--variant", choices=("full", "no_stfa", "no_iffa", "none"), default="full",
                   help="fusion variant (Table 9)")
    p.set_defaults(func=params)

    d = subparsers.add_parser(
        "demo",
        help="run the model end to end on a random clip with the tiny random-init backbone",
        description="A smoke run of HLoRA-MER: the tiny random-init DINOv2-architecture backbone on a random clip.",
    )
    d.add_argument("--backbone", default="test_vit_reg", help="backbone (default: %(default)s, random-init)")
    d.add_argument("--frames", type=int, default=8, help="frames per clip T (default: %(default)s)")
    d.set_defaults(func=demo)


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


def demo(args: argparse.Namespace) -> int:
    import time

    import torch

    from hlora_mer.config import BackboneConfig, ModelConfig
    from hlora_mer.models.backbones import BACKBONES
    from hlora_mer.models.mer_model import build_model, count_parameters

    spec = BACKBONES.get(args.backbone)
    pretrained = spec is not None and spec.hub_id is not None
    cfg = ModelConfig(backbone=BackboneConfig(name=args.backbone, pretrained=pretrained), num_frames=args.frames)
    label = "pretrained weights" if pretrained else "RANDOM-INIT weights (a tiny DINOv2-architecture test model)"
    print(f"backbone: {args.backbone} with {label}")
    model = build_model(cfg).eval()
    clip = torch.randn(1, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():
        logits, attention = model.forward_with_attention(clip)
    elapsed = time.perf_counter() - start
    counts = count_parameters(model)
    print(f"clip {tuple(clip.shape)} -> logits {tuple(logits.shape)} in {elapsed * 1000:.0f} ms")
    print(f"class probabilities: {[round(p, 3) for p in logits.softmax(-1)[0].tolist()]}")
    if attention is not None:
        print("IFFA attention (rows: frame i, columns: neighbour j):")
        for row in attention[0].tolist():
            print("  " + " ".join(f"{a:4.2f}" for a in row))
    print(f"trainable parameters: {counts['trainable']:,} (LoRA {counts['lora']:,}); backbone {counts['backbone']:,}")
    return 0
