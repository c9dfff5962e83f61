"""The frozen-prefix feature cache gives the same predictions and gradients as the end-to-end model."""

from __future__ import annotations

import logging
from collections import namedtuple

import pytest
import torch

from conftest import tiny_model_config
from hlora_mer.config import TrainConfig
from hlora_mer.errors import ConfigError
from hlora_mer.models.mer_model import build_model
from hlora_mer.training import feature_cache as fc
from hlora_mer.training.engine import collate, forward_batch, predict, seed_everything, train_fixed_budget
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_experiment, tiny_source


def _cached(source, model, dtype: str = "fp32", root=None) -> fc.CachedSource:
    cfg = tiny_experiment(train={"feature_cache_dtype": dtype, "feature_cache_dir": str(root) if root else None})
    prepared = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert prepared is not None
    return prepared[0]


def _model(seed: int = 0, **overrides):
    seed_everything(seed)
    return build_model(tiny_model_config(**overrides))


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("last_n", [2, 0])
def test_cached_tokens_are_the_prefix_of_the_plain_and_flipped_clip(last_n: int) -> None:
    source = tiny_source(subjects=1)
    model = _model(lora={"last_n_blocks": last_n})
    cached = _cached(source, model)
    sid = str(source.table["sample_id"][0])
    clip = source.clips[:1]
    with torch.no_grad():
        plain, flipped = model.prefix(clip), model.prefix(clip.flip(-1))
    if last_n == 0:  # only the final norm follows: the CLS token is all that is stored
        plain, flipped = plain[:, :1], flipped[:, :1]
    stored = cached.cache.get(sid)
    assert stored.shape == (2, 8, *plain.shape[1:])
    torch.testing.assert_close(stored[0], plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(stored[1], flipped, rtol=0, atol=1e-6)


# fp16: the rounding of a stored token can flip a near-tie of the max pooling over time, which sends that
# element's gradient to another frame (a few % of one fusion weight's gradient on the 5-block tiny model)
@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-5), ("fp16", 5e-2)])
@pytest.mark.parametrize("last_n", [2, 0])
def test_predictions_and_gradients_with_the_cache_equal_those_without(dtype: str, tol: float, last_n: int) -> None:
    source = tiny_source(subjects=2)
    ids = list(source.table["sample_id"])
    model = _model(lora={"last_n_blocks": last_n})
    cached = _cached(source, model, dtype)
    plain_set, cached_set = source.dataset(ids, train=True), cached.dataset(ids, train=True)

    def step(dataset) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seed_everything(3)  # the same fusion dropout draws on both paths
        batch = collate([dataset[(i, i % 2 == 0)] for i in range(len(dataset))])  # half of them flipped
        model.train()
        model.zero_grad(set_to_none=True)
        logits = forward_batch(model, batch, torch.device("cpu"))
        torch.nn.functional.cross_entropy(logits, batch["label"]).backward()
        return logits.detach(), _grads(model)

    logits_a, grads_a = step(plain_set)
    logits_b, grads_b = step(cached_set)
    torch.testing.assert_close(logits_b, logits_a, rtol=tol, atol=tol)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = grads_a[name].abs().max().item() + 1e-12
        torch.testing.assert_close(grads_b[name] / scale, grads_a[name] / scale, rtol=tol, atol=tol, msg=name)


def test_training_with_the_fp32_cache_equals_training_without() -> None:
    source = tiny_source(subjects=2)
    ids = list(source.table["sample_id"])
    cfg = TrainConfig(steps=4, batch_size=4, device="cpu")
    cached = _cached(source, _model(0), "fp32")
    results = []
    for src in (source, cached):
        model = _model(0)
        train_fixed_budget(model, src.dataset(ids, train=True), cfg, seed=11)
        pred = predict(model, src.dataset(ids, train=False), batch_size=4)
        results.append((pred, model.trainable_state_dict()))
    (pa, sa), (pb, sb) = results
    assert pa.sample_ids == pb.sample_ids
    torch.testing.assert_close(torch.from_numpy(pb.probs), torch.from_numpy(pa.probs), rtol=1e-5, atol=1e-6)
    for name in sa:
        torch.testing.assert_close(sb[name], sa[name], rtol=1e-5, atol=1e-6, msg=name)


