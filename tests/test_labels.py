"""Label schemes are data: mappings, drops, unknown labels and class indices."""

from __future__ import annotations

import pytest

from hlora_mer.data.annotations.labels import LabelScheme, apply_label_scheme, get_scheme, list_schemes, native_scheme
from hlora_mer.data.table import make_table
from hlora_mer.errors import DatasetError


def table(dataset: str, emotions: list[str]):
    return make_table(
        {
            "dataset": dataset,
            "subject": f"{dataset}/1",
            "subject_raw": "1",
            "clip": f"c{i}",
            "sample_id": f"{dataset}/1/c{i}",
            "onset": 1,
            "offset": 9,
            "emotion": emotion,
        }
        for i, emotion in enumerate(emotions)
    )


def test_registered_schemes():
    assert set(list_schemes()) >= {
        "casme2_5cls",
        "casme2_3cls",
        "samm_5cls",
        "samm_3cls",
        "megc2019_3cls",
        "casme3_7cls",
        "casme3_4cls",
        "casme3_3cls",
        "hde_3cls",
        "objective_5cls",
        "meview_3cls",
    }
    assert get_scheme("megc2019_3cls").classes == ("negative", "positive", "surprise")  # CSV labels 0, 1, 2
    assert get_scheme("casme2_5cls").num_classes == 5


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(DatasetError, match="unknown label scheme 'casme2_4cls'; known schemes: .*casme2_5cls"):
        get_scheme("casme2_4cls")


def test_unknown_native_label_lists_the_allowed_ones():
    with pytest.raises(
        DatasetError,
        match=r"casme2_5cls: unknown emotion 'hapiness' in dataset 'casme2'; allowed labels: \['disgust', 'fear', "
        r"'happiness', 'others', 'repression', 'sadness', 'surprise'\] \(samples \['casme2/1/c1'\]\)",
    ):
        apply_label_scheme(table("casme2", ["happiness", "hapiness"]), "casme2_5cls")
    labelled, excluded = apply_label_scheme(
        table("casme2", ["happiness", "hapiness"]), "casme2_5cls", unknown="exclude"
    )
    assert labelled["sample_id"].tolist() == ["casme2/1/c0"]
    assert excluded["kind"].tolist() == ["unknown_label"]


def test_unknown_class_name_lists_the_classes():
    with pytest.raises(DatasetError, match=r"unknown class 'sad'; allowed classes: \['happiness', 'anger'"):
        get_scheme("samm_5cls").index("sad")


def test_scheme_for_another_dataset_is_an_error():
    with pytest.raises(DatasetError, match=r"does not cover dataset 'samm'; it covers \['casme2'\].*samm_5cls"):
        apply_label_scheme(table("samm", ["Anger"]), "casme2_5cls")


def test_case_insensitive_native_labels_and_drops():
    labelled, excluded = apply_label_scheme(table("samm", ["Anger", "Other", "Disgust", "Happiness"]), "samm_5cls")
    assert labelled["label"].tolist() == ["anger", "others", "happiness"]
    assert labelled["label_index"].tolist() == [1, 4, 0]
    assert excluded["emotion"].tolist() == ["Disgust"] and excluded["kind"].tolist() == ["dropped_label"]
    labelled, _ = apply_label_scheme(table("casme3", ["Others", "others", "happy", "sad"]), "casme3_7cls")
    assert labelled["label"].tolist() == ["others", "others", "happiness", "sadness"]


def test_objective_scheme_reads_its_own_column_and_reports_missing_values():
    rows = table("casme2", ["others"] * 3)
    rows["objective_class"] = ["III", None, "VII"]
    labelled, excluded = apply_label_scheme(rows, "objective_5cls")
    assert labelled["label"].tolist() == ["III"]
    assert sorted(excluded["kind"]) == ["dropped_label", "no_label"]


def test_scheme_definitions_are_validated():
    with pytest.raises(ValueError, match="maps to \\['neutral'\\], which are not classes"):
        LabelScheme("bad", ("a",), {"x": {"n": "neutral"}})
    with pytest.raises(ValueError, match="both maps and drops"):
        LabelScheme("bad", ("a",), {"x": {"n": "a"}}, dropped={"x": frozenset({"N"})})


