"""Typed configuration: nested dataclasses are the config, YAML is only their text form.

Every field carries its help text in ``metadata["help"]``; ``__post_init__`` rejects contradictions;
unknown keys in a file or an override are errors that list the allowed keys.

    >>> cfg = from_dict(ModelConfig, {"lora": {"rank": 8}})
    >>> cfg = apply_overrides(cfg, ["fusion.variant=no_stfa"])
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hlora_mer.errors import ConfigError

T = TypeVar("T")


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


@dataclass
class BackboneConfig:
    """Which DINOv2 backbone, where its weights come from, and how it is fine-tuned."""

    name: str = _field(
        "dinov2_vitg14_reg",
        "registered backbone (dinov2_vits14, dinov2_vitb14, dinov2_vitl14, dinov2_vitg14, each also _reg; "
        "test_vit and test_vit_reg are tiny random-init models) or a local directory with config.json and "
        "model.safetensors",
    )
    pretrained: bool = _field(True, "load pretrained weights; false builds a random-init model of the same shape")
    finetune: str = _field(
        "lora",
        "lora: LoRA on the last lora.last_n_blocks blocks, the rest frozen (the paper's HLoRA); "
        "full: every backbone weight trainable (Table 8)",
    )
    init_seed: int = _field(0, "seed of the random initialisation when pretrained is false (checkpoints rebuild it)")

    def __post_init__(self) -> None:
        _choice("backbone.finetune", self.finetune, ("lora", "full"))


@dataclass
class LoRAConfig:
    """High-level LoRA (paper eq. 4-7): low-rank updates of W_Q and W_V in the last N_l blocks."""

    last_n_blocks: int = _field(2, "N_l: blocks (counted from the last) that get LoRA; 0 freezes the backbone")
    rank: int = _field(16, "r, the rank of each low-rank update")
    alpha: float = _field(
        1.0,
        "scaling numerator: the update is (alpha / rank) * B A; alpha=1 with rank=16 equals the official "
        "code's loralib MergedLinear(r=16, lora_alpha=1)",
    )
    dropout: float = _field(0.0, "dropout on the LoRA branch input")
    targets: tuple[str, ...] = _field(("q", "v"), "attention projections to adapt: any of q, k, v, o")

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.last_n_blocks < 0:
            raise ConfigError(f"lora.last_n_blocks must be >= 0; got {self.last_n_blocks}")
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1; got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1); got {self.dropout}")
        bad = [t for t in self.targets if t not in ("q", "k", "v", "o")]
        if bad or not self.targets:
            raise ConfigError(f"lora.targets must be a non-empty subset of q, k, v, o; got {list(self.targets)}")


@dataclass
class FusionConfig:
    """Hierarchical fusion module (paper section 3.2) over the T per-frame features."""

    variant: str = _field(
        "full",
        "full: IFFA + STFA (the paper); no_stfa / no_iffa: one branch (Table 9); "
        "none: a linear layer on the time-averaged frame features (Table 9, w/o HFM)",
    )
    iffa: str = _field(
        "paper",
        "paper: eq. 8-11, channel-wise attention over per-clip k-nearest frames; "
        "official: the official code's multi-head graph attention over a fixed chain of adjacent frames",
    )
    iffa_dim: int | None = _field(None, "d', the output size of the shared linear map W; null means d")
    num_neighbors: int | None = _field(
        None, "paper IFFA: frames in each neighbour set N_i, chosen per clip in feature space; null means T // 2"
    )
    gat_heads: int = _field(3, "official IFFA: attention heads of the hidden graph-attention layer")
    gat_hidden: int | None = _field(None, "official IFFA: width of each head; null means 2 * d // 3")
    gat_dropout: float = _field(0.1, "official IFFA: dropout on features and attention")
    gat_negative_slope: float = _field(0.01, "official IFFA: LeakyReLU slope of the attention logits")
    stfa_channels: int = _field(1, "STFA: output channels of the (T/2 x T/2) spatio-temporal convolution")
    stfa_kernel: int | None = _field(None, "STFA: kernel size; null means T // 2 (the paper)")
    pooling: str = _field(
        "max",
        "how each branch pools its (d x T) map: max or mean over time, or strided (the official code's "
        "MaxPool2d with a (5 x time) window and stride 2 over channels)",
    )
    head_dropout: float = _field(0.0, "dropout before the final linear layer")

    def __post_init__(self) -> None:
        _choice("fusion.variant", self.variant, ("full", "no_stfa", "no_iffa", "none"))
        _choice("fusion.iffa", self.iffa, ("paper", "official"))
        _choice("fusion.pooling", self.pooling, ("max", "mean", "strided"))
        for name in ("iffa_dim", "num_neighbors", "gat_hidden", "stfa_kernel"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"fusion.{name} must be >= 1 or null; got {value}")
        if self.gat_heads < 1 or self.stfa_channels < 1:
            raise ConfigError("fusion.gat_heads and fusion.stfa_channels must be >= 1")


@dataclass
class ModelConfig:
    """The whole HLoRA-MER model: backbone + LoRA + fusion + linear head."""

    backbone: BackboneConfig = _field(BackboneConfig(), "the DINOv2 backbone")
    lora: LoRAConfig = _field(LoRAConfig(), "high-level LoRA")
    fusion: FusionConfig = _field(FusionConfig(), "hierarchical fusion module")
    num_frames: int = _field(8, "t, frames per clip (the paper: 8)")
    num_classes: int = _field(5, "m, the number of classes (normally set from the label scheme)")
    image_size: int = _field(224, "side of the square aligned frames")

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ConfigError(f"num_frames must be >= 2 (the fusion relates frames); got {self.num_frames}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2; got {self.num_classes}")
        if self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1; got {self.image_size}")


# --------------------------------------------------------------------------------------------------
# dict / YAML round trip


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where} may not be null")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields; got {value!r}")
        return from_dict(tp, value, _where=where)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping; got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string; got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, _where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict; unknown keys are errors."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(prefix + k for k in unknown)}; "
            f"allowed under {_where or 'the top level'}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{_where}.{k}" if _where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain, YAML/JSON-ready data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...]) -> T:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied (values parsed as YAML)."""
    import yaml

    data = to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"an override must look like key.sub=value; got {item!r}")
        parts = key.strip().lstrip("-").split(".")
        node = data
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[:i]) or "the top level"
                allowed = ", ".join(node) if isinstance(node, dict) else "(none: not a section)"
                raise ConfigError(f"unknown key {key.strip()!r} in override {item!r}; allowed under {where}: {allowed}")
            if i == len(parts) - 1:
                node[part] = yaml.safe_load(raw) if raw.strip() else None
            else:
                node = node[part]
    return from_dict(type(cfg), data)


def load_yaml(cls: type[T], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Read ``cls`` from a YAML file, then apply overrides."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections; got {type(data).__name__}")
    return apply_overrides(from_dict(cls, data), overrides)


def to_yaml(cfg: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
