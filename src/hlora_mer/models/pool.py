"""Load a backbone once per process and give every model a fresh copy of it.

A LOSO run builds a new model per fold, and one more for the frozen-prefix feature cache; building each
with :func:`~hlora_mer.models.backbones.build_backbone` re-reads the weights every time (4.4 GB for
ViT-g/14). A :class:`BackbonePool` keeps the pristine backbone it loaded, keyed by (name, pretrained,
init_seed), and hands out deep copies: LoRA injection, merging or full fine-tuning of one model never
touches the kept backbone or another model. It keeps at most ``max_size`` backbones (the most recently
used), so a sweep over backbones does not hold them all.

A copy equals a fresh load only if loading left the global random state alone: the runner seeds it just
before building a fold's model, and the LoRA, fusion and head initialisation draw from it next. Random-init
backbones, the Hugging Face cache and local folders leave it alone; a backbone whose load draws from it
(the packaged loader initialises the architecture before reading its tiny weights) is loaded every time
and not kept, so every model, and so every result, is exactly what a fresh load gives.

Under a ``torch.device("meta")`` (or any non-CPU default device) context nothing is kept: the backbone is
built as :func:`build_backbone` builds it.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from hlora_mer.config import ModelConfig
from hlora_mer.models import backbones
from hlora_mer.models.backbones import BackboneSpec, DinoBackbone
from hlora_mer.models.mer_model import MERModel, build_model

logger = logging.getLogger(__name__)


def _weights_stamp(name: str, spec: BackboneSpec, pretrained: bool) -> tuple[tuple[str, int, int, int], ...]:
    """Size, mtime and inode of the files a pretrained load reads from disk (packaged or local folder)."""
    if not pretrained:
        return ()
    if spec.weights_file is not None:
        files = [backbones.packaged_weights_path(spec)]
    elif spec.hub_id is None:
        files = backbones.local_weight_files(Path(name).expanduser())
    else:
        return ()  # a hub revision in the Hugging Face cache does not change under a name
    stamp = []
    for path in files:
        if path.is_file():
            st = path.stat()
            stamp.append((str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stamp)


def _global_random_state() -> tuple[Any, ...]:
    np_state = cast("dict[str, Any]", np.random.get_state(legacy=False))
    mt = np_state["state"]
    numpy_state = (mt["key"].tobytes(), mt["pos"], np_state["has_gauss"], np_state["gauss"])
    return torch.get_rng_state(), numpy_state, random.getstate()


def _same_random_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return bool(torch.equal(a[0], b[0])) and a[1:] == b[1:]


class BackbonePool:
    """Backbones loaded once, handed out as deep copies.

    Attributes:
        loads: how many times a backbone was loaded through this pool.
        load_seconds: the time those loads took.
    """

    def __init__(self, max_size: int = 1) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        self.loads = 0
        self.load_seconds = 0.0
        self._kept: OrderedDict[tuple[Any, ...], DinoBackbone] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        """Forget every kept backbone and reset the counters."""
        with self._lock:
            self._kept.clear()
            self.loads = 0
            self.load_seconds = 0.0

    def backbone(self, name: str, pretrained: bool = True, init_seed: int = 0) -> DinoBackbone:
        """A fresh backbone, equal to ``build_backbone(name, pretrained, init_seed)``, that the caller owns."""
        if torch.empty(()).device.type != "cpu":  # e.g. parameter_report's meta device: nothing to keep
            return backbones.build_backbone(name, pretrained, init_seed)
        spec = backbones.resolve_spec(name)
        key = (name, pretrained, init_seed, spec, _weights_stamp(name, spec, pretrained))
        with self._lock:
            base = self._kept.get(key)
            if base is None:
                while len(self._kept) >= self.max_size:  # free the old one before loading the next
                    self._kept.popitem(last=False)
                before = _global_random_state()
                start = time.perf_counter()
                loaded = backbones.build_backbone(name, pretrained, init_seed)
                self.load_seconds += time.perf_counter() - start
                self.loads += 1
                if not _same_random_state(before, _global_random_state()):
                    logger.debug("loading backbone %s draws from the global random state; not kept", name)
                    return loaded
                self._kept[key] = base = loaded
            else:
                self._kept.move_to_end(key)
                logger.debug("backbone %s: copied from the one loaded before", name)
            return copy.deepcopy(base)


default_pool = BackbonePool(max_size=1)


def build_model_from_pool(cfg: ModelConfig, pool: BackbonePool | None = None) -> MERModel:
    """``build_model(cfg)`` on a copy of the pooled backbone (``default_pool`` unless given): the same model,
    without reading the backbone's weights again."""
    bb = cfg.backbone
    backbone = (pool if pool is not None else default_pool).backbone(bb.name, bb.pretrained, bb.init_seed)
    return build_model(cfg, backbone=backbone)
