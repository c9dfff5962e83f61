"""DINOv2 backbones from Hugging Face ``transformers``, registered by the Meta hub names.

The per-frame feature is the final-layer-norm CLS token (d = hidden size). The backbone is split in
two calls that compose to the full forward (see docs/design.md):

    tokens = backbone.prefix(pixels, n_blocks)   # embeddings + blocks[0:n_blocks]
    cls    = backbone.suffix(tokens, n_blocks)   # blocks[n_blocks:] + final norm, CLS token

so that the frozen prefix can later be computed once and cached.

References: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision" (2023);
Darcet et al., "Vision Transformers Need Registers" (2024); the checkpoint table follows
``facebookresearch/dinov2`` ``hub/backbones.py`` and the Hugging Face ``facebook/dinov2-*`` configs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import torch
from torch import nn

from hlora_mer.errors import BackboneNotFoundError, ConfigError

if TYPE_CHECKING:
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    # The transformers model a DinoBackbone wraps (with or without register tokens).
    DinoModel: TypeAlias = Dinov2Model | Dinov2WithRegistersModel

logger = logging.getLogger(__name__)

# DINOv2's fixed ImageNet normalisation (never per-subject statistics); the one definition in the package.
DINOV2_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
DINOV2_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture of one registered checkpoint, apart from where its weights live."""

    hub_id: str | None  # None: no published weights (tiny models)
    hidden_size: int
    num_layers: int
    num_heads: int
    registers: int = 0
    swiglu: bool = False
    mlp_ratio: int = 4
    patch_size: int = 14
    image_size: int = 518  # the size the position embeddings were trained at; other sizes interpolate
    weights_file: str | None = None  # weights shipped inside this package (path relative to hlora_mer/)
    about: str = ""  # one line for people: what the weights are

    def hf_config(self) -> Dinov2Config | Dinov2WithRegistersConfig:
        from transformers import Dinov2Config, Dinov2WithRegistersConfig

        kwargs: dict[str, Any] = dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            use_swiglu_ffn=self.swiglu,
            patch_size=self.patch_size,
            image_size=self.image_size,
            layerscale_value=1.0,
            layer_norm_eps=1e-6,
        )
        if self.registers:
            return Dinov2WithRegistersConfig(num_register_tokens=self.registers, **kwargs)
        return Dinov2Config(**kwargs)


def _meta(size: str, hidden: int, layers: int, heads: int, swiglu: bool = False) -> dict[str, BackboneSpec]:
    return {
        f"dinov2_vit{size}14": BackboneSpec(f"facebook/dinov2-{_HUB_SIZE[size]}", hidden, layers, heads, 0, swiglu),
        f"dinov2_vit{size}14_reg": BackboneSpec(
            f"facebook/dinov2-with-registers-{_HUB_SIZE[size]}", hidden, layers, heads, 4, swiglu
        ),
    }


_HUB_SIZE = {"s": "small", "b": "base", "l": "large", "g": "giant"}

BACKBONES: dict[str, BackboneSpec] = {
    **_meta("s", 384, 12, 6),
    **_meta("b", 768, 12, 12),
    **_meta("l", 1024, 24, 16),
    **_meta("g", 1536, 40, 24, swiglu=True),
    # Tiny random-init models with the same block structure, for tests. Five blocks, so that the default
    # N_l = 2 blocks with LoRA and the 3 frozen blocks are different numbers.
    "test_vit": BackboneSpec(
        None,
        hidden_size=32,
        num_layers=5,
        num_heads=2,
        mlp_ratio=2,
        image_size=224,
        about="a tiny DINOv2-architecture test model with no published weights",
    ),
    "test_vit_reg": BackboneSpec(
        None,
        hidden_size=32,
        num_layers=5,
        num_heads=2,
        registers=4,
        mlp_ratio=2,
        image_size=224,
        about="a tiny DINOv2-architecture test model with no published weights",
    ),
    # The offline demo's backbone: tiny, pretrained without labels on SynthME clips by
    # tools/pretrain_synthme_backbone.py (hlora_mer.synthme.pretrain), shipped inside the package.
    "synthme_vit": BackboneSpec(
        None,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        registers=4,
        mlp_ratio=4,
        image_size=112,
        weights_file="weights/synthme_vit.safetensors",
        about="a tiny DINOv2-architecture model (4 blocks, d=128) pretrained self-supervised, without labels, "
        "on SynthME clips of identities the demo does not use (tools/pretrain_synthme_backbone.py)",
    ),
}


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def has_weights(spec: BackboneSpec) -> bool:
    """Whether pretrained weights exist for ``spec`` somewhere (hub, package); local folders always do."""
    return spec.hub_id is not None or spec.weights_file is not None