def test_native_scheme_for_users_data():
    rows = table("mydata", ["Joy", "fear", "joy"])
    scheme = native_scheme(rows)
    labelled, excluded = apply_label_scheme(rows, scheme)
    assert scheme.classes == ("fear", "joy") and labelled["label_index"].tolist() == [1, 0, 1] and excluded.empty


# A scheme whose class order is neither alphabetical (negative, positive, surprise) nor the order in which
# the file first writes the labels (positive, surprise, negative): label_index must follow the scheme.
ORDERED = LabelScheme(
    "ordered",
    ("surprise", "negative", "positive"),
    {"mydata": {"joy": "positive", "shock": "surprise", "anger": "negative", "disgust": "negative"}},
    dropped={"mydata": frozenset({"other"})},
)
FILE_ORDER = ["joy", "shock", "anger", "Other", "joy", "disgust"]


def test_label_index_follows_the_scheme_order_not_alphabetical_or_file_order():
    labelled, excluded = apply_label_scheme(table("mydata", FILE_ORDER), ORDERED)
    assert labelled["label"].tolist() == ["positive", "surprise", "negative", "positive", "negative"]
    assert labelled["label_index"].tolist() == [2, 0, 1, 2, 1]
    assert [ORDERED.index(c) for c in ("negative", "positive", "surprise")] == [1, 2, 0]
    assert excluded["emotion"].tolist() == ["Other"]


def test_label_index_follows_the_scheme_order_for_derived_and_column_labels():
    rows = table("mydata", ["x"] * 4)
    rows["action_units"] = ["4+7", "6+12", "1+2", "15"]  # III, I, II, V
    rows["objective_class"] = ["III", "I", "II", "V"]
    derived = LabelScheme(
        "aus", ("V", "III", "I"), {"*": {"I": "I", "III": "III", "V": "V"}}, dropped={"*": frozenset({"II"})},
        source_column="action_units", derive="objective_from_aus",
    )  # fmt: skip
    labelled, _ = apply_label_scheme(rows, derived)
    assert labelled["label"].tolist() == ["III", "I", "V"] and labelled["label_index"].tolist() == [1, 2, 0]
    column = LabelScheme("col", ("V", "III", "I", "II"), {"*": {c: c for c in ("I", "II", "III", "V")}},
                         source_column="objective_class")  # fmt: skip
    labelled, _ = apply_label_scheme(rows, column)
    assert labelled["label_index"].tolist() == [1, 2, 3, 0]


def test_registered_and_composite_schemes_index_in_their_own_order():
    from hlora_mer.data.annotations.composites import CompositeMember, label_member, load_composite
    from hlora_mer.data.validate import summarize

    # casme2_5cls: happiness, disgust, repression, surprise, others (not alphabetical)
    rows = table("casme2", ["surprise", "others", "disgust", "happiness", "repression"])
    labelled, _ = apply_label_scheme(rows, "casme2_5cls")
    assert labelled["label_index"].tolist() == [3, 4, 1, 0, 2]
    composite = load_composite("megc2019_3cls")
    member = CompositeMember("samm", labels={"anger": "negative", "happiness": "positive", "surprise": "surprise"})
    reordered = type(composite)(name="r", classes=("surprise", "negative", "positive"), members=(member,))
    labelled, _ = label_member(reordered, member, table("samm", ["Happiness", "Surprise", "Anger"]))
    assert labelled["label_index"].tolist() == [2, 0, 1]
    # the summary counts classes in the scheme's order too
    from hlora_mer.data.loading import LoadedDataset
    from hlora_mer.data.table import EXCLUDED_COLUMNS, empty_table

    loaded = LoadedDataset("mydata", table("mydata", FILE_ORDER), empty_table(EXCLUDED_COLUMNS), None, None, None)
    assert list(summarize(loaded, ORDERED).classes) == ["surprise", "negative", "positive"]
