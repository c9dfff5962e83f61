"""The demo: SynthME -> CASME II loader -> preprocessing -> LOSO -> pooled scores next to chance.

SynthME is generated once per (seed, amplitude) into the work folder and reused; the run folder is
resumable like any other. Chance level for a balanced set of m classes is 1/m for ACC, UF1 and UAR
(a uniformly random guess); SynthME is balanced by construction.
"""

from __future__ import annotations

import dataclasses
import logging
from importlib import resources
from pathlib import Path

from hlora_mer.config import ExperimentConfig, apply_overrides, from_dict
from hlora_mer.files import atomic_write_text
from hlora_mer.synthme.generate import SynthConfig, generate

logger = logging.getLogger(__name__)

_DONE_MARKER = ".synthme-complete"


def demo_config(overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """The packaged demo experiment (``hlora_mer/configs/demo.yaml``) with ``overrides`` applied."""
    import yaml

    text = resources.files("hlora_mer").joinpath("configs/demo.yaml").read_text()
    return apply_overrides(from_dict(ExperimentConfig, yaml.safe_load(text)), list(overrides))


def synthme_root(workdir: Path, cfg: SynthConfig) -> Path:
    """The folder under ``workdir`` that holds SynthME for ``cfg`` (it may not exist yet)."""
    fields = dataclasses.asdict(cfg)
    tag = "-".join(
        f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
        for k, v in fields.items()
        if v != getattr(SynthConfig, k, None) or k in ("seed", "amplitude")
    )
    return Path(workdir) / f"synthme-{tag}"


def ensure_synthme(workdir: Path, cfg: SynthConfig, progress=None) -> Path:
    """SynthME for ``cfg`` under ``workdir``, generated only when not already complete there."""
    root = synthme_root(workdir, cfg)
    if (root / _DONE_MARKER).is_file():
        logger.info("SynthME already at %s", root)
        return root
    generate(root, cfg, progress=progress)
    atomic_write_text(root / _DONE_MARKER, "complete\n")
    return root
