"""Two processes writing entries into one clip-cache manifest at once lose none of each other's entries."""

from __future__ import annotations

import json
import multiprocessing

from hlora_mer.preprocess.cache import ClipCache

NAME = "t5_s32_none_apex_test"
PARAMS = {"num_frames": 5, "size": 32}
ENTRIES = 60


def _add_entries(root: str, prefix: str, start, count: int) -> None:
    """Child process: record ``count`` clips one by one, flushing the manifest after each."""
    cache = ClipCache(root, NAME, PARAMS).open()
    start.wait()
    for i in range(count):
        cache.record_done(f"{prefix}/{i:03d}", {"fingerprint": f"{prefix}-{i}"})
        cache.flush()


def test_two_processes_flushing_the_same_manifest_lose_no_entry(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_add_entries, args=(str(tmp_path), p, start, ENTRIES)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    clips = json.loads((tmp_path / NAME / "manifest.json").read_text())["clips"]
    expected = {f"{p}/{i:03d}": f"{p}-{i}" for p in ("a", "b") for i in range(ENTRIES)}
    assert {sid: entry["fingerprint"] for sid, entry in clips.items()} == expected
    # What a process holds after its last flush is the merged manifest too.
    reread = ClipCache(tmp_path, NAME, PARAMS).open()
    assert set(reread.clips) == set(expected)
