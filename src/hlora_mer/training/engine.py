"""Training for a fixed budget, and prediction; no file I/O besides logging.

The budget is a fixed number of optimisation steps (HLoRA-MER §4.1.3: Adam, lr 1e-3, batch 36, cross
entropy; the official code runs 600 steps). Batches come from a seeded sampler that walks a fresh
permutation of the training set each epoch and draws each clip's horizontal flip from a generator of its
own, so a seed fixes every batch and every flip: the same seed gives the same predictions on CPU. No
random draw of the data path uses torch's global generator, so evaluating during training (on a
validation split, or the leaky test curve) cannot shift a later batch or flip; the global generator,
re-seeded from the fold's seed, drives only the model's own randomness (initialisation, dropout), which
evaluation in eval mode does not touch.

Evaluation points (every ``eval_every`` steps) serve two optional purposes, both outside the result:
choosing the step on a validation split of TRAINING subjects (``select="val"``), and the leaky
"best epoch on the test subject" number some papers report, kept only in a separate column.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import random
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from hlora_mer.config import TrainConfig
from hlora_mer.errors import ConfigError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(seed: int, worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn`` (with ``functools.partial(seed_worker, seed)``): seed it with
    ``seed + 1 + worker_id``. A module-level function, so that spawned workers can unpickle it."""
    seed_everything(seed + 1 + worker_id)


def derive_seed(*parts: int) -> int:
    """A well-mixed 31-bit seed from integers (run seed, fold index, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_device(name: str, *, option: str = "train.device={}") -> torch.device:
    """The device a user named: ``auto`` is cuda when available, else cpu; a named device must be one torch
    knows, and a CUDA device needs CUDA.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (or any device torch parses).
        option: how the user set it, for the message: ``train.device={}`` (a config key), ``--device {}``.

    Raises:
        ConfigError: naming the setting, what is wrong and what to use instead.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"{option.format(name)}: {err}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{option.format(name)}: no CUDA device is available; use {option.format('cpu')} or {option.format('auto')}"
        )
    return device


class FixedStepBatchSampler(Sampler[list[tuple[int, bool]]]):
    """Exactly ``steps`` batches of ``batch_size`` ``(index, flip)`` keys: one seeded permutation per epoch.

    A batch never straddles two epochs; the last, short batch of an epoch is dropped unless the
    dataset is smaller than one batch (then every batch is the whole shuffled set). Each key's flip is
    drawn with probability ``flip_prob`` from a second generator, so the batch order does not depend on
    the flip probability. The datasets read the key (``training.data.unpack_key``) and never draw.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int, flip_prob: float = 0.0) -> None:
        if n < 1:
            raise ValueError("cannot train on an empty training set")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
        self.n, self.batch_size, self.steps, self.seed, self.flip_prob = n, batch_size, steps, seed, flip_prob

    @property
    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[tuple[int, bool]]]:
        gen = torch.Generator().manual_seed(self.seed)
        flips = torch.Generator().manual_seed(derive_seed(self.seed, 1))
        done = 0
        while done < self.steps:
            perm = torch.randperm(self.n, generator=gen).tolist()
            size = min(self.batch_size, self.n)
            for start in range(0, self.steps_per_epoch * size, size):
                batch = perm[start : start + size]
                flip = (torch.rand(len(batch), generator=flips) < self.flip_prob).tolist()
                yield list(zip(batch, flip, strict=True))
                done += 1
                if done == self.steps:
                    return


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack dict samples: ``clip`` -> (B, T, 3, H, W) or cached ``tokens`` -> (B, T, L, d), ``label`` -> (B,),
    ids as lists."""
    key = "tokens" if "tokens" in samples[0] else "clip"
    return {
        key: torch.stack([s[key] for s in samples]),
        "label": torch.tensor([int(s["label"]) for s in samples], dtype=torch.long),
        "sample_id": [str(s["sample_id"]) for s in samples],
        "subject": [str(s.get("subject", "")) for s in samples],
    }


