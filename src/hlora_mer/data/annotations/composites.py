"""Cross-dataset composites as data: YAML files that list member datasets and map their emotions to shared classes.

A composite names registered datasets (``casme2``, ``samm``, ``smic_hs``, ...), optionally with an annotation
version and loader options each, and for each member the table from the owner's emotion strings (compared
case-insensitively) to the composite's classes, the emotions it leaves out on purpose, and single samples it
leaves out with a reason. The shipped files live in ``hlora_mer/composites/`` and load by name
(``megc2019_3cls``, ``shared_emotion``); a user's own file loads by path. Schema and how to add one:
``docs/datasets.md`` ("Composites").

Every member's rows are labelled with that member's mapping (so ``smic_hs``, whose rows say ``smic``, and
``casme3_ac``, whose rows say ``casme3`` and ``casme3_partc``, need nothing special) and the tables are
concatenated; subjects are already namespaced by dataset, so LOSO folds never mix datasets. The report's
per-dataset scores group by the table's ``dataset`` column.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from hlora_mer.data.annotations.labels import ANY_DATASET, LabelScheme, apply_label_scheme
from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables
from hlora_mer.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

MISSING_CHOICES = ("error", "skip")
_TOP_KEYS = {"name", "description", "source", "classes", "missing", "members"}
_MEMBER_KEYS = {"version", "options", "labels", "drop", "exclude"}


@dataclass(frozen=True)
class CompositeMember:
    """One dataset of a composite.

    Attributes:
        dataset: registered dataset name.
        version: annotation version, or None for the loader's default.
        options: loader options.
        labels: native emotion (lower case) -> composite class.
        drop: native emotions (lower case) left out on purpose.
        exclude: ``subject/clip`` (the owner's spellings) -> why that sample is left out.
    """

    dataset: str
    version: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    exclude: Mapping[str, str] = field(default_factory=dict)

    def scheme(self, composite: str, classes: tuple[str, ...]) -> LabelScheme:
        """The label scheme of this member's rows (whatever their ``dataset`` column says)."""
        return LabelScheme(
            name=f"{composite}[{self.dataset}]",
            classes=classes,
            mappings={ANY_DATASET: dict(self.labels)},
            dropped={ANY_DATASET: self.drop},
        )


@dataclass(frozen=True)
class Composite:
    """A composite read from YAML.

    Attributes:
        name: the composite's name (also the run's ``label_scheme``).
        classes: class names in index order.
        members: the member datasets, in file order.
        missing: ``error``: every member needs a root; ``skip``: members without a root are left out
            (the composite of every dataset present).
        description, source: one line each, for people.
        path: the file it was read from.
    """

    name: str
    classes: tuple[str, ...]
    members: tuple[CompositeMember, ...]
    missing: str = "error"
    description: str = ""
    source: str = ""
    path: Path | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(m.dataset for m in self.members)

    def member(self, dataset: str) -> CompositeMember:
        for m in self.members:
            if m.dataset == dataset:
                return m
        raise ConfigError(f"composite {self.name} has no member {dataset!r}; its members: {list(self.datasets)}")

    def scheme(self) -> LabelScheme:
        """One label scheme for the whole composite, keyed by member name (for ``get_scheme``)."""
        return LabelScheme(
            name=self.name,
            classes=self.classes,
            mappings={m.dataset: dict(m.labels) for m in self.members},
            dropped={m.dataset: m.drop for m in self.members},
            description=self.description or f"composite of {', '.join(self.datasets)}",
        )


def _shipped_dir() -> Any:
    return resources.files("hlora_mer").joinpath("composites")


def list_composites() -> list[str]:
    """Names of the composites shipped with the package."""
    folder = _shipped_dir()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _norm(label: object) -> str:
    return str(label).strip().lower()


def _parse(data: Any, where: str) -> Composite:
    from hlora_mer.data.registry import get_dataset_spec

    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"composite {where}: {problem}; {fix} (schema: docs/datasets.md, 'Composites')")

    if not isinstance(data, dict):
        raise fail(f"expected a mapping with keys {sorted(_TOP_KEYS)}, found {type(data).__name__}", "fix the file")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(f"unknown key(s) {unknown}", f"use only {sorted(_TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise fail(f"'name' must be a plain name, found {name!r}", "set name: my_composite")
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
        raise fail(f"'classes' must list at least two class names, found {classes!r}", "e.g. classes: [a, b]")
    if len(set(classes)) != len(classes):
        raise fail(f"'classes' repeats a name: {classes}", "list each class once")
    missing = data.get("missing", "error")
    if missing not in MISSING_CHOICES:
        raise fail(f"'missing' must be one of {list(MISSING_CHOICES)}, found {missing!r}", "use error or skip")
    members_raw = data.get("members")
    if not isinstance(members_raw, dict) or not members_raw:
        raise fail(f"'members' must map dataset names to their labels, found {members_raw!r}", "add members")
    members = []
    for dataset, spec_raw in members_raw.items():
        at = f"member {dataset!r}"
        try:
            spec = get_dataset_spec(str(dataset))
        except DatasetError as err:
            raise fail(f"{at}: {err}", "use a registered dataset name ('hlora-mer data list')") from None
        if spec.name != dataset:
            raise fail(f"{at} is spelled differently from the registered name {spec.name!r}", f"write {spec.name}")
        if not isinstance(spec_raw, dict):
            raise fail(f"{at}: expected a mapping with 'labels', found {spec_raw!r}", "give the member its labels")
        extra = sorted(set(spec_raw) - _MEMBER_KEYS)
        if extra:
            raise fail(f"{at}: unknown key(s) {extra}", f"use only {sorted(_MEMBER_KEYS)}")
        version = spec_raw.get("version")
        if version is not None:
            version = str(version)
            if version not in spec.versions:
                raise fail(
                    f"{at}: unknown version {version!r}", f"known versions of {spec.name}: {list(spec.versions)}"
                )
        options = spec_raw.get("options") or {}
        if not isinstance(options, dict):
            raise fail(f"{at}: 'options' must be a mapping, found {options!r}", "e.g. options: {require_frames: true}")
        bad_opts = sorted(set(options) - set(spec.options()))
        if bad_opts:
            raise fail(f"{at}: unknown option(s) {bad_opts}", f"{spec.name} accepts {sorted(spec.options())}")
        labels = spec_raw.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise fail(f"{at}: 'labels' must map native emotions to classes, found {labels!r}", "add labels")
        norm = {_norm(k): str(v) for k, v in labels.items()}
        wrong = {k: v for k, v in norm.items() if v not in classes}
        if wrong:
            raise fail(
                f"{at}: labels map to {sorted(set(wrong.values()))}, which are not classes {classes}", "fix them"
            )
        drop_raw = spec_raw.get("drop") or []
        if not isinstance(drop_raw, list):
            raise fail(f"{at}: 'drop' must be a list of native emotions, found {drop_raw!r}", "e.g. drop: [others]")
        drop = frozenset(_norm(x) for x in drop_raw)
        both = sorted(drop & set(norm))
        if both:
            raise fail(f"{at}: {both} are both mapped and dropped", "keep each emotion in one place")
        exclude = spec_raw.get("exclude") or {}
        if not isinstance(exclude, dict) or not all(isinstance(k, str) and "/" in k for k in exclude):
            raise fail(f"{at}: 'exclude' must map subject/clip to a reason, found {exclude!r}", "e.g. 04/EP12_01f: why")
        members.append(
            CompositeMember(
                dataset=spec.name,
                version=version,
                options=dict(options),
                labels=norm,
                drop=drop,
                exclude={k: str(v) for k, v in exclude.items()},
            )
        )
    return Composite(
        name=name.strip(),
        classes=tuple(classes),
        members=tuple(members),
        missing=missing,
        description=str(data.get("description") or ""),
        source=str(data.get("source") or ""),
    )


def load_composite(name_or_path: str | Path) -> Composite:
    """A shipped composite by name, or a user's YAML file by path.

    Raises:
        ConfigError: unknown name (the message lists the shipped ones), unreadable YAML, or a file that does
            not follow the schema (unknown dataset, version or option, a label mapped to no class, ...).
    """
    import yaml

    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if text_name.endswith((".yaml", ".yml")) or path.parent != Path("."):
        if not path.is_file():
            raise ConfigError(f"composite file {path} does not exist; pass a YAML file or one of {list_composites()}")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        shipped = _shipped_dir().joinpath(f"{text_name}.yaml")
        if not shipped.is_file():
            raise ConfigError(
                f"unknown composite {text_name!r}; shipped composites: {', '.join(list_composites())} "
                "(or pass the path of your own YAML file)"
            )
        text, where, path = shipped.read_text(encoding="utf-8"), text_name, Path(str(shipped))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"composite {where} is not valid YAML: {err}") from None
    composite = _parse(data, where)
    return Composite(**{**composite.__dict__, "path": path})


