"""Hand a trained model to someone else: a PEFT adapter, a merged transformers folder, or ONNX.

``export_model(RUN_OR_CHECKPOINT, fmt, DIR)`` rebuilds the checkpoint's model
(:func:`hlora_mer.inference.load.load_trained`) and writes, atomically, one folder:

- ``peft``: ``adapter/`` (``adapter_config.json`` + ``adapter_model.safetensors``) that
  ``peft.PeftModel.from_pretrained`` loads onto the transformers DINOv2 model, the same LoRA on the same
  projections of the same blocks with the same rank and alpha; ``base/`` (the base DINOv2 folder) when its
  weights cannot be fetched from the Hugging Face hub (random-init, packaged or local backbones);
- ``merged``: ``backbone/``, a transformers DINOv2 folder with the LoRA folded into its weights;
- ``onnx``: ``model.onnx``, the whole model from ``(B, T, 3, S, S)`` normalised clips to ``(B, m)`` class
  probabilities, checked with onnxruntime against PyTorch before it is kept;

and in every format ``fusion_head.safetensors`` (not for ONNX, whose graph holds it), ``hlora_mer.json``
(model config, labels, preprocessing), ``labels.txt`` and a model card ``README.md``.

The fusion and head are this package's modules: :func:`load_fusion_head` rebuilds them from an export, and
:class:`ClipClassifier` puts them behind any transformers DINOv2 model (plain, PEFT-wrapped or merged).
:func:`prepare_input` turns a video file or frame folder into an export's input, with the preprocessing the
model was trained with; the model card shows it, and lists each step for a user without this package.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from hlora_mer import __version__
from hlora_mer.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from hlora_mer.inference.load import TrainedModel
    from hlora_mer.models.backbones import DinoBackbone
    from hlora_mer.models.mer_model import MERModel
    from hlora_mer.preprocess.run import PreprocessParams

logger = logging.getLogger(__name__)

FORMATS = ("peft", "merged", "onnx")
EXPORT_META = "hlora_mer.json"
FUSION_HEAD_FILE = "fusion_head.safetensors"
LABELS_FILE = "labels.txt"
CARD_FILE = "README.md"
ADAPTER_DIR = "adapter"
BASE_DIR = "base"
BACKBONE_DIR = "backbone"
ONNX_FILE = "model.onnx"
# Largest absolute difference between onnxruntime's and PyTorch's class probabilities that an export accepts.
ONNX_TOLERANCE = 1e-4
# Above this many bytes of weights the ONNX graph keeps them in model.onnx.data (protobuf stops at 2 GiB).
_ONNX_INLINE_BYTES = 1 << 30
# The seed of the sample clips the ONNX graph is checked on.
_SAMPLE_SEED = 0


class ExportError(UserError):
    """An export that cannot be made or does not reproduce the model."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    directory: Path
    format: str
    files: list[Path] = field(default_factory=list)  # relative to ``directory``
    notes: list[str] = field(default_factory=list)  # facts a user should read (no adapter, base weights included)
    onnx_max_difference: float | None = None
    onnx_tolerance: float = ONNX_TOLERANCE


# --------------------------------------------------------------------------------------------------
# rebuilding an export


class FusionHead(nn.Module):
    """The fusion module and linear head of HLoRA-MER: ``(B, T, d)`` per-frame CLS features -> ``(B, m)`` logits."""

    def __init__(self, fusion: nn.Module, head: nn.Module, num_frames: int, labels: list[str]) -> None:
        super().__init__()
        self.fusion = fusion
        self.head = head
        self.num_frames = num_frames
        self.labels = list(labels)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        fused, _ = self.fusion(feats)
        return self.head(fused)


