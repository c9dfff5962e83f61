"""SynthME: a synthetic micro-expression dataset written in the CASME II distribution format.

The licensed datasets cannot ship with the code, so the demo and the learning benchmark run on this
instead. It goes through the real CASME II loader, preprocessing and protocol code, because it is
written exactly like the owner's cropped release:

    OUT/CASME2-coding-20190701.xlsx          Subject, Filename, (blank), OnsetFrame, ApexFrame, ...
    OUT/Cropped/sub01/EP01_01/reg_img46.jpg  frames onset..offset, numbered like the annotation

Content:

- **Identities**: each subject is the astronaut portrait that ships with scikit-image, warped into a
  different face (width, height, a smooth random shape field, head pose) with its own skin tone and
  lighting direction.
- **Classes**: five localised motions modelled on action units, moving content by ``amplitude``
  pixels at the apex (at 224 px) with an onset -> apex -> offset course: happiness (AU12, lip corners
  up and out), surprise (AU1+2, brows raised), disgust (AU9+10, nose wrinkle and upper lip raise),
  repression (AU17+24, chin raised, lips pressed), others (AU4, brows lowered and drawn together).
- **Nuisances shared by every class**: sub-pixel head jitter, blinks, illumination flicker and sensor
  noise, so that a model must find the motion rather than a shortcut.

Everything is a pure function of the seed. ``amplitude=0`` keeps every nuisance but removes the
motion: the control that proves a model learns the motion (its scores fall to chance).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hlora_mer.errors import ConfigError, UserError
from hlora_mer.files import atomic_open, atomic_write_dir

logger = logging.getLogger(__name__)

CLASSES = ("happiness", "surprise", "disgust", "repression", "others")
ACTION_UNITS = {"happiness": "12", "surprise": "1+2", "disgust": "9+10", "repression": "17+24", "others": "4"}
OBJECTIVE_CLASS = {"happiness": 1, "surprise": 5, "disgust": 3, "repression": 2, "others": 4}
ANNOTATION_FILE = "CASME2-coding-20190701.xlsx"
HEADER = (
    "Subject",
    "Filename",
    None,
    "OnsetFrame",
    "ApexFrame",
    "OffsetFrame",
    None,
    "Action Units",
    "Estimated Emotion",
    "Objective Classes",
)

# The face in skimage.data.astronaut() (512 x 512): the crop that frames it, and landmarks measured once
# with dlib's 68-point model (subject's right = image left).
_CROP = (136.0, 35.0, 180.0)  # x0, y0, side in source pixels
_LANDMARKS = {
    "right_eye": (203.0, 101.5),
    "left_eye": (246.5, 104.0),
    "right_brow_outer": (188.0, 91.0),
    "right_brow_inner": (214.0, 91.0),
    "left_brow_inner": (238.0, 92.0),
    "left_brow_outer": (263.0, 96.0),
    "nose_root": (225.0, 108.0),
    "nose_left": (234.0, 132.0),
    "nose_right": (214.0, 131.0),
    "mouth_right": (201.0, 139.0),
    "mouth_left": (246.0, 141.0),
    "upper_lip": (224.0, 140.0),
    "lower_lip": (222.0, 156.0),
    "chin": (220.0, 176.0),
}

# Each class: (landmark, direction of motion (dx, dy), radius in face-frame pixels at 224 px).
_MOTIONS: dict[str, tuple[tuple[str, tuple[float, float], float], ...]] = {
    "happiness": (("mouth_right", (-0.6, -0.8), 9.0), ("mouth_left", (0.6, -0.8), 9.0)),
    "surprise": (
        ("right_brow_outer", (0.0, -1.0), 10.0),
        ("right_brow_inner", (0.0, -1.0), 10.0),
        ("left_brow_inner", (0.0, -1.0), 10.0),
        ("left_brow_outer", (0.0, -1.0), 10.0),
    ),
    "disgust": (("nose_left", (-0.3, -1.0), 8.0), ("nose_right", (0.3, -1.0), 8.0), ("upper_lip", (0.0, -1.0), 9.0)),
    "repression": (("chin", (0.0, -1.0), 12.0), ("lower_lip", (0.0, -0.8), 8.0), ("upper_lip", (0.0, 0.5), 7.0)),
    "others": (
        ("right_brow_inner", (0.7, 0.7), 9.0),
        ("left_brow_inner", (-0.7, 0.7), 9.0),
        ("nose_root", (0.0, 0.6), 8.0),
    ),
}
_REFERENCE_SIZE = 224  # amplitudes and radii are given at this frame size


@dataclass(frozen=True)
class SynthConfig:
    """What SynthME generates; every number is at 224 x 224 and scales with ``frame_size``."""

    subjects: int = field(default=12, metadata={"help": "number of subjects (distinct identities)"})
    clips_per_class: int = field(default=3, metadata={"help": "clips of each class per subject"})
    amplitude: float = field(
        default=2.5,
        metadata={"help": "motion at the apex, in pixels at 224 px: the difficulty knob; 0 removes the motion"},
    )
    min_frames: int = field(default=24, metadata={"help": "shortest clip, frames (CASME II: 24)"})
    max_frames: int = field(default=40, metadata={"help": "longest clip, frames"})
    frame_size: int = field(default=240, metadata={"help": "side of the square cropped frames written"})
    jitter: float = field(default=0.15, metadata={"help": "head jitter per frame, pixels (standard deviation)"})
    flicker: float = field(default=0.01, metadata={"help": "illumination flicker per frame (relative std)"})
    noise: float = field(default=2.0, metadata={"help": "sensor noise, grey levels (std, of 255)"})
    blink_probability: float = field(default=0.5, metadata={"help": "chance that a clip holds a blink"})
    seed: int = field(default=0, metadata={"help": "everything is a function of this seed"})

    def __post_init__(self) -> None:
        if self.subjects < 2 or self.clips_per_class < 1:
            raise ConfigError("SynthME needs at least 2 subjects and 1 clip per class")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ConfigError(f"need 2 <= min_frames <= max_frames; got {self.min_frames}, {self.max_frames}")
        if self.amplitude < 0:
            raise ConfigError(f"amplitude must be >= 0; got {self.amplitude}")


@dataclass(frozen=True)
class Identity:
    """One subject's face: a geometric warp of the base face and its colours."""

    scale: tuple[float, float]
    rotation: float  # radians
    shift: tuple[float, float]
    shape_field: np.ndarray  # (S, S, 2) smooth displacement, face-frame pixels
    tint: tuple[float, float, float]
    light_direction: float  # radians
    light_strength: float