def label_member(
    composite: Composite, member: CompositeMember, table: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One member's rows labelled with its mapping: ``(labelled, excluded)``, excluded with kind and reason.

    Raises:
        DatasetError: an emotion the member neither maps nor drops (the message lists the allowed ones),
            or an ``exclude`` entry that names no sample of the member.
    """
    keys = [f"{s}/{c}" for s, c in zip(table["subject_raw"], table["clip"], strict=True)]
    unknown = sorted(set(member.exclude) - set(keys))
    if unknown:
        raise DatasetError(
            f"composite {composite.name}: member {member.dataset} excludes {unknown}, which are not samples of "
            "its annotation (subject/clip as the owner writes them); fix the composite file or the version"
        )
    out = pd.Series([k in member.exclude for k in keys], index=table.index)
    left_out = table[out].copy()
    left_out["kind"] = "composite_exclude"
    left_out["reason"] = [f"{composite.name}: {member.exclude[k]}" for k, o in zip(keys, out, strict=True) if o]
    try:
        labelled, dropped = apply_label_scheme(table[~out], member.scheme(composite.name, composite.classes))
    except DatasetError as err:
        raise DatasetError(
            f"composite {composite.name}, member {member.dataset}: {err}. Map it in the member's 'labels' or "
            "list it under 'drop'"
        ) from None
    excluded = concat_tables([dropped, left_out[list(EXCLUDED_COLUMNS)]], EXCLUDED_COLUMNS)
    return labelled, excluded


def load_composite_table(
    composite: Composite,
    roots: Mapping[str, str | Path | None],
    *,
    versions: Mapping[str, str | None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read every member present and label it: ``(labelled, excluded, info)``.

    Args:
        composite: from :func:`load_composite`.
        roots: dataset name -> root folder; a member without one is an error, or skipped with ``missing: skip``.
        versions, options: per-dataset overrides of the composite's own versions and options.

    Returns:
        The labelled table (``label``, ``label_index``), the rows left out (by the loaders, the mapping or an
        ``exclude`` entry), and per-member provenance (``skipped`` for members without a root).
    """
    from hlora_mer.data.registry import load_dataset

    tables: list[pd.DataFrame] = []
    excluded: list[pd.DataFrame] = []
    info: dict[str, Any] = {}
    absent = [m.dataset for m in composite.members if not roots.get(m.dataset)]
    if absent and composite.missing == "error":
        raise DatasetError(
            f"composite {composite.name} needs every member; no root folder for {absent}: pass "
            + " ".join(f"data.roots.{d}=/path/to/{d}" for d in absent)
        )
    if len(absent) == len(composite.members):
        raise DatasetError(
            f"composite {composite.name}: no member has a root folder; set at least one of "
            + ", ".join(f"data.roots.{d}" for d in composite.datasets)
        )
    for member in composite.members:
        root = roots.get(member.dataset)
        if not root:
            logger.info("composite %s: %s has no root folder; left out", composite.name, member.dataset)
            info[member.dataset] = {"skipped": "no root folder"}
            continue
        version = (versions or {}).get(member.dataset) or member.version
        opts = {**member.options, **((options or {}).get(member.dataset) or {})}
        loaded = load_dataset(member.dataset, root, version=version, **opts)
        labelled, left_out = label_member(composite, member, loaded.table)
        tables.append(labelled)
        excluded.extend([loaded.excluded, left_out])
        info[member.dataset] = {
            "root": str(root),
            "version": loaded.version,
            "annotation_md5": loaded.annotation_md5,
            "samples": len(labelled),
        }
    table = pd.concat(tables, ignore_index=True)
    logger.info(
        "composite %s: %d samples (%s)",
        composite.name,
        len(table),
        ", ".join(f"{d} {n}" for d, n in table["dataset"].value_counts(sort=False).items()),
    )
    return table, concat_tables(excluded, EXCLUDED_COLUMNS), info
