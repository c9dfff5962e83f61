"""The frozen-prefix feature cache never serves tokens of a clip that was re-made since they were computed."""

from __future__ import annotations

import numpy as np
import torch

from align_fixtures import make_table, table_row, write_frames
from conftest import TINY_IMAGE
from hlora_mer.preprocess.run import PreprocessParams, preprocess_table
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.data import CacheSource
from train_fixtures import CLASSES, tiny_experiment


def _frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (TINY_IMAGE, TINY_IMAGE, 3), dtype=np.uint8) for _ in range(8)]


def test_a_re_made_aligned_clip_gets_new_tokens(tmp_path) -> None:
    rows = []
    for i in range(3):
        paths = write_frames(tmp_path / "frames" / f"c{i}", _frames(i))
        rows.append(table_row(f"toy/0{i}/c{i}", paths, subject=f"toy/0{i}", label_index=i))
    table = make_table(rows).assign(label=lambda t: [CLASSES[i] for i in t["label_index"]])
    params = PreprocessParams(num_frames=8, size=TINY_IMAGE, detector="none")
    cfg = tiny_experiment(train={"feature_cache_dir": str(tmp_path / "features")})
    from hlora_mer.models.mer_model import build_model

    model = build_model(cfg.model)

    def fill() -> tuple[fc.CachedSource, int]:
        report = preprocess_table(table, tmp_path / "cache", params)
        source = CacheSource(table, report.cache_dir, CLASSES, 8)
        prepared = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
        assert prepared is not None
        return prepared[0], prepared[1].computed

    first, computed = fill()
    assert computed == 3
    before = {s: first.cache.get(s).clone() for s in table["sample_id"]}
    assert fill()[1] == 0  # nothing changed: everything reused
    # The frames of one clip are replaced (same names): preprocessing re-makes its aligned clip ...
    write_frames(tmp_path / "frames" / "c1", _frames(99))
    again, computed = fill()
    # ... and the feature cache computes that clip's tokens again, and only that clip's
    assert computed == 1
    assert not torch.equal(again.cache.get("toy/01/c1"), before["toy/01/c1"])
    for sid in ("toy/00/c0", "toy/02/c2"):
        assert torch.equal(again.cache.get(sid), before[sid])