class ClipClassifier(nn.Module):
    """A transformers DINOv2 model (plain, ``PeftModel`` or merged) + :class:`FusionHead`: clips -> logits.

    Input: ``(B, T, 3, S, S)`` frames normalised with DINOv2's ImageNet mean and std; output ``(B, m)`` logits.
    """

    def __init__(self, backbone: nn.Module, fusion_head: FusionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.fusion_head = fusion_head

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames = clips.flatten(0, 1)  # (B*T, 3, S, S)
        cls = self.backbone(pixel_values=frames).pooler_output  # final-layer-norm CLS token, (B*T, d)
        return self.fusion_head(cls.view(clips.shape[0], clips.shape[1], -1))


def read_export_meta(directory: str | Path) -> dict[str, Any]:
    """The ``hlora_mer.json`` of an export folder."""
    path = Path(directory) / EXPORT_META
    if not path.is_file():
        raise UserError(
            f"{directory} is not a hlora-mer export (no {EXPORT_META}); pass a folder 'hlora-mer export' wrote"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_fusion_head(directory: str | Path) -> FusionHead:
    """Rebuild the fusion and head of an export (``peft`` or ``merged``) with their trained weights, in eval mode."""
    from safetensors.torch import load_file

    from hlora_mer.config import ModelConfig, from_dict
    from hlora_mer.models.fusion import build_fusion

    directory = Path(directory)
    meta = read_export_meta(directory)
    if not (directory / FUSION_HEAD_FILE).is_file():
        raise UserError(
            f"{directory} has no {FUSION_HEAD_FILE}: an {meta.get('export_format')} export keeps the fusion and head "
            "inside its graph"
        )
    cfg = from_dict(ModelConfig, meta["model"])
    fusion = build_fusion(cfg.fusion, meta["backbone"]["hidden_size"], cfg.num_frames)
    head = nn.Sequential(nn.Dropout(cfg.fusion.head_dropout), nn.Linear(fusion.out_features, cfg.num_classes))
    module = FusionHead(fusion, head, cfg.num_frames, meta["labels"])
    module.load_state_dict(load_file(str(directory / FUSION_HEAD_FILE)), strict=True)
    return module.eval()


def prepare_input(
    directory: str | Path,
    clip: str | Path,
    *,
    onset: int | None = None,
    offset: int | None = None,
    apex: int | None = None,
    cache_dir: str | Path | None = None,
) -> Any:
    """The input of an exported model for one video file or frame folder: ``(1, T, 3, S, S)`` float32 numpy.

    The clip is sampled and aligned with the preprocessing in the export's ``hlora_mer.json`` (the model's
    training preprocessing), by the same code as ``hlora-mer predict``
    (:func:`hlora_mer.inference.predict.prepare_clip`, sharing its cache), then normalised with DINOv2's mean and std
    (:func:`hlora_mer.training.clip_dataset.normalize_clip`). Feed it to ``model.onnx`` as ``clips``, or
    ``torch.from_numpy`` it for :class:`ClipClassifier`.

    Args:
        directory: The export folder.
        clip: A video file or a folder of frames.
        onset, offset: First and last frame number (default: the whole clip).
        apex: The apex frame number, for a model trained with ``apex`` sampling.
        cache_dir: The aligned-clip cache (default ``~/.cache/hlora-mer/predict``).

    Raises:
        UserError: not an export folder; the clip cannot be read, is too short or shows no face.
    """
    from hlora_mer.inference.predict import prepare_clip
    from hlora_mer.preprocess.run import params_from_dict
    from hlora_mer.training.clip_dataset import normalize_clip

    params = params_from_dict(read_export_meta(directory)["preprocess"])
    frames, _ = prepare_clip(params, clip, onset=onset, offset=offset, apex=apex, cache_dir=cache_dir)
    return normalize_clip(frames)[None].numpy()


# --------------------------------------------------------------------------------------------------
# tensors


def fusion_head_tensors(model: MERModel) -> dict[str, torch.Tensor]:
    """The fusion and head tensors of ``model``, named as in :class:`FusionHead`."""
    return {
        k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(("fusion.", "head."))
    }


def backbone_state(backbone: DinoBackbone, *, merge: bool) -> dict[str, torch.Tensor]:
    """The backbone's transformers state dict without LoRA: its base weights, or (``merge``) with each
    LoRA update ``(alpha / r) B A`` folded into the weight it adapts (``models.lora.merged``). The model itself
    is left as it is."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    from hlora_mer.models.lora import merged

    model = backbone.model
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if not isinstance(module, LoraLinear):
            raise TypeError(f"{name} is a {type(module).__name__}; only LoRA on linear layers is exported")
        if module.merged:  # the base weight already holds the update
            raise ValueError(f"{name} has its LoRA merged; unmerge it (models.lora.unmerge_lora) before exporting")
    state: dict[str, torch.Tensor] = {}
    with merged(model) if merge else contextlib.nullcontext(model):
        for key, value in model.state_dict().items():
            if "lora_" in key:
                continue
            value = value.detach().cpu().contiguous()
            if ".base_layer." in key:  # an adapted layer's: ``merged`` restores it on exit, so keep a copy
                value = value.clone()
            state[key.replace(".base_layer.", ".")] = value
    with torch.device("meta"):
        expected = set(cast(Any, type(model))(model.config).state_dict())
    if set(state) != expected:
        raise AssertionError(
            f"backbone tensors differ from {type(model).__name__}'s: {sorted(set(state) ^ expected)[:4]}"
        )
    return state


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": "pt"})  # transformers refuses safetensors without format=pt


def _hub_source(trained: TrainedModel) -> tuple[str, str | None] | None:
    """(hub id, revision) when the backbone's weights are a Hugging Face hub checkpoint, else None."""
    from hlora_mer.models.backbones import resolve_spec

    cfg = trained.model.config
    assert cfg is not None
    spec = resolve_spec(cfg.backbone.name)
    if spec.hub_id is None or not cfg.backbone.pretrained:
        return None
    weights = trained.model.backbone.weights_id
    revision = weights.split("@", 1)[1] if "@" in weights else None
    return spec.hub_id, (None if revision in (None, "local") else revision)


# --------------------------------------------------------------------------------------------------
# writing


class _Writer:
    """Writes files into the temporary export folder, each atomically, and remembers them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[Path] = []

    def text(self, rel: str, text: str) -> None:
        from hlora_mer.files import atomic_write_text

        atomic_write_text(self.root / rel, text)
        self.files.append(Path(rel))

    def data(self, rel: str, data: bytes) -> None:
        from hlora_mer.files import atomic_write_bytes

        atomic_write_bytes(self.root / rel, data)
        self.files.append(Path(rel))

    def hf_folder(self, rel: str, backbone: DinoBackbone, state: dict[str, torch.Tensor]) -> None:
        """A transformers model folder: ``config.json`` + ``model.safetensors``."""
        config = copy.deepcopy(backbone.model.config)
        config.architectures = [type(backbone.model).__name__]
        self.text(f"{rel}/config.json", config.to_json_string(use_diff=True))
        self.data(f"{rel}/model.safetensors", _safetensors_bytes(state))


def _peft_config(trained: TrainedModel) -> Any:
    """The peft LoraConfig that :func:`hlora_mer.models.lora.apply_lora` injected, ready to be saved."""
    peft_configs = getattr(trained.model.backbone.model, "peft_config", None)
    if not peft_configs:
        return None
    cfg = copy.deepcopy(peft_configs["default"])
    hub = _hub_source(trained)
    cfg.base_model_name_or_path = hub[0] if hub else None
    cfg.revision = hub[1] if hub else None
    cfg.inference_mode = True
    return cfg


def _write_peft(w: _Writer, trained: TrainedModel, result: ExportResult) -> None:
    from peft.utils import get_peft_model_state_dict

    backbone = trained.model.backbone
    peft_cfg = _peft_config(trained)
    if peft_cfg is None:
        result.notes.append("N_l = 0: the backbone is not adapted, so there is no adapter; use the base model as is")
    else:
        config = peft_cfg.to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
        w.text(f"{ADAPTER_DIR}/adapter_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        tensors = get_peft_model_state_dict(backbone.model, adapter_name="default")
        # PeftModel.save_pretrained's names: the model sits at base_model.model inside a PeftModel.
        named = {f"base_model.model.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}
        w.data(f"{ADAPTER_DIR}/adapter_model.safetensors", _safetensors_bytes(named))
    if _hub_source(trained) is None:
        w.hf_folder(BASE_DIR, backbone, backbone_state(backbone, merge=False))
        result.notes.append(
            f"the base weights ({backbone.weights_id}) cannot be fetched from the Hugging Face hub, so they are "
            f"in {BASE_DIR}/"
        )
    w.data(FUSION_HEAD_FILE, _safetensors_bytes(fusion_head_tensors(trained.model)))


def _write_merged(w: _Writer, trained: TrainedModel, result: ExportResult) -> None:
    backbone = trained.model.backbone
    w.hf_folder(BACKBONE_DIR, backbone, backbone_state(backbone, merge=True))
    w.data(FUSION_HEAD_FILE, _safetensors_bytes(fusion_head_tensors(trained.model)))


# ---- ONNX


class _Probabilities(nn.Module):
    def __init__(self, model: MERModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips).softmax(dim=-1)


def _cdist(x1: torch.Tensor, x2: torch.Tensor, p: float = 2.0, compute_mode: Any = None) -> torch.Tensor:
    """``torch.cdist`` in operators ONNX has (the exporter has none for it); exact for few rows, as torch's is."""
    if p != 2.0:
        raise ExportError(f"the ONNX export supports Euclidean distances only; the model uses p={p}")
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    return diff.pow(2).sum(-1).sqrt()


def require_onnx() -> None:
    """Raise a UserError naming the install command when the ONNX export's packages are missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"the ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            "installed; run: pip install 'hlora-mer[export]'"
        )


def sample_clips(trained: TrainedModel, batch: int = 2) -> torch.Tensor:
    """Seeded random normalised clips ``(batch, T, 3, S, S)`` of the model's input shape."""
    gen = torch.Generator().manual_seed(_SAMPLE_SEED)
    return torch.randn(batch, trained.num_frames, 3, trained.image_size, trained.image_size, generator=gen)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The ONNX exporter logs each graph rewrite at INFO: keep its warnings (errors for torch.onnx, which warns
    about every torchvision operator it cannot register)."""
    names = {"onnxscript": logging.WARNING, "onnx_ir": logging.WARNING, "torch.onnx": logging.ERROR}
    loggers = {name: logging.getLogger(name) for name in names}
    levels = {name: log.level for name, log in loggers.items()}
    for name, log in loggers.items():
        log.setLevel(max(names[name], log.getEffectiveLevel()))
    try:
        with warnings.catch_warnings():
            # torch.export's own use of a deprecated pytree class, nothing the user can act on.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        for name, log in loggers.items():
            log.setLevel(levels[name])


def _write_onnx(w: _Writer, trained: TrainedModel, result: ExportResult, tolerance: float) -> None:
    import onnxruntime as ort
    from torch.export import Dim, default_decompositions
    from torch.export import export as torch_export

    from hlora_mer.models.lora import merge_lora

    model = trained.model
    wrapper = _Probabilities(model).eval()
    clips = sample_clips(trained, 2)
    with torch.no_grad():
        reference = wrapper(clips).numpy()  # the model as trained: LoRA beside its weights
    merge_lora(model)  # one matrix per projection in the graph; the model is not used after the export
    try:
        with _quiet_exporter():
            program = torch_export(wrapper, (clips,), dynamic_shapes={"clips": {0: Dim("batch")}})
            table = default_decompositions()
            table[torch.ops.aten._cdist_forward.default] = _cdist  # IFFA's neighbour search
            program = program.run_decompositions(table)
            onnx_program = torch.onnx.export(
                program, (clips,), input_names=["clips"], output_names=["probabilities"], verbose=False
            )
    except UserError:
        raise
    except Exception as err:
        raise ExportError(
            f"torch.onnx could not export this model ({type(err).__name__}: {str(err).splitlines()[0]}); export it "
            "with --format peft or --format merged instead"
        ) from err
    assert onnx_program is not None
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > _ONNX_INLINE_BYTES
    onnx_program.save(str(w.root / ONNX_FILE), external_data=external)
    w.files.append(Path(ONNX_FILE))
    if external:
        w.files.extend(Path(p.name) for p in sorted(w.root.glob(f"{ONNX_FILE}.*")))

    session = ort.InferenceSession(str(w.root / ONNX_FILE), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in (clips, clips[:1]):  # the batch size the graph was traced with, and another one
        got = session.run(None, {"clips": batch.numpy()})[0]
        worst = max(worst, float(abs(got - reference[: len(batch)]).max()))
    result.onnx_max_difference = worst
    if not math.isfinite(worst) or worst > tolerance:
        raise ExportError(
            f"the ONNX model's class probabilities differ from PyTorch's by up to {worst:.3g} on the sample clips, "
            f"more than the tolerance {tolerance:g}; nothing was written. Export with --format peft or merged, or "
            "pass a larger --tolerance if this difference is acceptable"
        )
    logger.debug("onnxruntime matches PyTorch on %d sample clips: max |difference| %.2g", len(clips), worst)


# --------------------------------------------------------------------------------------------------
# the model card


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _evaluation(trained: TrainedModel, run: Path | None) -> list[str]:
    """The card's evaluation section: the run's scores, or why there are none."""
    from hlora_mer.run_folder import METRICS_FILE, read_json

    protocol = trained.meta.get("protocol")
    if protocol == "all":
        return [
            "Trained on every subject (protocol `all`): no subject was held out, so this model has **no test "
            "metrics**. Its expected accuracy is that of a LOSO run of the same config.",
        ]
    if run is None:
        return [f"The checkpoint does not sit in a run folder, so no evaluation is recorded (protocol `{protocol}`)."]
    if not (run / METRICS_FILE).is_file():
        return [f"The run folder {run} has no {METRICS_FILE} (unfinished run?): no evaluation to show."]
    metrics = read_json(run / METRICS_FILE)
    lines = [f"Protocol **{metrics.get('protocol', protocol)}**, from `{run / METRICS_FILE}`."]
    pooled = metrics.get("pooled") or {}
    names = [m for m in ("acc", "uf1", "uar", "war") if m in pooled]
    if names:
        lines += [
            "",
            "The run's result, pooled over all its folds (mean ± std over seeds, in %):",
            "",
            "| " + " | ".join(m.upper() for m in names) + " |",
            "|" + "---:|" * len(names),
            "| " + " | ".join(f"{_pct(pooled[m]['mean'])} ± {_pct(pooled[m]['std'])}" for m in names) + " |",
        ]
    fold, seed = trained.meta.get("fold"), trained.meta.get("seed")
    own = [f for f in metrics.get("per_fold", []) if f.get("fold") == fold and f.get("seed") == seed]
    if own:
        f = own[0]
        scores = ", ".join(f"{m.upper()} {_pct(f[m])}" for m in ("acc", "uf1", "uar") if m in f)
        lines += [
            "",
            f"This model is the one of fold `{fold}` (seed {seed}); on its {f.get('n_test', '?')} held-out test "
            f"samples: {scores} (few samples: for inspection, not a result).",
        ]
    return lines


_CLIP_PLACEHOLDER = "path/to/clip.mp4"


def _prepare_lines(trained: TrainedModel, tensor: bool) -> list[str]:
    """The card's lines that turn a video file into the model's input with hlora_mer."""
    t, s = trained.num_frames, trained.image_size
    apex = ", apex=None" if trained.params.sampling == "apex" else ""
    call = f'prepare_input(".", "{_CLIP_PLACEHOLDER}"{apex})'
    return [
        "# a video file or a folder of frames; onset=/offset= choose its frames (default: all of them)"
        + ("; apex=: the apex frame number, if known (the model was trained with apex sampling)" if apex else ""),
        (f"clips = torch.from_numpy({call})" if tensor else f"clips = {call}")
        + f"  # (1, {t}, 3, {s}, {s}) float32: sampled, aligned, normalised",
    ]


def _loading(fmt: str, trained: TrainedModel, hub: tuple[str, str | None] | None, files: list[Path]) -> str:
    """The card's code snippet for ``fmt``, to run inside the export folder: from a video file to probabilities."""
    cls = type(trained.model.backbone.model).__name__
    if fmt == "onnx":
        return "\n".join(
            [
                "```python",
                "import onnxruntime as ort",
                "",
                "from hlora_mer.inference.export import prepare_input",
                "",
                f'session = ort.InferenceSession("{ONNX_FILE}", providers=["CPUExecutionProvider"])',
                *_prepare_lines(trained, tensor=False),
                'probabilities = session.run(None, {"clips": clips})[0]  # (1, classes), in the order of labels.txt',
                "```",
                "",
            ]
        )
    if fmt == "merged":
        backbone = [f'backbone = {cls}.from_pretrained("{BACKBONE_DIR}")  # the LoRA folded into the weights']
        imports = []
    else:
        if hub:
            revision = f', revision="{hub[1]}"' if hub[1] else ""
            base = f'base = {cls}.from_pretrained("{hub[0]}"{revision})'
        else:
            base = f'base = {cls}.from_pretrained("{BASE_DIR}")  # the base weights, written here'
        if Path(ADAPTER_DIR, "adapter_config.json") in files:
            backbone = [base, f'backbone = PeftModel.from_pretrained(base, "{ADAPTER_DIR}")']
            imports = ["from peft import PeftModel"]
        else:
            backbone = [base, "backbone = base  # N_l = 0: the backbone is not adapted"]
            imports = []
    return "\n".join(
        [
            "```python",
            "import torch",
            *imports,
            f"from transformers import {cls}",
            "",
            "from hlora_mer.inference.export import ClipClassifier, load_fusion_head, prepare_input",
            "",
            *backbone,
            'model = ClipClassifier(backbone, load_fusion_head(".")).eval()',
            *_prepare_lines(trained, tensor=True),
            "with torch.no_grad():",
            "    probabilities = model(clips).softmax(-1)  # (1, classes), in the order of labels.txt",
            "```",
            "",
        ]
    )


def _sampling_steps(params: PreprocessParams) -> list[str]:
    """How the T frames are chosen, as a user without hlora_mer must reproduce it."""
    t = params.num_frames
    uniform = (
        f"the indices round_half_up(linspace(0, n - 1, {t})) into the n frames there are in onset..offset "
        "(sorted frame numbers; the first and last always taken, repeats when n < T)"
    )
    if params.sampling == "uniform":
        return [f"- **frames**: T = {t}, sampled `uniform`: {uniform}."]
    lines = [
        f"- **frames**: T = {t}, sampled `apex`: onset, apex and offset always taken; the other {max(t - 3, 0)} "
        "frames split between onset..apex and apex..offset in proportion to their lengths, evenly spaced in each "
        "(`hlora_mer.data.sampling.apex_indices`); an apex that is not a frame maps to the nearest frame there is. "
        f"Without an apex: {uniform}.",
    ]
    if params.estimate_apex:
        lines.append(
            "- **missing apex**: estimated as the frame of largest mean absolute grey difference from the onset "
            "frame, after alignment (`hlora_mer.preprocess.apex`), then sampled as above."
        )
    return lines


def _alignment_steps(params: PreprocessParams) -> list[str]:
    s, fill = params.size, params.fill
    if params.detector == "none":
        return [
            f"- **alignment**: none (the frames are faces already): each frame scaled so that its longer side is "
            f"{s} px, centred in a {s} x {s} square, the rest grey ({fill}, {fill}, {fill}); bilinear (the onset "
            "frame's scaling, applied to every frame).",
        ]
    model = f", landmark model `{Path(params.landmark_model).name}`" if params.landmark_model else ""
    return [
        f"- **alignment**: landmarks found once, on the onset frame, by `{params.detector}`{model} (eye centres "
        "and mouth corners); one similarity transform for the whole clip: rotate so that the eyes are level, take "
        f"the square around the eyes-and-mouth box of side extent x (1 + 2 x {params.margin:g}), scale it to "
        f"{s} x {s}; applied to every sampled frame, bilinear, grey ({fill}, {fill}, {fill}) outside the frame.",
    ]


def _input_recipe(params: PreprocessParams) -> list[str]:
    """The card's preprocessing section: every step from a video file to the input tensor."""
    from hlora_mer.models.backbones import DINOV2_MEAN, DINOV2_STD

    t, s = params.num_frames, params.size
    return [
        "From a video file (frames numbered from 0 in decoding order) or a folder of frames (the number ends "
        "each file name) to the model's input, as the training clips were made:",
        "",
        "- **clip**: the frames onset..offset (default: all of them).",
        *_sampling_steps(params),
        *_alignment_steps(params),
        f"- **normalisation**: RGB, (pixel / 255 - mean) / std per channel, DINOv2's mean {list(DINOV2_MEAN)} "
        f"and std {list(DINOV2_STD)}.",
        f"- **layout**: float32 (batch, {t}, 3, {s}, {s}): frames in time order, channels R, G, B.",
        "",
        "With hlora_mer, `hlora_mer.inference.export.prepare_input(EXPORT_DIR, CLIP, onset=, offset=, apex=)` "
        "does all of this (the code of `hlora-mer predict` and `hlora-mer preprocess`); the snippet below uses "
        "it. Without hlora_mer, reproduce the steps above.",
    ]


def model_card(trained: TrainedModel, fmt: str, result: ExportResult, run: Path | None, files: list[Path]) -> str:
    """The export's ``README.md``: what the model is, what it was trained and evaluated on, how to load it."""

    cfg = trained.model.config
    assert cfg is not None
    backbone = trained.model.backbone
    hub = _hub_source(trained)
    params = trained.params
    meta = trained.meta
    datasets: list[str] = []
    if run is not None:
        from hlora_mer.run_folder import read_config

        try:
            datasets = list(read_config(run).data.datasets)
        except UserError:
            datasets = []
    if not datasets:
        datasets = sorted({s.split("/")[0] for s in meta.get("train_subjects", []) if "/" in s})
    if cfg.backbone.finetune == "full":
        tuning = "full fine-tuning of every backbone block (no LoRA)"
    elif cfg.lora.last_n_blocks == 0:
        tuning = f"N_l = 0 of {backbone.depth} blocks: the backbone is frozen, no LoRA"
    else:
        tuning = (
            f"N_l = {cfg.lora.last_n_blocks} of {backbone.depth} blocks, rank r = {cfg.lora.rank}, "
            f"alpha = {cfg.lora.alpha:g} (update scale alpha / r = {cfg.lora.alpha / cfg.lora.rank:g}), on "
            + ", ".join(f"W_{t.upper()}" for t in cfg.lora.targets)
        )
    parts = {
        "full": f"IFFA ({cfg.fusion.iffa}) + STFA",
        "no_stfa": f"IFFA ({cfg.fusion.iffa}) only",
        "no_iffa": "STFA only",
    }.get(cfg.fusion.variant)
    fusion = (
        f"`{cfg.fusion.variant}`: {parts}, pooling {cfg.fusion.pooling}"
        if parts
        else f"`{cfg.fusion.variant}`: no HFM, the time mean of the frame features"
    )
    weights = backbone.weights_id
    trained_on = meta.get("backbone_weights")
    if trained_on and trained_on != weights:
        weights += f" (trained on {trained_on}; loaded with allow_mismatch)"
    subjects = meta.get("train_subjects") or []
    rows = [
        ("backbone", f"{backbone.name} (transformers `{type(backbone.model).__name__}`, d = {backbone.embed_dim})"),
        ("backbone weights", f"`{weights}`" + (f" — Hugging Face `{hub[0]}`" if hub else "")),
        ("HLoRA", tuning),
        ("fusion", fusion),
        ("classes", f"{len(trained.labels)}: " + ", ".join(trained.labels)),
        ("label scheme", str(meta.get("label_scheme", "not recorded"))),
        ("datasets", ", ".join(datasets) or "not recorded"),
        (
            "trained on",
            f"{len(subjects)} subjects, protocol `{meta.get('protocol', '?')}`, fold `{meta.get('fold', '?')}`, "
            f"seed {meta.get('seed', '?')}",
        ),
        ("checkpoint", f"`{trained.checkpoint}`"),
    ]
    preprocessing = _input_recipe(params)
    layout = {
        "peft": f"`{ADAPTER_DIR}/`: the LoRA as a PEFT adapter; "
        + (f"`{BASE_DIR}/`: the base DINOv2 weights; " if Path(BASE_DIR, "config.json") in files else "")
        + f"`{FUSION_HEAD_FILE}`: fusion and head",
        "merged": f"`{BACKBONE_DIR}/`: the DINOv2 backbone with the LoRA folded in; "
        f"`{FUSION_HEAD_FILE}`: fusion and head",
        "onnx": f"`{ONNX_FILE}`: the whole model, input `clips` (batch, {params.num_frames}, 3, {params.size}, "
        f"{params.size}), output `probabilities` (batch, classes)",
    }[fmt]
    lines = [
        f"# HLoRA-MER model: {meta.get('experiment', 'unnamed')} ({len(trained.labels)} classes)",
        "",
        f"Exported by hlora-mer {__version__} (`hlora-mer export --format {fmt}`). {layout}; `{EXPORT_META}`: the "
        f"model config, labels and preprocessing; `{LABELS_FILE}`: the class names in output order.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        *(f"Note: {n}." for n in result.notes),
        *([""] if result.notes else []),
        "## Evaluation",
        "",
        *_evaluation(trained, run),
        "",
        "## Preprocessing",
        "",
        *preprocessing,
        "",
        "## How to load it",
        "",
    ]
    text = "\n".join(lines) + "\n"
    if fmt in ("peft", "merged"):
        text += (
            "The fusion and head are hlora-mer modules (`pip install hlora-mer`); from this folder, a video file to "
            "class probabilities:\n\n"
        )
    else:
        text += (
            f"The graph needs only onnxruntime (it was checked against PyTorch on seeded random clips: largest "
            f"difference in probability {result.onnx_max_difference:.2g}, tolerance {result.onnx_tolerance:g}; "
            "the batch size is free). Its input is a clip prepared as under Preprocessing: with hlora_mer as "
            "below, or by the steps listed there. From this folder, a video file to class probabilities:\n\n"
        )
    text += _loading(fmt, trained, hub, files)
    return text


# --------------------------------------------------------------------------------------------------
# the export


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt while the export is written, so that its temporary folder
    is removed as after Ctrl-C, instead of the process ending on the spot (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), interrupt) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)