@dataclass(frozen=True)
class ClipSpec:
    subject: str
    filename: str
    emotion: str
    onset: int
    apex: int
    offset: int


SYNTH_INSTALL_HINT = "install it with: pip install 'hlora-mer[synth]' (or: pip install scikit-image)"
VIDEO_FOLDER = "videos"
VIDEO_FPS = 200  # CASME II's frame rate: a 24-40 frame clip lasts 0.12-0.2 s, like a micro-expression


def _base_image() -> np.ndarray:
    try:
        from skimage import data
    except ImportError as err:
        raise UserError(
            f"SynthME draws its faces from scikit-image's astronaut portrait, but scikit-image is not installed "
            f"({err}); {SYNTH_INSTALL_HINT}"
        ) from None
    return data.astronaut().astype(np.float32) / 255.0  # (512, 512, 3)


def _face_point(name: str, size: int) -> np.ndarray:
    x0, y0, side = _CROP
    x, y = _LANDMARKS[name]
    return np.array([(x - x0) / side * size, (y - y0) / side * size])


def _smooth_field(rng: np.random.Generator, size: int, amplitude: float, cells: int = 4) -> np.ndarray:
    """A low-frequency random displacement field ``(size, size, 2)`` (bicubic-upsampled noise)."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.normal(0.0, amplitude, size=(1, 2, cells, cells)).astype(np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine[0].permute(1, 2, 0).numpy()


def make_identity(rng: np.random.Generator, size: int) -> Identity:
    unit = size / _REFERENCE_SIZE
    return Identity(
        scale=(float(rng.uniform(0.88, 1.1)), float(rng.uniform(0.9, 1.1))),
        rotation=float(np.deg2rad(rng.uniform(-8, 8))),
        shift=(float(rng.uniform(-6, 6) * unit), float(rng.uniform(-6, 6) * unit)),
        shape_field=_smooth_field(rng, size, 3.0 * unit),
        tint=(float(rng.uniform(0.8, 1.15)), float(rng.uniform(0.7, 1.05)), float(rng.uniform(0.6, 1.0))),
        light_direction=float(rng.uniform(0, 2 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.35)),
    )


def motion_field(emotion: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-amplitude displacement ``(size, size, 2)`` of one class, with per-clip variation."""
    unit = size / _REFERENCE_SIZE
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((size, size, 2), np.float32)
    for landmark, (dx, dy), radius in _MOTIONS[emotion]:
        centre = _face_point(landmark, size) + rng.normal(0, 1.5 * unit, size=2)
        strength = rng.uniform(0.75, 1.25)  # asymmetry and per-clip intensity
        r = radius * unit * rng.uniform(0.85, 1.15)
        bump = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * r * r)) * strength
        out[..., 0] += bump * dx
        out[..., 1] += bump * dy
    return out


