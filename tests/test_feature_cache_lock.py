"""Two fills of the same feature cache folder at once compute and write every clip once."""

from __future__ import annotations

import logging
import threading
import time

import torch

from conftest import tiny_model_config
from hlora_mer.models.mer_model import build_model
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.engine import seed_everything
from train_fixtures import tiny_source

FRAMES = 8


def _slow_counting_model(frames_seen: list[int]):
    """A tiny model whose prefix takes long enough for two fills to overlap, and counts the frames it sees."""
    seed_everything(0)
    model = build_model(tiny_model_config())
    prefix = model.prefix

    def slow_prefix(clips: torch.Tensor) -> torch.Tensor:
        frames_seen.append(clips.shape[0] * clips.shape[1])  # (B, T, 3, H, W): B*T frames
        time.sleep(0.15)
        return prefix(clips)

    model.prefix = slow_prefix  # type: ignore[method-assign]
    return model


def _fill_concurrently(tmp_path, workers: int = 2) -> tuple[list[int], list[int], list[fc.FeatureCache], list[str]]:
    source = tiny_source(subjects=2)
    ids = [str(s) for s in source.table["sample_id"]]
    frames_seen: list[int] = []
    model = _slow_counting_model(frames_seen)
    key = fc.cache_key(model, image_size=28, num_frames=FRAMES, preprocess_id="test", dtype="fp32")
    caches = [fc.FeatureCache(key, tmp_path) for _ in range(workers)]  # one object per worker, one folder
    computed = [0] * workers
    start = threading.Barrier(workers)

    def work(i: int) -> None:
        start.wait()
        computed[i] = caches[i].fill(
            model,
            lambda s: source.dataset(s, train=False),
            ids,
            batch_size=2,
            device=torch.device("cpu"),
            num_frames=FRAMES,
            image_size=28,
        )

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return computed, frames_seen, caches, ids


def test_concurrent_fills_compute_every_clip_once(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(fc, "LOCK_WAIT_LOG_S", 0.05)
    with caplog.at_level(logging.INFO, logger=fc.__name__):
        computed, frames_seen, caches, ids = _fill_concurrently(tmp_path)
    assert sum(computed) == len(ids) and sorted(computed) == [0, len(ids)]
    assert sum(frames_seen) == len(ids) * 2 * FRAMES  # plain and flipped, once per clip
    messages = [r.getMessage() for r in caplog.records]
    assert sum("waiting for another process filling" in m for m in messages) == 1
    assert sum("another process filled" in m for m in messages) == 1
    for sid in ids:  # the waiting worker reads what the other one wrote
        torch.testing.assert_close(caches[0].get(sid), caches[1].get(sid), rtol=0, atol=0)
        assert caches[1].problem(sid, tuple(caches[1].get(sid).shape)) is None


def test_a_waiting_fill_computes_only_what_is_still_missing(tmp_path) -> None:
    source = tiny_source(subjects=2)
    ids = [str(s) for s in source.table["sample_id"]]
    frames_seen: list[int] = []
    model = _slow_counting_model(frames_seen)
    key = fc.cache_key(model, image_size=28, num_frames=FRAMES, preprocess_id="test", dtype="fp32")
    kwargs = dict(batch_size=2, device=torch.device("cpu"), num_frames=FRAMES, image_size=28)
    computed: dict[str, int] = {}

    def fill(name: str, wanted: list[str]) -> None:
        cache = fc.FeatureCache(key, tmp_path)
        computed[name] = cache.fill(model, lambda s: source.dataset(s, train=False), wanted, **kwargs)

    first = threading.Thread(target=fill, args=("first", ids[:3]))  # another worker fills half of the clips
    first.start()
    while not frames_seen:  # it holds the lock once it computes
        time.sleep(0.01)
    second = threading.Thread(target=fill, args=("second", ids))
    second.start()
    first.join()
    second.join()
    assert computed == {"first": 3, "second": len(ids) - 3}
    assert sum(frames_seen) == len(ids) * 2 * FRAMES


def test_a_ram_cache_takes_no_lock(monkeypatch) -> None:
    def no_lock(*args, **kwargs):
        raise AssertionError("a RAM cache must not lock")

    monkeypatch.setattr(fc, "FileLock", no_lock)
    frames_seen: list[int] = []
    model = _slow_counting_model(frames_seen)
    source = tiny_source(subjects=1)
    ids = [str(s) for s in source.table["sample_id"]]
    cache = fc.FeatureCache(fc.cache_key(model, image_size=28, num_frames=FRAMES, preprocess_id="t", dtype="fp32"))
    kwargs = dict(batch_size=4, device=torch.device("cpu"), num_frames=FRAMES, image_size=28)
    assert cache.fill(model, lambda s: source.dataset(s, train=False), ids, **kwargs) == len(ids)
    assert cache.fill(model, lambda s: source.dataset(s, train=False), ids, **kwargs) == 0