def _run_folder(checkpoint: Path) -> Path | None:
    from hlora_mer.run_folder import CONFIG_FILE

    return next((p for p in checkpoint.parents if (p / CONFIG_FILE).is_file()), None)


def _check_target(out: Path, checkpoint: Path, force: bool) -> None:
    resolved = out.resolve()
    if resolved == checkpoint.resolve() or resolved in checkpoint.resolve().parents:
        raise UserError(
            f"cannot export into {out}: it holds the checkpoint being exported; choose another folder with -o"
        )
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise UserError(
            f"the export folder {out} exists and is not empty; pass --force to replace it, or choose another "
            "folder with -o"
        )
    if not (out / EXPORT_META).is_file():
        raise UserError(
            f"the export folder {out} exists and holds something other than an export (no {EXPORT_META}); "
            "--force replaces only an earlier export; choose another folder with -o"
        )


def _meta(trained: TrainedModel, fmt: str, result: ExportResult, tolerance: float) -> dict[str, Any]:
    from hlora_mer.config import to_dict
    from hlora_mer.models.backbones import DINOV2_MEAN, DINOV2_STD

    cfg = trained.model.config
    assert cfg is not None
    backbone = trained.model.backbone
    hub = _hub_source(trained)
    meta: dict[str, Any] = {
        "format": "hlora-mer-export/1",
        "export_format": fmt,
        "hlora_mer_version": __version__,
        "model": to_dict(cfg),
        "labels": trained.labels,
        "label_scheme": trained.meta.get("label_scheme"),
        "protocol": trained.meta.get("protocol"),
        "preprocess": dataclasses.asdict(trained.params),
        "input": {
            "shape": ["batch", trained.num_frames, 3, trained.image_size, trained.image_size],
            "mean": list(DINOV2_MEAN),
            "std": list(DINOV2_STD),
        },
        "backbone": {
            "name": backbone.name,
            "weights": backbone.weights_id,
            "trained_on_weights": trained.meta.get("backbone_weights"),
            "class": type(backbone.model).__name__,
            "hidden_size": backbone.embed_dim,
            "depth": backbone.depth,
            "hub_id": hub[0] if hub else None,
            "revision": hub[1] if hub else None,
        },
        "source_checkpoint": str(trained.checkpoint),
        "notes": result.notes,
    }
    if fmt == "onnx":
        meta["onnx"] = {
            "input": "clips",
            "output": "probabilities",
            "tolerance": tolerance,
            "max_abs_difference": result.onnx_max_difference,
        }
    return meta


