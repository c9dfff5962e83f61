"""``hlora-mer export``: a trained model as a PEFT adapter, a merged transformers folder, or ONNX.

Layouts and how to load each: ``docs/export.md``.
"""

from __future__ import annotations

import argparse

# hlora_mer.inference.export's FORMATS and ONNX_TOLERANCE, repeated so that building the parser imports no torch
# (tests/test_export.py checks that they agree).
FORMATS = ("peft", "merged", "onnx")
ONNX_TOLERANCE = 1e-4


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a trained model as a PEFT adapter, a merged transformers folder or ONNX, with a model card",
        description="Export the checkpoint of a run folder (one trained on every subject, eval.protocol=all), a "
        "fold folder or a checkpoint folder. peft: the LoRA as an adapter for peft.PeftModel.from_pretrained; "
        "merged: the LoRA folded into a transformers DINOv2 folder; onnx: the whole model, checked with "
        "onnxruntime. Each export holds the fusion/head (or the whole graph), the config, the labels and a "
        "README.md model card. See docs/export.md.",
    )
    p.add_argument("model", metavar="RUN_OR_CHECKPOINT", help="run folder, fold folder or checkpoint folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the export folder to create")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds an earlier export")
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="accept a backbone whose weights are not the ones the checkpoint was trained on",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=ONNX_TOLERANCE,
        help="onnx: largest accepted difference between onnxruntime's and PyTorch's probabilities "
        "(default: %(default)g)",
    )
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from hlora_mer.inference.export import export_model

    result = export_model(
        args.model,
        args.format,
        args.output,
        force=args.force,
        allow_mismatch=args.allow_mismatch,
        tolerance=args.tolerance,
    )
    for rel in result.files:
        path = result.directory / rel
        print(f"wrote {path} ({_size(path.stat().st_size)})")
    for note in result.notes:
        print(f"note: {note}")
    if result.onnx_max_difference is not None:
        print(
            f"onnxruntime matches PyTorch: max |difference| in probability {result.onnx_max_difference:.2g} "
            f"(tolerance {result.onnx_tolerance:g})"
        )
    print(f"exported {args.format} to {result.directory}; how to load it: {result.directory / 'README.md'}")
    return 0


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