def test_disk_cache_is_reused_and_the_key_separates_settings(tmp_path) -> None:
    source = tiny_source(subjects=1)
    model = _model(0)
    first = _cached(source, model, "fp16", tmp_path)
    cfg = tiny_experiment(train={"feature_cache_dir": str(tmp_path)})
    again = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert again is not None and again[1].computed == 0 and again[1].clips == len(source.table)
    assert again[0].cache.dir == first.cache.dir
    assert (
        again[1].bytes
        == len(source.table) * 2 * 8 * first.cache.get(str(source.table["sample_id"][0])).shape[-2] * 32 * 2
    )
    # another dtype, another N_l, other weights or other clips: another key folder
    other_dtype = _cached(source, model, "fp32", tmp_path)
    other_depth = _cached(source, _model(0, lora={"last_n_blocks": 1}), "fp16", tmp_path)
    other_weights = _cached(source, _model(0, backbone={"init_seed": 5}), "fp16", tmp_path)
    changed = tiny_source(subjects=1)
    changed.clips = changed.clips + 1
    other_clips = _cached(changed, model, "fp16", tmp_path)
    dirs = {c.cache.dir for c in (first, other_dtype, other_depth, other_weights, other_clips)}
    assert len(dirs) == 5


def test_full_finetuning_and_the_switch_bypass_the_cache(caplog) -> None:
    source = tiny_source(subjects=1)
    full = _model(0, backbone={"finetune": "full"})
    assert not fc.prefix_is_frozen(full)
    with caplog.at_level(logging.INFO):
        assert fc.prepare_cached_source(tiny_experiment(), source, full, torch.device("cpu")) is None
        assert (
            fc.prepare_cached_source(
                tiny_experiment(train={"feature_cache": False}), source, _model(0), torch.device("cpu")
            )
            is None
        )
    assert "finetune=full" in caplog.text and "feature_cache=false" in caplog.text


def test_a_full_disk_gives_a_clear_error(tmp_path, monkeypatch) -> None:
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(fc.shutil, "disk_usage", lambda _: Usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(ConfigError, match="feature cache needs .* only .* free.*feature_cache=false"):
        _cached(tiny_source(subjects=1), _model(0), "fp16", tmp_path)


def test_run_experiment_uses_the_cache_by_default_and_says_so(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO):
        run_experiment(tiny_experiment(), tmp_path / "run", tiny_source(subjects=2))
    assert "frozen-prefix feature cache: on" in caplog.text


def test_a_truncated_or_damaged_feature_file_is_recomputed_and_logged(tmp_path, caplog) -> None:
    source = tiny_source(subjects=1)
    model = _model(0)
    first = _cached(source, model, "fp16", tmp_path)
    ids = [str(s) for s in source.table["sample_id"]]
    stored = {sid: first.cache.get(sid).clone() for sid in ids}
    truncated, flipped, untouched = (first.cache.path(sid) for sid in ids[:3])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = flipped.read_bytes()
    flipped.write_bytes(data[:-1] + bytes([data[-1] ^ 0x01]))  # same size, still loads: only the checksum tells
    cfg = tiny_experiment(train={"feature_cache_dtype": "fp16", "feature_cache_dir": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="hlora_mer.training.feature_cache"):
        again = fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))
    assert again is not None and again[1].computed == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 stored file(s)" in warnings[0] and "recomputed" in warnings[0]
    assert ids[0] in warnings[0] and "truncated" in warnings[0] and ids[1] in warnings[0]
    for sid in ids:
        torch.testing.assert_close(again[0].cache.get(sid), stored[sid], rtol=0, atol=0)
    # A file of an older cache without its checksum is kept (its header and size are right) and gets one.
    checksum = untouched.with_name(untouched.name + ".sha256")
    checksum.unlink()
    assert fc.prepare_cached_source(cfg, source, model, torch.device("cpu"))[1].computed == 0
    assert checksum.is_file()
