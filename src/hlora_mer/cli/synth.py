"""``hlora-mer synth``: write the SynthME synthetic dataset in the CASME II format."""

from __future__ import annotations

import argparse
import dataclasses


def register(subparsers: argparse._SubParsersAction) -> None:
    from hlora_mer.synth import SynthConfig

    p = subparsers.add_parser(
        "synth",
        help="write SynthME, a synthetic micro-expression dataset in the CASME II distribution format",
        description="Write SynthME into OUT: CASME2-coding-20190701.xlsx plus Cropped/subNN/<clip>/reg_imgN.jpg.",
    )
    p.add_argument("out", help="output folder (a CASME II root for 'hlora-mer data' and 'preprocess')")
    for f in dataclasses.fields(SynthConfig):
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            help=f"{f.metadata['help']} (default: %(default)s)",
        )
    p.set_defaults(func=synth)


def synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from hlora_mer.files import check_writable_dir
    from hlora_mer.synth import ANNOTATION_FILE, SynthConfig, generate

    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    check_writable_dir(args.out, "SynthME folder", "choose another output folder")
    total = cfg.subjects * cfg.clips_per_class * 5
    with tqdm(total=total, unit="clip", desc="SynthME", disable=args.quiet) as bar:
        clips = generate(args.out, cfg, progress=lambda done, _: bar.update(done - bar.n))
    out = Path(args.out)
    print(f"SynthME: {len(clips)} clips, {cfg.subjects} subjects, amplitude {cfg.amplitude:g} px, seed {cfg.seed}")
    print(f"annotation: {out / ANNOTATION_FILE}")
    print(f"frames:     {out / 'Cropped'}/subNN/<clip>/reg_imgN.jpg")
    return 0