def resolve_spec(name: str) -> BackboneSpec:
    """The registered spec for ``name``, or the spec read from a local directory's config.json."""
    if name in BACKBONES:
        return BACKBONES[name]
    path = Path(name).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise BackboneNotFoundError(
                f"backbone directory {path} has no config.json; expected a Hugging Face DINOv2 checkpoint "
                f"folder with config.json and model.safetensors (e.g. from 'hf download facebook/dinov2-giant "
                f"--local-dir {path}')"
            )
        cfg = json.loads(config_file.read_text())
        if cfg.get("model_type") not in ("dinov2", "dinov2_with_registers"):
            raise ConfigError(
                f"{config_file} describes a {cfg.get('model_type')!r} model; expected a DINOv2 checkpoint "
                "(model_type dinov2 or dinov2_with_registers)"
            )
        return BackboneSpec(
            hub_id=None,
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            registers=cfg.get("num_register_tokens", 0) if cfg["model_type"] == "dinov2_with_registers" else 0,
            swiglu=cfg.get("use_swiglu_ffn", False),
            mlp_ratio=cfg.get("mlp_ratio", 4),
            patch_size=cfg.get("patch_size", 14),
            image_size=cfg.get("image_size", 518),
        )
    raise ConfigError(
        f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}, or pass a local directory "
        "that holds a Hugging Face DINOv2 checkpoint (config.json + model.safetensors)"
    )


def _model_class(spec: BackboneSpec) -> type[Dinov2Model] | type[Dinov2WithRegistersModel]:
    from transformers import Dinov2Model, Dinov2WithRegistersModel

    return Dinov2WithRegistersModel if spec.registers else Dinov2Model


