"""Mutation-testing companions of tests/test_labels.py: class indices, normalised mappings and drops."""

from __future__ import annotations

import pandas as pd
import pytest

from hlora_mer.data.annotations import labels
from hlora_mer.data.annotations.labels import (
    ANY_DATASET,
    LabelScheme,
    apply_label_scheme,
    get_scheme,
    native_scheme,
    register_scheme,
    schemes_for,
)
from hlora_mer.data.table import make_table
from hlora_mer.errors import DatasetError


def test_index_is_the_position_in_the_schemes_order() -> None:
    scheme = get_scheme("casme2_5cls")  # happiness, disgust, repression, surprise, others: not alphabetical
    assert [scheme.index(c) for c in ("others", "happiness", "surprise", "disgust")] == [4, 0, 3, 1]
    with pytest.raises(DatasetError, match="unknown class 'fear'"):
        scheme.index("fear")


def test_mappings_and_drops_are_compared_case_insensitively() -> None:
    scheme = LabelScheme(
        name="mixed_case",
        classes=("warm", "cold"),
        mappings={"toy": {" Happy ": "warm", "SAD": "cold"}},
        dropped={"toy": frozenset({"Fear"})},
    )
    assert [scheme.classify("toy", v) for v in ("happy", "HAPPY", "Sad", "fear", " FEAR")] == [
        "warm",
        "warm",
        "cold",
        None,
        None,
    ]
    assert scheme.allowed_labels("toy") == ["fear", "happy", "sad"]


def test_allowed_labels_of_a_scheme_that_drops_nothing() -> None:
    assert get_scheme("smic_3cls").allowed_labels("smic") == ["negative", "positive", "surprise"]
    assert get_scheme("smic_3cls").allowed_labels("casme2") == []


def test_derivations_are_checked_by_name() -> None:
    scheme = LabelScheme(
        name="derived",
        classes=("I", "II"),
        mappings={ANY_DATASET: {"I": "I", "II": "II"}},
        source_column="action_units",
        derive="objective_from_aus",
    )
    assert scheme.derive == "objective_from_aus"
    with pytest.raises(ValueError, match=r"derived: unknown derivation 'guess'; known: \['objective_from_aus'\]"):
        LabelScheme(name="derived", classes=("I",), mappings={ANY_DATASET: {"I": "I"}}, derive="guess")
    with pytest.raises(ValueError, match=r"twice: repeated class names in \('a', 'b', 'a'\)"):
        LabelScheme(name="twice", classes=("a", "b", "a"), mappings={})


def test_a_scheme_is_registered_once() -> None:
    scheme = LabelScheme(name="mutants_only_once", classes=("x",), mappings={"mutants_toy": {"x": "x"}})
    try:
        assert register_scheme(scheme) is scheme
        assert get_scheme("mutants_only_once") is scheme
        with pytest.raises(ValueError, match="'mutants_only_once' is already registered"):
            register_scheme(scheme)
        assert "mutants_only_once" in schemes_for("mutants_toy")
    finally:
        labels._SCHEMES.pop("mutants_only_once", None)  # leave the registry as the other tests expect it


def test_schemes_for_a_dataset() -> None:
    found = schemes_for("smic")
    assert {"smic_3cls", "megc2019_3cls", "objective_5cls"} <= set(found)  # objective_5cls covers any dataset
    assert "casme2_5cls" not in found and "samm_3cls" not in found
    assert found == sorted(found)


def test_native_scheme_leaves_missing_labels_out() -> None:
    table = pd.DataFrame({"emotion": ["Tense", None, "calm", float("nan"), "tense"], "mood": ["b", "a", "b", "a", "c"]})
    scheme = native_scheme(table)
    assert scheme.name == "native" and scheme.classes == ("calm", "tense") and scheme.source_column == "emotion"
    other = native_scheme(table, name="moods", column="mood")
    assert other.name == "moods" and other.classes == ("a", "b", "c") and other.source_column == "mood"


def _table(values: list[object] | pd.Series, column: str = "emotion") -> pd.DataFrame:
    """A canonical sample table (one subject of dataset ``toy``) whose ``column`` holds ``values``."""
    table = make_table(
        {"dataset": "toy", "subject": "toy/1", "subject_raw": "1", "clip": f"c{i}", "sample_id": f"toy/1/c{i}"}
        for i in range(len(values))
    )
    table[column] = pd.Series(values, index=table.index, dtype=object)
    return table


def test_unknown_labels_are_excluded_one_by_one_and_labelling_goes_on() -> None:
    scheme = LabelScheme(
        name="toy_scheme",
        classes=("calm", "tense"),  # not in the order the rows name them
        mappings={"toy": {"tense": "tense", "calm": "calm"}},
        dropped={"toy": frozenset({"bored"})},
    )
    table = _table(["tense", "angry", "calm", "bored", "tense", None])
    labelled, excluded = apply_label_scheme(table, scheme, unknown="exclude")
    assert list(labelled["sample_id"]) == ["toy/1/c0", "toy/1/c2", "toy/1/c4"]
    assert list(labelled["label_index"]) == [1, 0, 1]
    assert list(excluded["kind"]) == ["unknown_label", "dropped_label", "no_label"]
    assert "allowed labels: ['bored', 'calm', 'tense']" in excluded["reason"].iloc[0]
    with pytest.raises(DatasetError, match=r"unknown emotion 'angry'.*\(samples \['toy/1/c1'\]\)"):
        apply_label_scheme(table, scheme)


def test_labels_that_are_numbers_are_classified() -> None:
    # An owner's column of numbers (an objective class written 1, 2): a number is a label, not a missing value.
    scheme = LabelScheme(
        name="numbered", classes=("two", "one"), mappings={"toy": {"1": "one", "2": "two"}}, source_column="code"
    )
    codes = pd.Series([1, 2, None, 2], dtype=object)  # as read from a spreadsheet with an empty cell
    labelled, excluded = apply_label_scheme(_table(codes, column="code"), scheme)
    assert list(labelled["label"]) == ["one", "two", "two"] and list(labelled["label_index"]) == [1, 0, 0]
    assert list(excluded["kind"]) == ["no_label"]


def test_an_unknown_label_of_a_scheme_without_drops_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match=r"smic_3cls: unknown emotion 'happy'.*allowed labels: \['negative'"):
        get_scheme("smic_3cls").classify("smic", "happy")
