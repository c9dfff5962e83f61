"""Applying a trained model outside its run: find its checkpoint, rebuild it, prepare new clips as it was trained.

``predict``, ``export`` and ``explain`` all start here:

- :func:`resolve_checkpoint` turns what the user names (a run folder, a fold folder or a checkpoint folder)
  into one checkpoint folder, or says which ones there are to choose from;
- :func:`load_trained` rebuilds the model on its backbone (refusing a backbone with other weights unless
  allowed) and returns the preprocessing its clips went through;
- new clips are prepared by the same code as ``hlora-mer preprocess`` (``hlora_mer.preprocess.run``), with
  the parameters stored in the checkpoint, so a clip is sampled and aligned exactly as in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hlora_mer.errors import UserError

if TYPE_CHECKING:
    from hlora_mer.models.mer_model import MERModel
    from hlora_mer.preprocess.run import PreprocessParams

logger = logging.getLogger(__name__)


def _checkpoints_under(folder: Path) -> list[Path]:
    from hlora_mer.models.checkpoint import META_FILE

    return sorted(p.parent for p in folder.rglob(META_FILE))


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder that ``path`` names.

    ``path`` may be a checkpoint folder (``checkpoint.json`` + ``model.safetensors``), a fold folder holding
    ``checkpoint/``, or a run folder with exactly one checkpoint (an all-subjects run, ``eval.protocol=all``).

    Raises:
        UserError: nothing there, or several checkpoints (a LOSO run has one per fold): the message lists them.
    """
    from hlora_mer.models.checkpoint import META_FILE
    from hlora_mer.run_folder import CHECKPOINT_DIR

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run folder of 'hlora-mer train' or a checkpoint folder")
    if (path / META_FILE).is_file():
        return path
    if (path / CHECKPOINT_DIR / META_FILE).is_file():
        return path / CHECKPOINT_DIR
    found = _checkpoints_under(path) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(
            f"{path} holds no checkpoint ({META_FILE} + model.safetensors); pass a run folder of 'hlora-mer "
            "train' (train.save_checkpoints=true) or a checkpoint folder"
        )
    shown = "\n".join(f"  {p}" for p in found[:8]) + (f"\n  ... and {len(found) - 8} more" if len(found) > 8 else "")
    raise UserError(
        f"{path} holds {len(found)} checkpoints (one per fold and seed); pass one of them, or train a model on "
        f"every subject with eval.protocol=all (configs/all_subjects_*.yaml):\n{shown}"
    )


@dataclass
class TrainedModel:
    """A model rebuilt from its checkpoint, with what is needed to apply it to new clips."""

    model: MERModel
    meta: dict[str, Any]
    checkpoint: Path
    labels: list[str]
    params: PreprocessParams

    @property
    def num_frames(self) -> int:
        return self.params.num_frames

    @property
    def image_size(self) -> int:
        return self.params.size


def preprocess_params_of(meta: dict[str, Any], checkpoint: Path) -> PreprocessParams:
    """The preprocessing a checkpoint's model was trained on (from its ``checkpoint.json``, or, for a
    checkpoint written before it recorded them, from the ``config.yaml`` of the run folder around it)."""
    from hlora_mer.preprocess.run import PreprocessParams

    ident = meta.get("preprocess")
    if ident is None:
        from hlora_mer.run_folder import CONFIG_FILE, read_config
        from hlora_mer.training.data import preprocess_params

        for parent in checkpoint.parents:
            if (parent / CONFIG_FILE).is_file():
                return preprocess_params(read_config(parent))
        raise UserError(
            f"{checkpoint} records neither the preprocessing its model was trained on nor sits in a run folder "
            "whose config.yaml does; retrain it with this version of hlora-mer"
        )
    fields = {
        "num_frames": "num_frames",
        "size": "size",
        "detector": "detector",
        "margin": "margin",
        "sampling": "sampling",
        "fill": "fill",
    }
    # A model trained on estimated apexes gets its clips' missing apex estimated the same way.
    values: dict[str, Any] = {k: ident[v] for k, v in fields.items() if v in ident}
    if ident.get("estimate_apex"):
        values["estimate_apex"] = True
    landmarks = ident.get("landmark_model")
    if landmarks:
        # Where the model's own landmark model was; check_landmark_model says when it is not there any more
        # (a checkpoint written before paths were recorded has only the file's name).
        values["landmark_model"] = landmarks.get("path") or landmarks.get("name")
    return PreprocessParams(**values)


