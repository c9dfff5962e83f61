"""Datasets registered by name, and :func:`load_dataset`, the one entry point to read any of them.

Each dataset module registers a :class:`DatasetSpec`: its loader, the owner's annotation file name per
version, and the expected folder layout (shown in every "not found" error). ``load_dataset`` checks the
root, resolves the annotation file, checks the options and calls the loader.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hlora_mer.data.loading import LoadedDataset, first_existing
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSpec:
    """How to read one dataset.

    Attributes:
        name: registry name (``casme2``).
        title: human name (``CASME II``).
        loader: ``loader(root, *, annotation, version, **options) -> LoadedDataset``.
        layout: the expected layout of the dataset root, as shown to users.
        annotations: version -> candidate paths of the owner's annotation file, relative to the root,
            searched in order. Empty for datasets labelled by folders (SMIC, folder trees).
        default_version: the version used when none is given.
        fixed_options: options this name always passes (``smic_vis`` -> ``variant="vis"``).
    """

    name: str
    title: str
    loader: Callable[..., LoadedDataset]
    layout: str
    annotations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_version: str | None = None
    fixed_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(self.annotations)

    def options(self) -> dict[str, Any]:
        """Loader options (keyword-only parameters) with their defaults."""
        params = inspect.signature(self.loader).parameters.values()
        return {
            p.name: p.default
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY
            and p.name not in ("annotation", "version", "spec")
            and p.name not in self.fixed_options
        }


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec registered as ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable)."""
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def _ensure_loaded() -> None:
    # The dataset modules register themselves on import; importing them reads no files.
    import hlora_mer.data.datasets  # noqa: F401


def layout_error(spec: DatasetSpec, problem: str, hint: str = "") -> DatasetError:
    """A DatasetError that shows the expected layout of ``spec``'s root."""
    message = f"{spec.name}: {problem}.\nExpected layout of a {spec.title} root:\n{spec.layout.rstrip()}"
    if hint:
        message += f"\n{hint}"
    return DatasetError(message)


def resolve_annotation(
    spec: DatasetSpec, root: Path, annotation: str | Path | None, version: str | None
) -> Path | None:
    """The annotation file to read: ``annotation`` if given, else the owner's file name in ``root``."""
    if not spec.annotations:
        if annotation is not None:
            raise DatasetError(
                f"{spec.name}: {spec.title} has no annotation file (its folders are the labels); "
                "drop the annotation argument"
            )
        return None
    if annotation is not None:
        path = Path(annotation).expanduser()
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise DatasetError(f"{spec.name}: annotation file {path} does not exist")
        return path
    assert version is not None
    found = first_existing(root, spec.annotations[version])
    if found is not None:
        return found
    others = [v for v in spec.versions if v != version and first_existing(root, spec.annotations[v]) is not None]
    if others:
        hint = (
            f"Found the {', '.join(others)} version instead; pass version={others[0]!r} "
            f"(--version {others[0]}) to use it."
        )
    else:
        hint = "Pass the file explicitly with annotation=PATH (--annotation PATH)."
    expected = " or ".join(spec.annotations[version])
    raise layout_error(spec, f"no {version} annotation file in {root} (looked for {expected})", hint)


def load_dataset(
    name: str,
    root: str | Path,
    *,
    annotation: str | Path | None = None,
    version: str | None = None,
    **options: Any,
) -> LoadedDataset:
    """Read a dataset exactly as its owner distributes it.

    Args:
        name: registry name (``hlora_mer.data.list_datasets()``), e.g. ``casme2``, ``samm``, ``casme3``,
            ``smic``, ``megc2019``, ``manifest``, ``folder_tree``.
        root: the dataset's root folder, unchanged from the download (see ``docs/datasets.md``).
        annotation: the annotation file; default: the owner's file name looked up in ``root``.
        version: annotation version (CASME II ``20190701``/``20140508``/``updated``, CAS(ME)^3
            ``v2``/``v1``); default: the dataset's default version.
        **options: dataset-specific options (``DatasetSpec.options()``), e.g. ``require_frames=True``.

    Returns:
        The canonical table plus the excluded rows, annotation path, md5 and version.

    Raises:
        DatasetError: unknown dataset, version or option; missing root or annotation file (the message
            shows the expected layout); an annotation that does not have the documented columns.
    """
    spec = get_dataset_spec(name)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise layout_error(spec, f"dataset root {root_path} does not exist or is not a folder")
    if spec.annotations:
        version = spec.default_version if version is None else str(version)
        if version not in spec.annotations:
            raise DatasetError(
                f"{spec.name}: unknown annotation version {version!r}; known versions: {list(spec.versions)}"
            )
    elif version is not None:
        raise DatasetError(f"{spec.name}: {spec.title} has no annotation versions; drop version={version!r}")
    allowed = spec.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(
            f"{spec.name}: unknown option(s) {unknown}; {spec.name} accepts: "
            + (", ".join(f"{k} (default {v!r})" for k, v in allowed.items()) or "no options")
        )
    path = resolve_annotation(spec, root_path, annotation, version)
    if path is not None:
        logger.info("%s: reading %s (version %s)", spec.name, path, version)
    return spec.loader(root_path, annotation=path, version=version, **spec.fixed_options, **options)