def _missing_weights_message(name: str, spec: BackboneSpec, err: Exception) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    hub_id = spec.hub_id
    assert hub_id is not None, "only a hub backbone has weights to download"
    return (
        f"the weights of backbone {name!r} ({hub_id}) are not in the Hugging Face cache ({HF_HUB_CACHE}) "
        f"and could not be downloaded ({type(err).__name__}). On a machine with internet access run\n"
        f"    hf download {hub_id}\n"
        f"and copy its cache folder models--{hub_id.replace('/', '--')} into {HF_HUB_CACHE} here, or run\n"
        f"    hf download {hub_id} --local-dir /path/to/{hub_id.split('/')[-1]}\n"
        f"and pass that folder as the backbone (backbone.name=/path/to/{hub_id.split('/')[-1]}). "
        "For a run without weights, use backbone.pretrained=false or the tiny test_vit backbone."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a download can be tried at all (offline mode, or no route to the hub, answers fast)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def packaged_weights_path(spec: BackboneSpec) -> Path:
    """Where the weights of a backbone shipped inside this package live (they may not exist yet)."""
    from importlib import resources

    if spec.weights_file is None:
        raise ValueError("this backbone has no packaged weights")
    return Path(str(resources.files("hlora_mer").joinpath(spec.weights_file)))


def _empty_model(spec: BackboneSpec) -> DinoModel:
    """The transformers model for ``spec``, freshly initialised (SDPA attention)."""
    from transformers import Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = spec.hf_config()
    config._attn_implementation = "sdpa"
    # hf_config builds the registers config exactly when spec.registers: the class _model_class(spec) names.
    if isinstance(config, Dinov2WithRegistersConfig):
        return Dinov2WithRegistersModel(config)
    return Dinov2Model(config)


def _load_packaged(name: str, spec: BackboneSpec) -> tuple[DinoModel, str]:
    """Load weights shipped inside the package, strictly (every tensor, no extra one)."""
    from safetensors.torch import load

    path = packaged_weights_path(spec)
    if not path.is_file():
        raise BackboneNotFoundError(
            f"the weights of backbone {name!r} should ship with hlora-mer at {path} but are missing; reinstall "
            "the package, or recreate them with 'python tools/pretrain_synthme_backbone.py'"
        )
    data = path.read_bytes()
    model = _empty_model(spec)
    result = model.load_state_dict(load(data), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneNotFoundError(
            f"{path} does not match the {name} architecture: {len(result.missing_keys)} missing tensors "
            f"(first: {sorted(result.missing_keys)[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(first: {sorted(result.unexpected_keys)[:3]}); reinstall the package, or recreate the file with "
            "'python tools/pretrain_synthme_backbone.py'"
        )
    return model, f"hlora_mer/{spec.weights_file}@{hashlib.sha256(data).hexdigest()[:12]}"


# The weight files transformers reads from a folder, in the order it looks for them (config.json aside).
_WEIGHT_CHOICES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# sha256 of local weight files already read in this process, keyed by (path, size, mtime_ns, inode).
_FILE_DIGESTS: dict[tuple[str, int, int, int], str] = {}
# A file changed less than this long ago may change again within the same mtime tick: never cache its hash.
_RACY_NS = 2_000_000_000


def local_weight_files(folder: str | Path) -> list[Path]:
    """The files whose bytes make a local DINOv2 folder's weights: config.json and the weights transformers
    loads (one ``model.safetensors`` / ``pytorch_model.bin``, or a shard index and every shard it names)."""
    folder = Path(folder)
    files = [folder / "config.json"]
    for choice in _WEIGHT_CHOICES:
        path = folder / choice
        if not path.is_file():
            continue
        files.append(path)
        if choice.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise BackboneNotFoundError(
                    f"{path} is not a readable shard index ({type(err).__name__}: {err}); expected the JSON "
                    "file with a 'weight_map' that save_pretrained writes; download the checkpoint again"
                ) from None
            files.extend(folder / shard for shard in shards)
        break
    return [f for f in files if f.is_file()]


def _stat_keys(files: list[Path]) -> dict[str, tuple[str, int, int, int]]:
    keys = {}
    for path in files:
        st = path.stat()
        keys[str(path)] = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    return keys


def local_weights_digest(folder: str | Path, before: dict[str, tuple[str, int, int, int]] | None = None) -> str:
    """The sha256 that identifies a local folder's weights (see :func:`local_weight_files`).

    Each file is hashed once per process while its size, mtime and inode stay the same (the ViT-g weights
    take ~10 s). ``before``: the files' stat keys taken before the weights were loaded; if a file changed
    since, the weights just loaded may not be the ones hashed, and loading is refused.
    """
    from hlora_mer.files import sha256_file

    folder = Path(folder)
    files = local_weight_files(folder)
    keys = _stat_keys(files)
    if before is not None and keys != before:
        raise BackboneNotFoundError(
            f"the weight files in {folder} changed while they were being loaded; load the backbone again "
            "once nothing writes into that folder"
        )
    digest = hashlib.sha256()
    for path in files:
        key = keys[str(path)]
        file_digest = _FILE_DIGESTS.get(key)
        if file_digest is None:
            logger.info("hashing %s to identify the weights (once per process)", path)
            file_digest = sha256_file(path)
            if time.time_ns() - key[2] > _RACY_NS:
                _FILE_DIGESTS[key] = file_digest
        digest.update(f"{path.relative_to(folder)}\0{file_digest}\n".encode())
    return digest.hexdigest()


def _load_pretrained(name: str, spec: BackboneSpec) -> tuple[DinoModel, str]:
    """Load weights strictly from the package, the HF cache (downloading if allowed) or a local directory."""
    if spec.weights_file is not None:
        return _load_packaged(name, spec)
    cls = _model_class(spec)
    if spec.hub_id is None and not Path(name).expanduser().is_dir():
        raise ConfigError(
            f"backbone {name!r} is a random-init test model with no published weights; set backbone.pretrained=false"
        )
    source = str(Path(name).expanduser()) if spec.hub_id is None else spec.hub_id
    stats = _stat_keys(local_weight_files(source)) if spec.hub_id is None else {}
    # from_pretrained is annotated as returning the model alone; with output_loading_info it returns (model, info).
    try:
        try:
            model, info = cast(
                "tuple[DinoModel, dict[str, Any]]",
                cls.from_pretrained(source, local_files_only=True, output_loading_info=True),
            )
        except OSError as err:
            if spec.hub_id is None or not _hub_reachable():
                raise err
            logger.info("%s is not in the Hugging Face cache; trying to download it", spec.hub_id)
            model, info = cast(
                "tuple[DinoModel, dict[str, Any]]", cls.from_pretrained(source, output_loading_info=True)
            )
    except OSError as err:
        if spec.hub_id is None:
            raise BackboneNotFoundError(
                f"could not load DINOv2 weights from {source}: {err}. The folder must hold config.json and "
                "model.safetensors (or pytorch_model.bin) of a Hugging Face DINOv2 checkpoint."
            ) from None
        raise BackboneNotFoundError(_missing_weights_message(name, spec, err)) from None
    # Strict loading: every backbone tensor must come from the checkpoint. HF checkpoints may carry an
    # unused pooler or mask token; anything missing from the model is an error.
    if info.get("missing_keys"):
        raise BackboneNotFoundError(
            f"the checkpoint {source} lacks {len(info['missing_keys'])} backbone tensors "
            f"(first: {sorted(info['missing_keys'])[:5]}); it does not match the {name} architecture"
        )
    if info.get("unexpected_keys"):
        logger.warning(
            "ignored %d unexpected checkpoint tensors: %s",
            len(info["unexpected_keys"]),
            sorted(info["unexpected_keys"])[:5],
        )
    if spec.hub_id is None:
        # A local folder has no revision to name it: its weights' own hash is their identity, so that other
        # weights saved into the same folder get another id (feature caches and checkpoints key on it).
        return model, f"{source}@{local_weights_digest(source, before=stats)[:16]}"
    revision = getattr(model.config, "_commit_hash", None) or "local"
    return model, f"{source}@{revision}"


class DinoBackbone(nn.Module):
    """A DINOv2 model with the prefix / suffix split. Input: normalised pixels ``(N, 3, H, W)``."""

    def __init__(self, model: DinoModel, name: str, weights_id: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.weights_id = weights_id  # identity of the weights, stored with every checkpoint
        self.embed_dim: int = model.config.hidden_size
        self.depth: int = model.config.num_hidden_layers
        # transformers allows non-square patches (a pair); DINOv2 checkpoints have square ones (an int).
        self.patch_size: int = cast(int, model.config.patch_size)
        self.num_prefix_tokens: int = 1 + getattr(model.config, "num_register_tokens", 0)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def check_pixels(self, pixels: torch.Tensor) -> None:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels of shape (N, 3, H, W), got {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"frame size {h}x{w} is not a multiple of the patch size {self.patch_size}")

    def prefix(self, pixels: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Embeddings + the first ``n_blocks`` blocks: ``(N, 3, H, W) -> (N, L, d)`` tokens."""
        tokens = self.model.embeddings(pixels)
        for block in self.blocks[:n_blocks]:
            tokens = block(tokens)
        return tokens

    def suffix(self, tokens: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Blocks from ``n_blocks`` on + the final norm: ``(N, L, d) -> (N, d)`` CLS features."""
        for block in self.blocks[n_blocks:]:
            tokens = block(tokens)
        return self.model.layernorm(tokens)[:, 0]

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W) -> (N, d)`` final-layer-norm CLS features."""
        return self.suffix(self.prefix(pixels, 0), 0)


def build_backbone(name: str, pretrained: bool = True, init_seed: int = 0) -> DinoBackbone:
    """Build a registered backbone (or one from a local directory), with or without its weights.

    Without weights, the model is initialised from ``init_seed`` without touching the global RNG, so
    the same seed rebuilds the same tensors (checkpoints of random-init runs rely on this). Under a
    ``torch.device("meta")`` context nothing is allocated.
    """
    spec = resolve_spec(name)
    if pretrained:
        model, weights_id = _load_pretrained(name, spec)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = _empty_model(spec)
        weights_id = f"random-init:{name}:seed={init_seed}"
    model.eval()
    return DinoBackbone(model, name, weights_id)


def tensor_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's tensors (for tests and for checking that a rebuild matches)."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