def export_model(
    source: str | Path,
    fmt: str,
    out: str | Path,
    *,
    force: bool = False,
    allow_mismatch: bool = False,
    tolerance: float = ONNX_TOLERANCE,
) -> ExportResult:
    """Export the model of a run folder or checkpoint (see :func:`hlora_mer.inference.load.resolve_checkpoint`).

    Args:
        source: a run folder with one checkpoint, a fold folder or a checkpoint folder.
        fmt: ``peft``, ``merged`` or ``onnx``.
        out: the folder to write; refused if it exists and is not empty, unless ``force`` (which replaces
            only an earlier export).
        allow_mismatch: accept a backbone whose weights are not those the checkpoint was trained on.
        tolerance: ONNX only: the largest accepted difference between onnxruntime's and PyTorch's probabilities.

    Raises:
        UserError: unknown format, unusable ``out``, no single checkpoint, a missing optional package, or an
            export that does not reproduce the model (:class:`ExportError`).
    """
    from hlora_mer.files import atomic_write_dir, check_writable_dir
    from hlora_mer.inference.load import load_trained

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = check_writable_dir(out, "export folder", "choose another folder with -o")
    if fmt == "onnx":
        require_onnx()
        # imported before the export folder is begun: an interrupt inside an import surfaces as ImportError
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        import torch.export  # noqa: F401
    trained = load_trained(source, allow_mismatch=allow_mismatch)
    _check_target(out, trained.checkpoint, force)
    cfg = trained.model.config
    assert cfg is not None
    if fmt == "peft" and cfg.backbone.finetune == "full":
        raise UserError(
            f"{trained.checkpoint} was trained with full fine-tuning (backbone.finetune=full): it has no LoRA "
            "adapter to export; use --format merged (its fine-tuned backbone as a transformers folder)"
        )
    result = ExportResult(out, fmt, onnx_tolerance=tolerance)
    writers: dict[str, Callable[[_Writer], None]] = {
        "peft": lambda w: _write_peft(w, trained, result),
        "merged": lambda w: _write_merged(w, trained, result),
        "onnx": lambda w: _write_onnx(w, trained, result, tolerance),
    }

    def fill(tmp: Path) -> None:
        w = _Writer(tmp)
        writers[fmt](w)
        w.text(LABELS_FILE, "".join(f"{label}\n" for label in trained.labels))
        w.text(EXPORT_META, json.dumps(_meta(trained, fmt, result, tolerance), indent=2) + "\n")
        w.text(CARD_FILE, model_card(trained, fmt, result, _run_folder(trained.checkpoint), w.files))
        result.files = sorted(w.files)

    logger.info("exporting %s as %s into %s", trained.checkpoint, fmt, out)
    absolute = out.absolute()
    created = [p for p in absolute.parents if not p.exists()]  # the folders above -o this export makes, deepest first
    try:
        with _terminate_as_interrupt():
            atomic_write_dir(out, fill)  # its temporary folder is removed in a finally, also when interrupted
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty: something else was put there meanwhile
                break
        raise
    for rel in result.files:
        logger.debug("wrote %s (%d bytes)", out / rel, os.path.getsize(out / rel))
    return result
