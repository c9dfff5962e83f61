"""``hlora-mer synth``: write the SynthME synthetic dataset in the CASME II format."""

from __future__ import annotations

import argparse
import dataclasses


def register(subparsers: argparse._SubParsersAction) -> None:
    from hlora_mer.synthme.generate import SynthConfig

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
    p.add_argument(
        "--video",
        nargs="*",
        metavar="CLIP",
        help="also write clips as mp4 videos (onset to offset, 200 fps) to OUT/videos/subNN/<clip>.mp4: "
        "the clips named (e.g. sub01/EP02_01), or every clip when none is named (give OUT before --video); "
        "needs PyAV (the video extra)",
    )
    p.set_defaults(func=synth)


def synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from hlora_mer.files import check_writable_dir
    from hlora_mer.synthme.generate import ANNOTATION_FILE, VIDEO_FOLDER, SynthConfig, clip_id, generate

    cfg = SynthConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthConfig)})
    check_writable_dir(args.out, "SynthME folder", "choose another output folder")
    total = cfg.subjects * cfg.clips_per_class * 5
    with tqdm(total=total, unit="clip", desc="SynthME", disable=args.quiet) as bar:
        videos = True if args.video == [] else args.video or False
        clips = generate(args.out, cfg, progress=lambda done, _: bar.update(done - bar.n), videos=videos)
    out = Path(args.out)
    print(f"SynthME: {len(clips)} clips, {cfg.subjects} subjects, amplitude {cfg.amplitude:g} px, seed {cfg.seed}")
    print(f"annotation: {out / ANNOTATION_FILE}")
    print(f"frames:     {out / 'Cropped'}/subNN/<clip>/reg_imgN.jpg")
    if videos is True:
        print(f"videos:     {out / VIDEO_FOLDER}/subNN/<clip>.mp4 ({len(clips)} clips)")
    elif videos:
        for clip in clips:
            if clip_id(clip) in {v.strip("/") for v in videos}:
                print(f"video:      {out / VIDEO_FOLDER / clip_id(clip)}.mp4 ({clip.emotion})")
    return 0
