"""`hlora-mer synth --video`: a SynthME clip as an mp4 that decodes to the clip, and clear messages
when scikit-image (synth, demo) is missing or a clip id is not one SynthME makes."""

import sys

import numpy as np
import pytest
from PIL import Image

from hlora_mer.cli import main
from hlora_mer.synthme.generate import SynthConfig, clip_id, generate, video_path

pytest.importorskip("av")

from hlora_mer.data.video import count_video_frames, read_video_frames  # noqa: E402

# Not the defaults: 10-14 frames, 64 px, seed 3.
SMALL = SynthConfig(subjects=2, clips_per_class=1, min_frames=10, max_frames=14, frame_size=64, seed=3)
SMALL_ARGS = ["--subjects", "2", "--clips-per-class", "1", "--min-frames", "10", "--max-frames", "14"]
SMALL_ARGS += ["--frame-size", "64", "--seed", "3"]


def jpeg_frames(root, clip):
    folder = root / "Cropped" / f"sub{clip.subject}" / clip.filename
    return np.stack(
        [np.asarray(Image.open(folder / f"reg_img{n}.jpg")) for n in range(clip.onset, clip.offset + 1)]
    ).astype(np.float64)


def test_the_chosen_clip_is_written_as_a_video_of_its_own_frames(tmp_path):
    plan = generate(tmp_path / "plan", SMALL)
    chosen, other = plan[3], plan[7]  # another subject's clip, of another length
    assert chosen.offset - chosen.onset != other.offset - other.onset
    clips = generate(tmp_path / "out", SMALL, videos=[clip_id(chosen)])
    assert clips == plan
    path = video_path(tmp_path / "out", chosen)
    assert path == tmp_path / "out" / "videos" / f"sub{chosen.subject}" / f"{chosen.filename}.mp4"
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.mp4")) == [path.name]  # only the chosen one

    n = chosen.offset - chosen.onset + 1
    assert count_video_frames(path) == n
    decoded = read_video_frames(path, range(n)).astype(np.float64)
    assert decoded.shape == (n, 64, 64, 3)
    # Frame for frame the clip, in order: each decoded frame is nearest (in luma) to its own written frame,
    # not to a neighbour (each frame has its own sensor noise) nor to another clip's frame.
    luma = np.array([0.299, 0.587, 0.114])
    own, others = jpeg_frames(tmp_path / "out", chosen) @ luma, jpeg_frames(tmp_path / "out", other) @ luma
    candidates = np.concatenate([own, others])
    for k, frame in enumerate(decoded @ luma):
        errors = np.abs(candidates - frame).mean(axis=(1, 2))
        assert errors.argmin() == k and errors[k] < 2.5


def test_cli_video_alone_writes_every_clip_and_an_unknown_id_writes_nothing(tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["synth", str(out), *SMALL_ARGS, "--video"]) == 0
    clips = generate(tmp_path / "plan", SMALL)
    assert sorted((out / "videos").rglob("*.mp4")) == sorted(video_path(out, c) for c in clips)
    assert "videos:" in capsys.readouterr().out

    bad = tmp_path / "bad"
    assert main(["synth", str(bad), *SMALL_ARGS, "--video", "sub01/EP99_99"]) == 2
    err = capsys.readouterr().err
    assert "makes no clip sub01/EP99_99" in err and clip_id(clips[0]) in err and "Traceback" not in err
    assert not bad.exists()


@pytest.mark.parametrize("command", [["synth", "{out}"], ["demo", "--workdir", "{out}", "--subjects", "2"]])
def test_without_scikit_image_synth_and_demo_say_how_to_install_it(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "skimage", None)  # an import of skimage now fails, as when not installed
    out = tmp_path / "w"
    assert main([c.format(out=out) for c in command]) == 2
    err = capsys.readouterr().err
    assert "scikit-image is not installed" in err and "pip install 'hlora-mer[synth]'" in err
    assert "Traceback" not in err and "ModuleNotFoundError" not in err.split("(")[0]
    assert not (out / "Cropped").exists() and not list(out.glob("synthme-*/Cropped"))