def check_landmark_model(trained: TrainedModel) -> None:
    """Refuse to align new clips unless the dlib landmark model the model was trained with is where its
    checkpoint says, with the same SHA-256; never fall back to the default model.

    Raises:
        UserError: the file is missing or another file, or the checkpoint does not record where it was.
    """
    from hlora_mer.preprocess.run import landmark_model_identity

    params = trained.params
    if params.detector != "dlib" or params.landmark_model is None:
        return
    recorded = (trained.meta.get("preprocess") or {}).get("landmark_model") or {}
    what = f"the model {trained.checkpoint} was trained with the dlib landmark model {params.landmark_model}"
    if recorded and not recorded.get("path"):
        raise UserError(
            f"{what} ({recorded.get('size')} bytes), but its checkpoint does not record where that file was; "
            "retrain it with this version of hlora-mer (data.landmark_model), which records the path and checksum"
        )
    found = landmark_model_identity(params.landmark_model)
    if found["sha256"] is None:
        raise UserError(
            f"{what}, which is not there any more; put that file back at {found['path']} (clips aligned with "
            "another landmark model are not what the model was trained on)"
        )
    if recorded.get("sha256") and recorded["sha256"] != found["sha256"]:
        raise UserError(
            f"{what} (SHA-256 {recorded['sha256'][:16]}...), but the file there now is another one (SHA-256 "
            f"{found['sha256'][:16]}...); put the model's own landmark model back at {found['path']}"
        )


def checkpoint_meta(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint folder that ``path`` names and its ``checkpoint.json``, without building the model
    (to check what a model predicts before the slow part).

    Raises:
        UserError: as :func:`resolve_checkpoint`, or the folder is not a readable checkpoint.
    """
    from hlora_mer.models.checkpoint import META_FILE, read_checkpoint_meta

    checkpoint = resolve_checkpoint(path)
    try:
        return checkpoint, read_checkpoint_meta(checkpoint)
    except (ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
        raise UserError(
            f"{checkpoint / META_FILE} cannot be read ({type(err).__name__}: {err}); the checkpoint is damaged: "
            "copy it again from its run folder, or train again"
        ) from None


def load_trained(path: str | Path, *, allow_mismatch: bool = False, map_location: str = "cpu") -> TrainedModel:
    """Resolve ``path`` (:func:`resolve_checkpoint`) and rebuild its model, in eval mode.

    Raises:
        UserError: no single checkpoint there, or its backbone's weights are not those it was trained on
            (unless ``allow_mismatch``).
    """
    from hlora_mer.models.checkpoint import load_checkpoint

    checkpoint, _ = checkpoint_meta(path)  # a damaged checkpoint.json is one message, not a traceback
    model, meta = load_checkpoint(checkpoint, map_location, allow_mismatch=allow_mismatch)
    labels = meta.get("labels")
    if not labels:
        raise UserError(f"{checkpoint} records no label names; retrain it with this version of hlora-mer")
    params = preprocess_params_of(meta, checkpoint)
    cfg = model.config
    assert cfg is not None  # load_checkpoint builds the model from its config
    if params.num_frames != cfg.num_frames or params.size != cfg.image_size:
        raise UserError(
            f"{checkpoint} is inconsistent: its model takes {cfg.num_frames} frames of {cfg.image_size} px "
            f"but its preprocessing makes {params.num_frames} of {params.size} px"
        )
    model.eval()
    return TrainedModel(model, meta, checkpoint, list(labels), params)
