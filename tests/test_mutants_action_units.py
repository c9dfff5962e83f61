"""Mutation-testing companions for data/action_units.py: slash codes in other cases and with two slashes,
tables without an owners' class column, and the agreement under the documented subset rule."""

from __future__ import annotations

import pandas as pd
import pytest

from hlora_mer.data.annotations.action_units import (
    AU,
    active_numbers,
    au_table,
    normalize_objective_class,
    objective_agreement,
    objective_class_from_aus,
    parse_action_units,
)


def test_modifier_alternatives_read_in_any_case() -> None:
    expected = parse_action_units("A/L12").aus
    assert expected is not None and {str(au) for au in expected} == {"A12?"}
    assert parse_action_units("a/L12").aus == expected
    assert parse_action_units("A/l12").aus == expected


def test_two_slashes_keep_the_first_au_and_report_the_rest() -> None:
    parsed = parse_action_units("12/14/15+4")
    assert not parsed.ok and parsed.unparsed == ("14/15",)
    assert active_numbers(parsed.aus) == {4, 12}


def test_a_table_without_owners_classes_reads_the_first_alternative() -> None:
    table = pd.DataFrame({"sample_id": ["s2", "s1"], "action_units": ["R12 or R14", "4+7"]})
    au = au_table(table)
    assert au.index.name == "sample_id" and list(au.index) == ["s2", "s1"]
    assert au.to_dict("index") == {
        "s2": {"AU4": 0, "AU7": 0, "AU12": 1, "AU14": 0},
        "s1": {"AU4": 1, "AU7": 1, "AU12": 0, "AU14": 0},
    }


def test_agreement_follows_the_subset_rule_when_asked() -> None:
    # 1+2+5 is no listed combination (exact: VII); its largest listed subsets, 1+2 and 5, are both class II.
    table = pd.DataFrame({"sample_id": ["a", "b"], "action_units": ["1+2+5", "12"], "objective_class": [2, "I"]})
    exact = objective_agreement(table)
    assert (exact.compared, exact.agreed) == (2, 1)
    assert exact.disagreements.to_dict("records") == [
        {"sample_id": "a", "action_units": "1+2+5", "owner": "II", "from_aus": "VII"}
    ]
    subset = objective_agreement(table, exact=False)
    assert (subset.compared, subset.agreed, subset.rate) == (2, 2, 1.0)
    assert list(subset.disagreements.columns) == ["sample_id", "action_units", "owner", "from_aus"]
    assert subset.disagreements.empty


@pytest.mark.parametrize(
    "numbers, expected",
    [
        ([1, 2], "II"),  # a listed combination is contained in itself
        ([5, 25], "II"),  # a tie between two combinations of one class
        ([1, 6, 7, 12], "I"),  # a smaller combination of another class after the largest does not tie
        ([6, 12, 15], "VII"),  # 6+12 (I) and 6+15 (V): a tie between classes
        ([3, 44], "VII"),  # nothing listed is contained
    ],
)
def test_subset_rule(numbers: list[int], expected: str) -> None:
    assert objective_class_from_aus(numbers, exact=False) == expected


@pytest.mark.parametrize(
    "value, expected",
    [(1, "I"), ("1", "I"), (7.0, "VII"), (8, "8"), (0, "0"), ("iii", "III"), ("n/a", "n/a"), (None, None)],
)
def test_owners_class_normalization(value: object, expected: str | None) -> None:
    assert normalize_objective_class(value) == expected


def test_parsing_goes_on_after_an_empty_term_a_descriptor_and_an_unreadable_alternative() -> None:
    empty = parse_action_units("4++7")
    assert empty.unparsed == ("(empty term)",) and active_numbers(empty.aus) == {4, 7}
    assert active_numbers(parse_action_units("soft focus+12").aus) == {12}
    unreadable = parse_action_units("(xx or R12)+4")
    assert unreadable.unparsed == ("xx",) and active_numbers(unreadable.aus) == {4, 12}


def test_or_in_capitals_and_an_unknown_cell_keep_their_code() -> None:
    assert parse_action_units("12 OR 14").aus == parse_action_units("12 or 14").aus
    assert active_numbers(parse_action_units("12 OR 14").aus) == {12}
    unknown = parse_action_units(" ? ")
    assert unknown.code == "?" and unknown.aus is None


@pytest.mark.parametrize(
    "au, text",
    [
        (AU(6), "6"),
        (AU(12, side="R", intensity="A"), "R12A"),
        (AU(14, modifier="A", k=True), "A14(k)"),
        (AU(5, ref=True, uncertain=True), "ref(5)?"),
        (AU(7, uncertain=True, alternative=True), "or 7?"),
    ],
)
def test_an_au_prints_as_the_owners_write_it(au: AU, text: str) -> None:
    assert str(au) == text
