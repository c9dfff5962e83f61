"""Label schemes as data: which native emotions become which class, per dataset.

A :class:`LabelScheme` is a table, not a code path: for each dataset it maps the owner's emotion strings
(compared case-insensitively, so SAMM's ``Anger`` and CAS(ME)^3's ``Others`` need no special code) to the
scheme's classes, and lists the native emotions it leaves out on purpose (``fear`` and ``sadness`` in the
CASME II 5-class scheme). :func:`apply_label_scheme` adds ``label`` and ``label_index`` columns and returns
the rows it left out, each with its reason. An emotion that the scheme neither maps nor drops is an error
that lists the allowed labels: it is a typo or the wrong scheme, never something to skip silently.

Mappings and counts: ``docs/datasets.md``; user docs: ``docs/datasets.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pandas as pd

from hlora_mer.data.table import EXCLUDED_COLUMNS, concat_tables, empty_table
from hlora_mer.errors import DatasetError

logger = logging.getLogger(__name__)

ANY_DATASET = "*"
"""Key of a mapping that applies to every dataset without its own mapping."""


def _norm(label: object) -> str:
    return str(label).strip().lower()


@dataclass(frozen=True)
class LabelScheme:
    """An ordered set of classes and, per dataset, how native labels map onto them.

    Attributes:
        name: registry name (``casme2_5cls``).
        classes: class names in index order (``label_index`` is the position here).
        mappings: dataset -> {native label (lower case) -> class}; key ``"*"`` applies to any dataset.
        dropped: dataset -> native labels (lower case) left out on purpose.
        source_column: table column holding the native label (``emotion`` or ``objective_class``).
        description: one line for ``hlora-mer data list``.
        counts: the expected per-class counts (documentation and tests), keyed by a short source name.
        derive: name of a derivation in ``DERIVATIONS`` that computes the native label from the table
            (``objective_from_aus``: the MEGC2018 objective class of the parsed ``action_units``)
            instead of reading ``source_column`` as written.
    """

    name: str
    classes: tuple[str, ...]
    mappings: Mapping[str, Mapping[str, str]]
    dropped: Mapping[str, frozenset[str]] = field(default_factory=dict)
    source_column: str = "emotion"
    description: str = ""
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    derive: str | None = None

    def __post_init__(self) -> None:
        if self.derive is not None and self.derive not in DERIVATIONS:
            raise ValueError(f"{self.name}: unknown derivation {self.derive!r}; known: {sorted(DERIVATIONS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"{self.name}: repeated class names in {self.classes}")
        norm_maps = {}
        dropped = {k: frozenset(_norm(x) for x in v) for k, v in self.dropped.items()}
        for dataset, mapping in self.mappings.items():
            norm = {_norm(k): v for k, v in mapping.items()}
            bad = sorted(set(norm.values()) - set(self.classes))
            if bad:
                raise ValueError(f"{self.name}: {dataset} maps to {bad}, which are not classes {self.classes}")
            overlap = set(norm) & dropped.get(dataset, frozenset())
            if overlap:
                raise ValueError(f"{self.name}: {dataset} both maps and drops {sorted(overlap)}")
            norm_maps[dataset] = MappingProxyType(norm)
        object.__setattr__(self, "mappings", MappingProxyType(norm_maps))
        object.__setattr__(self, "dropped", MappingProxyType(dropped))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.mappings)

    def index(self, label: str) -> int:
        """Index of a class name.

        Raises:
            DatasetError: ``label`` is not one of ``classes``; the message lists them.
        """
        if label not in self.classes:
            raise DatasetError(f"{self.name}: unknown class {label!r}; allowed classes: {list(self.classes)}")
        return self.classes.index(label)

    def _key(self, dataset: str) -> str | None:
        if dataset in self.mappings:
            return dataset
        return ANY_DATASET if ANY_DATASET in self.mappings else None

    def allowed_labels(self, dataset: str) -> list[str]:
        """Native labels this scheme knows for ``dataset`` (mapped or dropped)."""
        key = self._key(dataset)
        if key is None:
            return []
        return sorted(set(self.mappings[key]) | set(self.dropped.get(key, ())))

    def classify(self, dataset: str, native: object) -> str | None:
        """The class of a native label, or None if the scheme drops it.

        Raises:
            DatasetError: the scheme has no mapping for ``dataset``, or ``native`` is neither mapped nor
                dropped; the message lists the allowed labels.
        """
        key = self._key(dataset)
        if key is None:
            raise DatasetError(
                f"label scheme {self.name} does not cover dataset {dataset!r}; it covers {list(self.datasets)}. "
                f"Schemes for {dataset!r}: {schemes_for(dataset) or 'none'}"
            )
        label = _norm(native)
        if label in self.mappings[key]:
            return self.mappings[key][label]
        if label in self.dropped.get(key, ()):
            return None
        raise DatasetError(
            f"{self.name}: unknown {self.source_column} {native!r} in dataset {dataset!r}; "
            f"allowed labels: {self.allowed_labels(dataset)}"
        )


def _objective_from_aus(table: pd.DataFrame) -> list[str | None]:
    """The MEGC2018 objective class of each row's parsed AUs; None where the AUs are unknown or unreadable."""
    from hlora_mer.data.annotations.action_units import objective_class_from_aus, parse_action_units

    out: list[str | None] = []
    owners = table["objective_class"] if "objective_class" in table.columns else [None] * len(table)
    for code, owner in zip(table["action_units"], owners, strict=True):
        parsed = parse_action_units(code, owner_class=owner)  # an 'or' is read as the owners' class implies
        out.append(objective_class_from_aus(parsed.aus) if parsed.ok else None)
    return out