def time_course(n_frames: int, apex_index: int) -> np.ndarray:
    """Motion strength per frame: 0 at onset, 1 at the apex, back towards 0 at the offset."""
    t = np.arange(n_frames, dtype=np.float64)
    rise = np.sin(0.5 * np.pi * np.clip(t / max(apex_index, 1), 0, 1)) ** 2
    fall = np.cos(0.5 * np.pi * np.clip((t - apex_index) / max(n_frames - 1 - apex_index, 1), 0, 1)) ** 2
    return np.where(t <= apex_index, rise, 0.15 + 0.85 * fall).astype(np.float32)


def render_clip(
    base: np.ndarray,
    identity: Identity,
    emotion: str,
    n_frames: int,
    apex_index: int,
    cfg: SynthConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(n_frames, S, S, 3)`` uint8 frames of one clip."""
    import torch
    import torch.nn.functional as F

    size = cfg.frame_size
    unit = size / _REFERENCE_SIZE
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2.0
    # Output pixel -> face frame: undo the identity's pose (rotation, scale, shift) and shape.
    cos, sin = math.cos(identity.rotation), math.sin(identity.rotation)
    px, py = xs - centre - identity.shift[0], ys - centre - identity.shift[1]
    fx = (cos * px + sin * py) / identity.scale[0] + centre
    fy = (-sin * px + cos * py) / identity.scale[1] + centre
    face = np.stack([fx, fy], -1) + identity.shape_field  # (S, S, 2)

    course = time_course(n_frames, apex_index) * cfg.amplitude * unit
    field_ = motion_field(emotion, size, rng)
    displacement = course[:, None, None, None] * field_[None]  # (T, S, S, 2)
    if rng.random() < cfg.blink_probability:
        blink = np.zeros((size, size, 2), np.float32)
        for eye in ("right_eye", "left_eye"):
            c = _face_point(eye, size) - np.array([0, 2.5 * unit])
            blink[..., 1] += np.exp(-((xs - c[0]) ** 2 + 2.5 * (ys - c[1]) ** 2) / (2 * (6 * unit) ** 2))
        start, length = int(rng.integers(0, n_frames)), int(rng.integers(4, 10))
        lid = np.clip(1 - np.abs(np.arange(n_frames) - start - length / 2) / (length / 2), 0, 1) * 4 * unit
        displacement = displacement + lid[:, None, None, None] * blink[None]
    jitter = rng.normal(0, cfg.jitter * unit, size=(n_frames, 1, 1, 2)).astype(np.float32)
    # Content moves by +displacement: sample the source at (face - displacement).
    src = face[None] - displacement - jitter  # (T, S, S, 2) face-frame coordinates
    x0, y0, side = _CROP
    src_x = x0 + src[..., 0] / size * side
    src_y = y0 + src[..., 1] / size * side
    h, w = base.shape[:2]
    grid = np.stack([(src_x + 0.5) / w * 2 - 1, (src_y + 0.5) / h * 2 - 1], -1).astype(np.float32)
    image = torch.from_numpy(base).permute(2, 0, 1)[None].expand(n_frames, -1, -1, -1)
    frames = (
        F.grid_sample(image, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=False)
        .permute(0, 2, 3, 1)
        .numpy()
    )  # (T, S, S, 3)

    direction = np.array([math.cos(identity.light_direction), math.sin(identity.light_direction)])
    ramp = ((xs - centre) * direction[0] + (ys - centre) * direction[1]) / size
    light = 1.0 + identity.light_strength * ramp  # (S, S)
    flicker = 1.0 + rng.normal(0, cfg.flicker, size=(n_frames, 1, 1, 1))
    frames = frames * np.asarray(identity.tint)[None, None, None] * light[None, ..., None] * flicker
    frames = frames * 255.0 + rng.normal(0, cfg.noise, size=frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def plan_clips(cfg: SynthConfig, rng: np.random.Generator) -> list[ClipSpec]:
    """The annotation rows: every subject gets ``clips_per_class`` clips of each class, in random order."""
    clips = []
    for s in range(cfg.subjects):
        emotions = [e for e in CLASSES for _ in range(cfg.clips_per_class)]
        rng.shuffle(emotions)
        for k, emotion in enumerate(emotions):
            length = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
            onset = int(rng.integers(1, 300))
            apex = onset + int(round((length - 1) * rng.uniform(0.3, 0.6)))
            clips.append(
                ClipSpec(
                    f"{s + 1:02d}",
                    f"EP{k + 1:02d}_{int(rng.integers(1, 10)):02d}",
                    emotion,
                    onset,
                    apex,
                    onset + length - 1,
                )
            )
    return clips


def write_annotation(clips: list[ClipSpec], path: Path) -> None:
    """The coding spreadsheet, laid out like the owner's (text subjects, blank-header columns)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    sheet.append(list(HEADER))
    for c in clips:
        sheet.append(
            [
                c.subject,
                c.filename,
                None,
                c.onset,
                c.apex,
                c.offset,
                None,
                ACTION_UNITS[c.emotion],
                c.emotion,
                OBJECTIVE_CLASS[c.emotion],
            ]
        )
    with atomic_open(path, "wb") as handle:
        book.save(handle)


def clip_id(clip: ClipSpec) -> str:
    """The clip's id as its folder under ``Cropped/`` names it: ``sub01/EP02_01``."""
    return f"sub{clip.subject}/{clip.filename}"


def video_path(out: str | Path, clip: ClipSpec) -> Path:
    """Where ``generate(..., videos=...)`` writes the clip as a video: ``OUT/videos/sub01/EP02_01.mp4``."""
    return Path(out) / VIDEO_FOLDER / f"sub{clip.subject}" / f"{clip.filename}.mp4"


def _write_clip_video(path: Path, frames: np.ndarray) -> None:
    """The clip's frames as an H.264 mp4 at CASME II's 200 fps, whole or absent."""
    import os

    from hlora_mer.data.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write_video(partial, frames, fps=VIDEO_FPS)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _videos_wanted(clips: list[ClipSpec], videos: bool | Collection[str], frame_size: int) -> set[str]:
    """The ids of the clips to write as videos; an id SynthME does not make is a mistake, said before any work."""
    ids = [clip_id(c) for c in clips]
    if isinstance(videos, bool):
        wanted = set(ids) if videos else set()
    else:
        wanted = {v.strip("/") for v in videos}
        unknown = sorted(wanted - set(ids))
        if unknown:
            shown = ", ".join(ids[:6])
            raise ConfigError(
                f"--video: SynthME with these settings makes no clip {', '.join(unknown)}; its clips are "
                f"{shown}, ... ({len(ids)} in all; their ids are in the annotation file that the same command without "
                "--video writes); name one of them, or give --video alone for every clip"
            )
    if wanted and frame_size % 2:
        raise ConfigError(f"--video needs an even --frame-size (H.264 halves the colour planes); got {frame_size}")
    if wanted:
        try:
            import av  # noqa: F401
        except ImportError:
            raise UserError(
                "writing SynthME clips as videos needs PyAV; install it with: pip install 'hlora-mer[video]' "
                "(or: pip install av)"
            ) from None
    return wanted


def generate(
    out: str | Path,
    cfg: SynthConfig = SynthConfig(),
    progress: Callable[[int, int], None] | None = None,
    videos: bool | Collection[str] = False,
) -> list[ClipSpec]:
    """Write SynthME into ``out`` and return its clips. ``progress(done, total)`` is called per clip.

    ``videos``: also write these clips (ids such as ``sub01/EP02_01``; ``True``: every clip) as mp4
    videos of the clip's frames (onset to offset, H.264 at 200 fps, 4:2:0 colour), to
    ``OUT/videos/sub01/EP02_01.mp4`` (:func:`video_path`); frame 0 of the video is the onset frame.
    """
    from PIL import Image

    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    base = _base_image()
    identities = {f"{s + 1:02d}": make_identity(rng, cfg.frame_size) for s in range(cfg.subjects)}
    clips = plan_clips(cfg, rng)
    wanted = _videos_wanted(clips, videos, cfg.frame_size)
    out.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        clip_rng = np.random.default_rng([cfg.seed, i])  # each clip is reproducible on its own
        n = clip.offset - clip.onset + 1
        frames = render_clip(base, identities[clip.subject], clip.emotion, n, clip.apex - clip.onset, cfg, clip_rng)

        def fill(folder: Path, frames: np.ndarray = frames, onset: int = clip.onset) -> None:
            for k, frame in enumerate(frames):
                Image.fromarray(frame).save(folder / f"reg_img{onset + k}.jpg", quality=95)

        atomic_write_dir(out / "Cropped" / f"sub{clip.subject}" / clip.filename, fill)  # a clip is whole or absent
        if clip_id(clip) in wanted:
            _write_clip_video(video_path(out, clip), frames)
        if progress is not None:
            progress(i + 1, len(clips))
    write_annotation(clips, out / ANNOTATION_FILE)
    logger.info("SynthME: %d clips of %d subjects written to %s", len(clips), cfg.subjects, out)
    return clips