@runtime_checkable
class _PrefixModel(Protocol):
    """A model that also runs from cached prefix tokens (``MERModel``)."""

    def forward_from_prefix(self, tokens: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class _TrainableStateModel(Protocol):
    """A model that names the tensors that train (``MERModel``)."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]: ...


def restore_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a snapshot taken during training (every tensor, or only the trainable ones) back into ``model``.

    Keys that may be absent are exactly the frozen tensors (``requires_grad`` false), which training did not
    change; any other difference is an error, not a silent partial load.

    Raises:
        RuntimeError: when the snapshot lacks a trainable tensor or holds one the model does not have.
    """
    result = model.load_state_dict(state, strict=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable & set(result.missing_keys))
    if missing or result.unexpected_keys:
        raise RuntimeError(
            "the weights of the selected step do not match the model: "
            f"trainable tensors missing {missing or 'none'}, unknown tensors {sorted(result.unexpected_keys) or 'none'}"
        )


def _size(dataset: Dataset) -> int:
    """``len(dataset)``: torch's Dataset declares no ``__len__``; every dataset trained on here has one."""
    assert isinstance(dataset, Sized), f"{type(dataset).__name__} has no length"
    return len(dataset)


def forward_batch(model: nn.Module, batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    """Logits of a collated batch: end to end from ``clip``, or from cached prefix ``tokens`` (B, T, L, d).

    Cached tokens (fp16 by default) are cast to fp32 for the trainable blocks; autocast, when on, then
    picks the compute dtype as it does for the uncached path.
    """
    if "tokens" in batch:
        # cached tokens come only for a model that has forward_from_prefix (the runner checks)
        assert isinstance(model, _PrefixModel), f"{type(model).__name__} cannot run from cached tokens"
        tokens = batch["tokens"].to(device, non_blocking=True).float()
        return model.forward_from_prefix(tokens.flatten(0, 1))
    return model(batch["clip"].to(device, non_blocking=True))


def _loader_options(dataset: Dataset, device: torch.device, num_workers: int) -> dict[str, Any]:
    """Workers and pinned memory; a dataset already on the GPU (cached tokens) needs neither."""
    cache = getattr(dataset, "cache", None)
    on_gpu = getattr(cache, "_device", None) is not None
    if on_gpu:
        return {"num_workers": 0, "pin_memory": False}
    return {"num_workers": num_workers, "pin_memory": device.type == "cuda"}


def train_loader(
    dataset: Dataset,
    sampler: FixedStepBatchSampler,
    *,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    multiprocessing_context: Any = None,
) -> DataLoader:
    """The training batches of ``dataset`` in ``sampler``'s order; worker ``w`` is seeded with ``seed + 1 + w``.

    ``multiprocessing_context``: how workers start (None: the platform's default, ``spawn`` on macOS and
    Windows, so everything handed to the workers must pickle).
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        worker_init_fn=functools.partial(seed_worker, seed) if num_workers else None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        multiprocessing_context=multiprocessing_context if num_workers else None,
    )


@dataclass
class Predictions:
    """Model outputs for a dataset, in dataset order."""

    sample_ids: list[str]
    labels: np.ndarray  # (N,) int
    probs: np.ndarray  # (N, m) float

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=np.int64)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 36,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> Predictions:
    """Softmax probabilities of ``model`` on every sample of ``dataset`` (eval mode, no flips)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    ids: list[str] = []
    labels: list[int] = []
    probs: list[np.ndarray] = []
    # An explicit generator: iterating a DataLoader draws its base seed, which must not come from (and
    # shift) the global generator that training's dropout uses.
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
        pin_memory=_loader_options(dataset, device, 0)["pin_memory"],
    )
    for batch in loader:
        with _autocast(device, precision):
            logits = forward_batch(model, batch, device)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        ids.extend(batch["sample_id"])
        labels.extend(batch["label"].tolist())
    model.train(was_training)
    m = probs[0].shape[1] if probs else 0
    return Predictions(
        ids, np.asarray(labels, dtype=np.int64), np.concatenate(probs) if probs else np.zeros((0, m), dtype=np.float32)
    )


def compute_precision(device: torch.device, precision: str) -> str:
    """The precision ``train.precision`` computes in on ``device``: bf16 / fp16 autocast on CUDA, else fp32."""
    return precision if precision in ("bf16", "fp16") and device.type == "cuda" else "fp32"


def _autocast(device: torch.device, precision: str) -> Any:
    """bf16 / fp16 autocast on CUDA; fp32 (no autocast) otherwise."""
    compute = compute_precision(device, precision)
    if compute != "fp32":
        return torch.autocast("cuda", dtype=torch.bfloat16 if compute == "bf16" else torch.float16)
    return torch.autocast(device.type, enabled=False)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameter; check model.lora / model.backbone.finetune")
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class EvalPoint:
    """Scores at one evaluation point during training."""

    step: int
    val: dict[str, float] | None = None
    test: dict[str, float] | None = None


@dataclass
class TrainResult:
    """What training did: the final loss, the evaluation curve, and which step's weights were kept."""

    steps: int
    final_loss: float
    selected_step: int
    curve: list[EvalPoint] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # the training loss of every step, in order
    leaky_best: dict[str, Any] | None = None  # {"step", "acc", "predictions"}; comparison only


StepCallback = Callable[[int, int, float], None]  # (step, total, loss)


def train_fixed_budget(
    model: nn.Module,
    train_set: Dataset,
    cfg: TrainConfig,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    val_set: Dataset | None = None,
    test_set: Dataset | None = None,
    leaky: bool = False,
    score_fn: Callable[[Predictions], dict[str, float]] | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Train ``model`` in place for exactly ``cfg.steps`` steps.

    Args:
        model: a freshly built model (its trainable parameters are those with ``requires_grad``).
        train_set: dict samples (``clip``, ``label``, ``sample_id``) read by ``(index, flip)`` keys; clips
            are flipped with probability ``train_set.flip_prob`` when ``train_set.train`` is true.
        cfg: the budget.
        seed: seeds the batch order and every random draw of this fold.
        device: where to train.
        val_set: validation samples from training subjects; scored at each evaluation point, and, with
            ``cfg.select == "val"``, the weights of the best validation UF1 are restored at the end.
        test_set: the fold's test samples; only looked at when ``leaky`` (the comparison column).
        leaky: score ``test_set`` at each evaluation point and remember the best-accuracy one.
        score_fn: predictions -> scores (default: accuracy and UF1 from ``evaluation.metrics``).
        on_step: progress hook ``(step, total, loss)``.
    """
    from hlora_mer.evaluation.metrics import scores

    device = torch.device(device)
    seed_everything(seed)
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    flip_prob = float(getattr(train_set, "flip_prob", 0.0)) if getattr(train_set, "train", False) else 0.0
    sampler = FixedStepBatchSampler(_size(train_set), cfg.batch_size, cfg.steps, seed, flip_prob)
    loader = train_loader(train_set, sampler, seed=seed, **_loader_options(train_set, device, cfg.num_workers))
    # fp16 autocast needs loss scaling; bf16 and fp32 do not (the scaler is a no-op when disabled).
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16" and device.type == "cuda")
    eval_every = cfg.eval_every or sampler.steps_per_epoch
    wants_eval = (val_set is not None and _size(val_set) > 0) or (
        leaky and test_set is not None and _size(test_set) > 0
    )

    def default_score(p: Predictions) -> dict[str, float]:
        m = p.probs.shape[1] if p.probs.ndim == 2 and len(p.probs) else 2
        return scores(p.labels, p.preds, m)

    score = score_fn or default_score
    result = TrainResult(steps=cfg.steps, final_loss=math.nan, selected_step=cfg.steps)
    best_val, best_state = -math.inf, None
    loss_value = math.nan
    # The loss is read back (a host-device sync) one step late, so the GPU always has the next step queued.
    pending: tuple[int, torch.Tensor] | None = None

    def report(item: tuple[int, torch.Tensor] | None) -> float:
        if item is None:
            return math.nan
        at, value = item[0], float(item[1])
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at step {at}; lower train.lr")
        result.losses.append(value)
        if on_step is not None:
            on_step(at, cfg.steps, value)
        return value

    for step, batch in enumerate(loader, start=1):
        with _autocast(device, cfg.precision):
            logits = forward_batch(model, batch, device)
        loss = loss_fn(logits.float(), batch["label"].to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            loss_value = report(pending)
            pending = (step, loss.detach())
        else:
            loss_value = report((step, loss.detach()))
        if wants_eval and (step % eval_every == 0 or step == cfg.steps):
            point = EvalPoint(step)
            if val_set is not None and _size(val_set) > 0:
                point.val = score(
                    predict(model, val_set, batch_size=cfg.batch_size, device=device, precision=cfg.precision)
                )
                if cfg.select == "val" and point.val["uf1"] > best_val:
                    best_val = point.val["uf1"]
                    best_state = copy.deepcopy(
                        model.trainable_state_dict() if isinstance(model, _TrainableStateModel) else model.state_dict()
                    )
                    result.selected_step = step
            if leaky and test_set is not None and _size(test_set) > 0:
                test_pred = predict(model, test_set, batch_size=cfg.batch_size, device=device, precision=cfg.precision)
                point.test = score(test_pred)
                # max-over-epochs test accuracy, as the official code's best_acc (first maximum wins)
                if result.leaky_best is None or point.test["acc"] > result.leaky_best["acc"]:
                    result.leaky_best = {"step": step, "acc": point.test["acc"], "predictions": test_pred}
            result.curve.append(point)
            model.train()
    if pending is not None:
        loss_value = report(pending)
    result.final_loss = loss_value
    if cfg.select == "val" and best_state is not None:
        restore_state(model, best_state)
    logger.debug("trained %d steps, final loss %.4f, kept step %d", cfg.steps, loss_value, result.selected_step)
    return result