DERIVATIONS = {"objective_from_aus": _objective_from_aus}
"""Derived native labels: name -> function of the sample table returning one value per row."""

_SCHEMES: dict[str, LabelScheme] = {}


def register_scheme(scheme: LabelScheme) -> LabelScheme:
    if scheme.name in _SCHEMES:
        raise ValueError(f"label scheme {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def list_schemes() -> list[str]:
    return sorted(_SCHEMES)


def schemes_for(dataset: str) -> list[str]:
    return sorted(n for n, s in _SCHEMES.items() if dataset in s.mappings or ANY_DATASET in s.mappings)


def get_scheme(name: str | LabelScheme) -> LabelScheme:
    """The scheme registered as ``name`` (a ``LabelScheme`` passes through).

    Raises:
        DatasetError: unknown name; the message lists the registered schemes.
    """
    if isinstance(name, LabelScheme):
        return name
    key = name.strip().lower()
    if key not in _SCHEMES:
        from hlora_mer.data.annotations.composites import list_composites, load_composite

        if key in list_composites():  # a shipped composite's mapping is a scheme too (docs/datasets.md)
            return load_composite(key).scheme()
        raise DatasetError(
            f"unknown label scheme {name!r}; known schemes: {', '.join(list_schemes())}; "
            f"composites: {', '.join(list_composites())}"
        )
    return _SCHEMES[key]


def native_scheme(table: pd.DataFrame, name: str = "native", column: str = "emotion") -> LabelScheme:
    """A scheme whose classes are the native labels found in ``table`` (for users' own data)."""
    labels = sorted({_norm(v) for v in table[column] if v is not None and not pd.isna(v)})
    return LabelScheme(
        name=name,
        classes=tuple(labels),
        mappings={ANY_DATASET: {label: label for label in labels}},
        source_column=column,
        description="the native labels of the table, in alphabetical order",
    )


def apply_label_scheme(
    table: pd.DataFrame, scheme: str | LabelScheme, *, unknown: str = "error"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label a sample table with a scheme.

    Args:
        table: canonical sample table.
        scheme: a registered scheme name or a ``LabelScheme``.
        unknown: ``error`` (default) raises on a native label the scheme does not know; ``exclude``
            leaves such rows out with kind ``unknown_label``.

    Returns:
        ``(labelled, excluded)``: the rows the scheme keeps, with ``label`` (class name) and
        ``label_index`` (position in ``scheme.classes``) columns, and the rows it leaves out with
        ``kind`` and ``reason`` (same columns as ``LoadedDataset.excluded``).

    Raises:
        DatasetError: unknown scheme; a dataset the scheme does not cover; an unknown label (with
            ``unknown="error"``), listing the allowed labels.
    """
    scheme = get_scheme(scheme)
    if unknown not in ("error", "exclude"):
        raise ValueError(f"unknown must be 'error' or 'exclude', got {unknown!r}")
    if scheme.source_column not in table.columns:
        raise DatasetError(f"{scheme.name} reads column {scheme.source_column!r}, which the table lacks")
    labels: list[str | None] = []
    kinds: list[str | None] = []
    reasons: list[str | None] = []
    source = (
        pd.Series(DERIVATIONS[scheme.derive](table), index=table.index, dtype=object)
        if scheme.derive
        else table[scheme.source_column]
    )
    for dataset, native in zip(table["dataset"], source, strict=True):
        if native is None or (not isinstance(native, str) and pd.isna(native)):
            labels.append(None)
            kinds.append("no_label")
            reasons.append(
                f"no {scheme.derive}: {scheme.source_column} missing, '?' or unreadable (scheme {scheme.name})"
                if scheme.derive
                else f"no {scheme.source_column} in the annotation (scheme {scheme.name})"
            )
            continue
        try:
            label = scheme.classify(dataset, native)
        except DatasetError as err:
            if unknown == "error" or scheme._key(dataset) is None:
                bad = table.loc[source == native, "sample_id"].head(5).tolist()
                raise DatasetError(f"{err} (samples {bad})") from None
            labels.append(None)
            kinds.append("unknown_label")
            reasons.append(str(err))
            continue
        labels.append(label)
        kinds.append(None if label is not None else "dropped_label")
        reasons.append(None if label is not None else f"{scheme.source_column} {native!r} is not used by {scheme.name}")
    keep = pd.Series([label is not None for label in labels], index=table.index)
    labelled = table[keep].copy()
    labelled["label"] = [label for label in labels if label is not None]
    labelled["label_index"] = [scheme.classes.index(label) for label in labelled["label"]]
    labelled = labelled.reset_index(drop=True)
    dropped = table[~keep].copy()
    dropped["kind"] = [k for k, ok in zip(kinds, keep, strict=True) if not ok]
    dropped["reason"] = [r for r, ok in zip(reasons, keep, strict=True) if not ok]
    excluded = (
        concat_tables([dropped[list(EXCLUDED_COLUMNS)]], EXCLUDED_COLUMNS)
        if len(dropped)
        else empty_table(EXCLUDED_COLUMNS)
    )
    logger.info(
        "%s: %d samples labelled (%s), %d left out",
        scheme.name,
        len(labelled),
        labelled["label"].value_counts().reindex(scheme.classes, fill_value=0).to_dict(),
        len(excluded),
    )
    return labelled, excluded


# ---------------------------------------------------------------------------------------------------
# The registered schemes. Counts are the HLoRA-MER paper's (Tables 1, 2) unless noted.

_CASME2_NEGATIVE = ("disgust", "repression", "fear", "sadness")
_SAMM_NEGATIVE = ("anger", "contempt", "disgust", "fear", "sadness")

register_scheme(
    LabelScheme(
        name="casme2_5cls",
        classes=("happiness", "disgust", "repression", "surprise", "others"),
        mappings={"casme2": {c: c for c in ("happiness", "disgust", "repression", "surprise", "others")}},
        dropped={"casme2": frozenset({"fear", "sadness"})},
        description="CASME II 5-class: fear and sadness dropped, nothing merged",
        counts={"20190701": {"happiness": 32, "disgust": 63, "repression": 27, "surprise": 28, "others": 99}},
    )
)
register_scheme(
    LabelScheme(
        name="casme2_3cls",
        classes=("negative", "positive", "surprise"),
        mappings={
            "casme2": {"happiness": "positive", "surprise": "surprise", **{e: "negative" for e in _CASME2_NEGATIVE}}
        },
        dropped={"casme2": frozenset({"others"})},
        description="HLoRA-MER 3-class on CASME II: negative = disgust+repression+fear+sadness; others dropped",
        counts={"20190701": {"negative": 96, "positive": 32, "surprise": 28}},
    )
)
register_scheme(
    LabelScheme(
        name="samm_5cls",
        classes=("happiness", "anger", "contempt", "surprise", "others"),
        mappings={
            "samm": {
                "happiness": "happiness",
                "anger": "anger",
                "contempt": "contempt",
                "surprise": "surprise",
                "other": "others",
                "others": "others",
            }
        },
        dropped={"samm": frozenset({"disgust", "fear", "sadness"})},
        description="SAMM 5-class: disgust, fear and sadness dropped; 'Other' becomes others",
        counts={"v2": {"happiness": 26, "anger": 57, "contempt": 12, "surprise": 15, "others": 26}},
    )
)
register_scheme(
    LabelScheme(
        name="samm_3cls",
        classes=("negative", "positive", "surprise"),
        mappings={"samm": {"happiness": "positive", "surprise": "surprise", **{e: "negative" for e in _SAMM_NEGATIVE}}},
        dropped={"samm": frozenset({"other", "others"})},
        description="HLoRA-MER 3-class on SAMM: negative = anger+contempt+disgust+fear+sadness; Other dropped",
        counts={"v2": {"negative": 92, "positive": 26, "surprise": 15}},
    )
)
register_scheme(
    LabelScheme(
        name="megc2019_3cls",
        classes=("negative", "positive", "surprise"),  # indices 0/1/2 as in combined_3class_gt.csv
        mappings={
            # CASME II as in MEGC2019 (20140508 labels): fear and sadness are not negative here.
            "casme2": {
                "happiness": "positive",
                "surprise": "surprise",
                "disgust": "negative",
                "repression": "negative",
            },
            "samm": {"happiness": "positive", "surprise": "surprise", **{e: "negative" for e in _SAMM_NEGATIVE}},
            "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
        },
        dropped={
            "casme2": frozenset({"others", "fear", "sadness"}),
            "samm": frozenset({"other", "others"}),
        },
        description="MEGC2019 composite 3-class; membership is exactly combined_3class_gt.csv (load 'megc2019')",
        counts={"megc2019": {"negative": 250, "positive": 109, "surprise": 83}},
    )
)
register_scheme(
    LabelScheme(
        name="smic_3cls",
        classes=("negative", "positive", "surprise"),
        mappings={"smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"}},
        description="SMIC folder labels",
        counts={"hs": {"negative": 70, "positive": 51, "surprise": 43}},
    )
)
_CASME3_7 = {
    "happy": "happiness",
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "surprise": "surprise",
    "sad": "sadness",
    "others": "others",
}
register_scheme(
    LabelScheme(
        name="casme3_7cls",
        classes=("happiness", "anger", "disgust", "fear", "surprise", "sadness", "others"),
        mappings={"casme3": _CASME3_7},
        description="CAS(ME)^3 7-class: the emotion column (happy->happiness, sad->sadness, Others->others)",
        counts={
            "v2": {
                "happiness": 55,
                "anger": 64,
                "disgust": 250,
                "fear": 86,
                "surprise": 187,
                "sadness": 57,
                "others": 161,
            },
            "paper": {
                "happiness": 64,
                "anger": 70,
                "disgust": 281,
                "fear": 93,
                "surprise": 201,
                "sadness": 64,
                "others": 170,
            },
        },
    )
)
_CASME3_4 = {
    "happy": "positive",
    "surprise": "surprise",
    "others": "others",
    **{e: "negative" for e in ("disgust", "fear", "anger", "sad")},
}
# Part C is labelled in these four classes already (casme3_partc, and casme3_ac with Part A).
_CASME3_PARTC = {c: c for c in ("negative", "positive", "surprise", "others")}
register_scheme(
    LabelScheme(
        name="casme3_4cls",
        classes=("negative", "positive", "surprise", "others"),
        mappings={"casme3": _CASME3_4, "casme3_partc": _CASME3_PARTC},
        description="CAS(ME)^3 4-class: negative = disgust+fear+anger+sad; Part C's own 4 classes",
        counts={"v2": {"negative": 457, "positive": 55, "surprise": 187, "others": 161}},
    )
)
register_scheme(
    LabelScheme(
        name="casme3_3cls",
        classes=("negative", "positive", "surprise"),
        mappings={
            "casme3": {k: v for k, v in _CASME3_4.items() if v != "others"},
            "casme3_partc": {k: v for k, v in _CASME3_PARTC.items() if v != "others"},
        },
        dropped={"casme3": frozenset({"others"}), "casme3_partc": frozenset({"others"})},
        description="CAS(ME)^3 3-class: the 4-class scheme without others",
        counts={"v2": {"negative": 457, "positive": 55, "surprise": 187}},
    )
)
register_scheme(
    LabelScheme(
        name="hde_3cls",
        classes=("happiness", "surprise", "others"),
        mappings={
            "casme2": {"happiness": "happiness", "surprise": "surprise", "others": "others"},
            "samm": {"happiness": "happiness", "surprise": "surprise", "other": "others", "others": "others"},
        },
        dropped={"casme2": frozenset(_CASME2_NEGATIVE), "samm": frozenset(_SAMM_NEGATIVE)},
        description="holdout-database evaluation: the classes common to CASME II and SAMM 5-class",
        counts={
            "casme2_20190701": {"happiness": 32, "surprise": 28, "others": 99},
            "samm_v2": {"happiness": 26, "surprise": 15, "others": 26},
        },
    )
)
register_scheme(
    LabelScheme(
        name="objective_5cls",
        classes=("I", "II", "III", "IV", "V"),
        mappings={ANY_DATASET: {c: c for c in ("I", "II", "III", "IV", "V")}},
        dropped={ANY_DATASET: frozenset({"VI", "VII"})},
        source_column="objective_class",
        description="MEGC2018 objective classes I-V (VI and VII dropped)",
        counts={
            "casme2_objective_file": {"I": 25, "II": 15, "III": 99, "IV": 26, "V": 20},
            "samm_v2": {"I": 24, "II": 13, "III": 20, "IV": 8, "V": 3},
        },
    )
)
register_scheme(
    LabelScheme(
        name="objective_5cls_aus",
        classes=("I", "II", "III", "IV", "V"),
        mappings={ANY_DATASET: {c: c for c in ("I", "II", "III", "IV", "V")}},
        dropped={ANY_DATASET: frozenset({"VI", "VII"})},
        source_column="action_units",
        derive="objective_from_aus",
        description="MEGC2018 objective classes I-V computed from the parsed action units (any dataset with AUs)",
        counts={
            "casme2_20190701": {"I": 30, "II": 18, "III": 93, "IV": 13, "V": 18},
            "casme2_20140508": {"I": 24, "II": 15, "III": 98, "IV": 14, "V": 21},
            "samm_v2": {"I": 20, "II": 13, "III": 18, "IV": 6, "V": 3},
            "casme3_v2": {"I": 15, "II": 151, "III": 234, "IV": 37, "V": 47},
        },
    )
)
register_scheme(
    LabelScheme(
        name="meview_3cls",
        classes=("negative", "positive", "surprise"),
        mappings={
            "meview": {
                "negative": "negative",
                "positive": "positive",
                "surprise": "surprise",
                "happiness": "positive",
                "happy": "positive",
                **{e: "negative" for e in ("anger", "contempt", "disgust", "fear", "sadness", "sad")},
            }
        },
        dropped={"meview": frozenset({"others", "other", "unclear"})},
        description="MEVIEW 3-class (paper: 6 positive, 7 surprise, 18 negative); native strings UNCONFIRMED",
        counts={"paper": {"negative": 18, "positive": 6, "surprise": 7}},
    )
)
