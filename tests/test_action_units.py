"""Action units as data: parsing every code form of the owners' files, the ambiguity rules, the one-hot
table, objective classes from AUs and their agreement with the owners' classes, and the CLI listings."""

from __future__ import annotations

import pandas as pd
import pytest

from data_fixtures import CASME2_FILES, CASME2_OBJECTIVE, CASME3_FILE, SAMM_FILE, place, write_frames
from hlora_mer.cli import main
from hlora_mer.data import apply_label_scheme, check_dataset, get_scheme, load_dataset, summarize
from hlora_mer.data.annotations.action_units import (
    AU,
    RULE_DESCRIPTOR,
    RULE_K_SUFFIX,
    RULE_OR,
    RULE_REF,
    RULE_SLASH,
    RULE_UNKNOWN,
    RULES,
    active_numbers,
    au_table,
    objective_agreement,
    objective_class_from_aus,
    parse_action_units,
)

# Every distinct AU cell of the real files (CASME II 20140508 and 20190701, SAMM v2, CAS(ME)^3 Part A v2),
# as the loaders pass them on (ints stay ints), plus the forms docs/datasets.md names for other datasets.
CASME2_CODES = (
    "1+12", "1+2", "1+2+5+7", "1+4", "1+4+7", "1+L2", "1+R2+25", "12+14+17", "12+15", "12+15+17", "12+16",
    "12+17", "12+L14", "14+15", "14+24", "15+17", "16+24", "2+5", "4+10", "4+12", "4+15+17", "4+16", "4+17",
    "4+38", "4+5", "4+5+7+9", "4+5+L10", "4+6+7", "4+6+7+9", "4+7", "4+7+10", "4+7+12", "4+7+6", "4+7+9",
    "4+7+9+10", "4+7+L10", "4+7+L2", "4+7+L9", "4+9", "4+9+10", "4+9+17", "4+9+L10+14", "4+L10", "4+L14",
    "4+L9+14", "4+R10", "4+R12", "6+12", "6+12+17", "6+7", "6+7+12", "L1", "L1+L2", "L10", "L12", "L14",
    "L14+L15", "L16", "L2+12", "L2+14", "L2+26+38", "L20", "L4", "L6", "L6+L7", "L7+L10", "R1+R2", "R10",
    "R12", "R14", "R2", "R2+15", "R4", "R4+R10", "R6+R12", 1, 2, 4, 6, 7, 9, 12, 14, 15, 16, 17, 18, 20, 24, 25,
)  # fmt: skip
SAMM_CODES = (
    "(R6 or R12) + R15", "(R6 or R12)+R15", "1+2", "10A/B", "12+15 ", "12+24", "12+39", "12A", "12A+ref(24)",
    "12B", "12C", "13+39", "13+T18+39", "14+25+26", "15A+17", "1A+2B+L14C", "24+38", "25+26", "2C",
    "4+13+T18+39", "4+6+7+9+43E", "4+7", "4+7+43", "4A", "4A/B", "4B+7B+43E", "4D+9B", "4D+ref(6)+7C+43E",
    "5A", "5B", "5B+24", "5C", "7+12", "7+20+26", "7A", "7B", "7B+ ref(43)", "7B+56", "7C", "7C+A12B", "7D",
    "7D+ref(43)", "8+25", "A/L12", "A1", "A12", "A12+A7", "A14C", "A1B+A2C", "A7", "A9+12", "A9E+ref(10)",
    "B18+25", "L10", "L12 + 61", "L12 or L14", "L12A", "L12A+25", "L12C", "L14", "L14C", "L2", "L20+21", "L2A",
    "L2C+12", "L4", "L7A", "R10", "R10A+25+26", "R12 or R14", "R14", "R14+17+soft focus", "R14+R17",
    "R14A or 17A or 24A", "R2", "R20", "R20B", "R2A", "R2B", "R6A+R12", "T18+39", "T23", "ref(5)+20C+25+26",
    "ref(7B)+43", "ref(7B)+43C", "ref(L10)+A12B", 4, 5, 7, 9, 12, 17, 20, 24, 26, 31, 38,
)  # fmt: skip
CASME3_CODES = (
    "1", "1+14", "1+2", "1+2+5", "1+4", "10", "10+4", "12", "14", "14+24", "14+9", "14+9+4", "15", "16",
    "16+23+2+1", "16+24", "16+24+14", "17", "17+14", "17+15", "17+4", "18", "18+4", "2", "2+1", "2+1+14",
    "2+1+5", "2+1+7", "21", "22", "23+14", "24", "24+14", "24+14+4", "24+9+4", "24+T18+16", "25", "25+12",
    "25+18", "26", "26+25", "28", "28+14", "38", "38+24+10+9", "38+4", "39", "4", "4+10+5", "4+18+9+25",
    "4+9+R14", "4+L2", "4+R12", "4+R2", "5", "5+2+1", "6", "6+4", "6+7", "6+9+4", "7", "7+4", "9", "9+10",
    "9+14", "9+4", "9+4+14", "9+6", "9+6+4", "B23", "B28", "L1+L2", "L12", "L14", "L18", "L2", "L2+L1", "L7",
    "L9", "R1+R2", "R10", "R12", "R14", "R2", "R2+R1", "R20", "R7", "T18", "T24", "T28+14",
)  # fmt: skip
OTHER_CODES = ("AU12", "AU4+AU7", "1,2", "1，2", "AU12(k)+AU6", "4.0")


@pytest.mark.parametrize("code", CASME2_CODES + SAMM_CODES + CASME3_CODES + OTHER_CODES)
def test_every_code_form_of_the_real_files_parses(code):
    parsed = parse_action_units(code)
    assert parsed.ok, parsed.unparsed
    assert parsed.aus, f"{code!r} gave no AUs"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("R12A+L14", {AU(12, side="R", intensity="A"), AU(14, side="L")}),
        (4, {AU(4)}),
        (4.0, {AU(4)}),
        ("26+25", {AU(25), AU(26)}),
        ("T28+14", {AU(28, modifier="T"), AU(14)}),
        ("B23", {AU(23, modifier="B")}),
        ("A14C", {AU(14, modifier="A", intensity="C")}),
        ("4D+9B", {AU(4, intensity="D"), AU(9, intensity="B")}),
        ("AU12", {AU(12)}),
        ("L12 + 61", {AU(12, side="L"), AU(61)}),
        ("1，2, 4", {AU(1), AU(2), AU(4)}),
    ],
)
def test_records_keep_side_modifier_and_intensity(code, expected):
    assert parse_action_units(code).aus == frozenset(expected)
    assert parse_action_units(code).rules == ()


def _rules(code):
    return [r.rule for r in parse_action_units(code).rules]


def test_or_rule_reads_the_first_alternative_and_keeps_the_others_marked_uncertain():
    parsed = parse_action_units("(R6 or R12)+R15")
    assert parsed.aus == {
        AU(6, side="R", uncertain=True),
        AU(12, side="R", uncertain=True, alternative=True),
        AU(15, side="R"),
    }
    assert _rules("(R6 or R12)+R15") == [RULE_OR.name]
    assert active_numbers(parse_action_units("R14A or 17A or 24A").aus) == {14}


def test_slash_rule_keeps_the_au_with_its_first_alternative():
    assert parse_action_units("10A/B").aus == {AU(10, intensity="A", uncertain=True)}
    assert parse_action_units("A/L12").aus == {AU(12, modifier="A", uncertain=True)}
    assert active_numbers(parse_action_units("12/14").aus) == {12}  # read like 'or'
    assert AU(14, uncertain=True, alternative=True) in parse_action_units("12/14").aus
    assert _rules("4A/B") == [RULE_SLASH.name]


def test_question_mark_means_unknown_not_empty():
    parsed = parse_action_units("?")
    assert parsed.aus is None and parsed.ok and _rules("?") == [RULE_UNKNOWN.name]
    assert objective_class_from_aus(parsed.aus) is None
    assert parse_action_units(None).aus is None and parse_action_units(float("nan")).aus is None


def test_ref_and_k_aus_are_kept_but_not_active():
    parsed = parse_action_units("ref(5)+20C+25+26")
    assert AU(5, ref=True) in parsed.aus and active_numbers(parsed.aus) == {20, 25, 26}
    assert _rules("12A+ref(24)") == [RULE_REF.name]
    assert active_numbers(parse_action_units("ref(L10)+A12B").aus) == {12}
    k = parse_action_units("AU12(k)+AU6")
    assert AU(12, k=True) in k.aus and active_numbers(k.aus) == {6}
    assert _rules("AU12(k)+AU6") == [RULE_K_SUFFIX.name]


def test_descriptor_is_listed_and_anything_else_is_reported_not_dropped():
    parsed = parse_action_units("R14+17+soft focus")
    assert (
        parsed.ok and active_numbers(parsed.aus) == {14, 17} and _rules("R14+17+soft focus") == [RULE_DESCRIPTOR.name]
    )
    bad = parse_action_units("4+blink+7")
    assert bad.unparsed == ("blink",) and active_numbers(bad.aus) == {4, 7}
    assert parse_action_units("4++7").unparsed  # an empty term is reported too


def test_every_rule_is_written_down():
    names = [rule.name for rule in RULES]
    assert len(set(names)) == len(names) and all(len(rule.text) > 40 for rule in RULES)


def _table(rows):
    """A sample table with only the columns the AU functions read."""
    return pd.DataFrame(
        [{"sample_id": s, "dataset": "mine", "action_units": a, "objective_class": o} for s, a, o in rows]
    )


def test_one_hot_table_over_the_active_aus_present():
    table = _table([("s1", "4+L7", None), ("s2", "ref(5)+12", None), ("s3", "?", None), ("s4", 12, None)])
    onehot = au_table(table)
    assert list(onehot.columns) == ["AU4", "AU7", "AU12"]
    assert list(onehot.index) == ["s1", "s2", "s4"]  # '?' is unknown, not all zeros
    assert onehot.loc["s1"].tolist() == [1, 1, 0] and onehot.loc["s2"].tolist() == [0, 0, 1]
    assert onehot.dtypes.map(lambda d: d.kind == "i").all()


@pytest.mark.parametrize(
    ("aus", "expected"),
    [
        ("6+12", "I"),
        ("R12", "I"),
        ("1+2+25", "II"),
        ("4+7", "III"),
        ("4+5+7+9", "IV"),
        ("6+15", "V"),
        ("1+2+4", "VI"),
        ("L20", "VI"),
        ("4+10", "VII"),
        ("12+14", "VII"),
        ("ref(5)+12A", "I"),
    ],
)
def test_objective_class_from_aus(aus, expected):
    assert objective_class_from_aus(parse_action_units(aus).aus) == expected


def test_objective_class_subset_matching_is_the_documented_alternative():
    assert objective_class_from_aus([4, 7, 43]) == "VII"
    assert objective_class_from_aus([4, 7, 43], exact=False) == "III"
    assert objective_class_from_aus([6, 15, 4, 5], exact=False) == "VII"  # 6+15 (V) and 4+5 (III) tie


def test_agreement_counts_and_lists_disagreements():
    table = _table(
        [
            ("a", "6+12", "I"),
            ("b", "4+7", 3),  # SAMM/CASME II write the class as an int
            ("c", "4+10", "IV"),
            ("d", "?", "III"),  # unknown AUs: not compared
            ("e", "1+2", None),  # no owner's class: not compared
        ]
    )
    agreement = objective_agreement(table)
    assert (agreement.compared, agreement.agreed) == (3, 2)
    assert agreement.rate == pytest.approx(2 / 3)
    assert agreement.disagreements.to_dict("records") == [
        {"sample_id": "c", "action_units": "4+10", "owner": "IV", "from_aus": "VII"}
    ]


def _manifest_root(tmp_path):
    write_frames(tmp_path / "clips" / "a", [f"{n}.jpg" for n in range(1, 4)])
    (tmp_path / "manifest.csv").write_text(
        "subject,clip,path,emotion,action_units\n"
        "p1,a,clips/a,happiness,6+12\n"
        "p1,b,clips/a,happiness,R12 or R14\n"
        "p2,c,clips/a,disgust,4+7\n"
        "p2,d,clips/a,disgust,?\n"
        "p3,e,clips/a,others,4+blink\n"
    )
    return tmp_path


def test_label_scheme_on_aus(tmp_path):
    loaded = load_dataset("manifest", _manifest_root(tmp_path), dataset_name="mine")
    labelled, left_out = apply_label_scheme(loaded.table, "objective_5cls_aus")
    labels = dict(zip(labelled["sample_id"], labelled["label"], strict=True))
    # R12 or R14 without an owners' class: the first alternative, R12 -> I
    assert labels == {"mine/p1/a": "I", "mine/p1/b": "I", "mine/p2/c": "III"}
    kinds = dict(zip(left_out["sample_id"], left_out["kind"], strict=True))
    # '?' and the unreadable code get no class
    assert kinds == {"mine/p2/d": "no_label", "mine/p3/e": "no_label"}
    assert list(loaded.table["action_units"]) == ["6+12", "R12 or R14", "4+7", "?", "4+blink"]  # unchanged


def test_summary_prints_au_frequencies(tmp_path, capsys):
    root = _manifest_root(tmp_path)
    summary = summarize(load_dataset("manifest", root, dataset_name="mine"))
    assert summary.action_units == {"AU12": 2, "AU4": 2, "AU6": 1, "AU7": 1}  # 'R12 or R14': R12 only
    assert main(["data", "summary", "manifest", str(root)]) == 0
    out = capsys.readouterr().out
    assert "action units (4 distinct; top 4, samples per AU):" in out
    assert out.index("AU12") < out.index("AU6")


def test_check_lists_rule_applications_and_unparsed_codes(tmp_path, capsys):
    root = _manifest_root(tmp_path)
    problems = check_dataset(load_dataset("manifest", root, dataset_name="mine"))
    unparsed = [p for p in problems if p.kind == "unparsed_action_units"]
    assert [(p.sample_id, p.severity) for p in unparsed] == [("mine/p3/e", "warning")]
    main(["data", "check", "manifest", str(root), "--warnings"])
    out = capsys.readouterr().out
    assert "action-unit rules applied (2):" in out
    assert f"{RULE_OR.name:24s} manifest/p1/b: 'R12 or R14'" in out
    assert f"{RULE_UNKNOWN.name:24s} manifest/p2/d: '?'" in out
    assert "unparsed_action_units" in out and "'4+blink'" in out


# ---------------------------------------------------------------------------------------------------
# The real files, through HLORA_MER_ANNOTATIONS (skipped with the reason when it is unset).


def _real(tmp_path, name, file, **kwargs):
    place(file, tmp_path)
    return load_dataset(name, tmp_path, **kwargs).table


@pytest.mark.parametrize(
    ("name", "file", "kwargs"),
    [
        ("casme2", CASME2_FILES["20190701"], {"version": "20190701"}),
        ("casme2", CASME2_FILES["20140508"], {"version": "20140508"}),
        ("samm", SAMM_FILE, {}),
        ("casme3", CASME3_FILE, {}),
    ],
)
def test_every_au_cell_of_the_real_files_parses(tmp_path, name, file, kwargs):
    table = _real(tmp_path, name, file, **kwargs)
    parsed = [parse_action_units(code) for code in table["action_units"]]
    assert [p.code for p in parsed if not p.ok] == []
    known = {str(c).strip() for c in CASME2_CODES + SAMM_CODES + CASME3_CODES}
    assert {p.code for p in parsed if p.code is not None} - known - {"?"} == set()


def test_real_rule_applications_and_agreement(tmp_path):
    samm = _real(tmp_path / "samm", "samm", SAMM_FILE)
    rules = {}
    for code in samm["action_units"]:
        for application in parse_action_units(code).rules:
            rules[application.rule] = rules.get(application.rule, 0) + 1
    assert rules == {RULE_OR.name: 5, RULE_SLASH.name: 3, RULE_REF.name: 9, RULE_DESCRIPTOR.name: 1}
    agreement = objective_agreement(samm)
    assert (agreement.compared, agreement.agreed) == (159, 148)  # docs/datasets.md
    labelled, _ = apply_label_scheme(samm, "objective_5cls_aus")
    scheme_counts = get_scheme("objective_5cls_aus").counts
    assert labelled["label"].value_counts().to_dict() == scheme_counts["samm_v2"]

    place(CASME2_OBJECTIVE, tmp_path / "c2")
    casme2 = _real(tmp_path / "c2", "casme2", CASME2_FILES["20190701"], version="20190701")
    assert (objective_agreement(casme2).compared, objective_agreement(casme2).agreed) == (255, 216)
    column = load_dataset("casme2", tmp_path / "c2", version="20190701", objective_classes="coding").table
    assert objective_agreement(column).agreed == 253
    old = _real(tmp_path / "c2", "casme2", CASME2_FILES["20140508"], version="20140508")
    assert (objective_agreement(old).compared, objective_agreement(old).agreed) == (250, 236)
    casme3 = _real(tmp_path / "c3", "casme3", CASME3_FILE)
    labelled, _ = apply_label_scheme(casme3, "objective_5cls_aus")
    assert labelled["label"].value_counts().to_dict() == scheme_counts["casme3_v2"]
    assert (objective_agreement(casme3).compared, objective_agreement(casme3).agreed) == (860, 860)


# MEGC2018 objective classes as published (Davison, Merghani and Yap, 2018, "Objective classes for
# micro-facial expression recognition", Table 2), written out by hand from the paper, not from the module.
PUBLISHED_OBJECTIVE_CLASSES = {
    "I": ["AU6", "AU12", "AU6+AU12", "AU6+AU7+AU12", "AU7+AU12"],
    "II": ["AU1+AU2", "AU5", "AU25", "AU1+AU2+AU25", "AU25+AU26", "AU5+AU24"],
    "III": ["AU23", "AU4", "AU4+AU7", "AU4+AU5", "AU4+AU5+AU7", "AU17+AU24", "AU4+AU6+AU7", "AU4+AU38"],
    "IV": [
        "AU10", "AU9", "AU4+AU9", "AU4+AU40", "AU4+AU5+AU40", "AU4+AU7+AU9", "AU4+AU9+AU17", "AU4+AU7+AU10",
        "AU4+AU5+AU7+AU9", "AU7+AU10",
    ],
    "V": ["AU1", "AU15", "AU1+AU4", "AU6+AU15", "AU15+AU17"],
    "VI": ["AU1+AU2+AU4", "AU20"],
}  # fmt: skip


def _published_sets():
    return {
        name: {frozenset(int(au.removeprefix("AU")) for au in combo.split("+")) for combo in combos}
        for name, combos in PUBLISHED_OBJECTIVE_CLASSES.items()
    }


def test_objective_class_table_is_the_published_table():
    from hlora_mer.data.annotations.action_units import OBJECTIVE_CLASSES

    assert {name: set(combos) for name, combos in OBJECTIVE_CLASSES.items()} == _published_sets()
    assert sum(len(combos) for combos in OBJECTIVE_CLASSES.values()) == 36  # no combination listed twice


@pytest.mark.parametrize(
    ("name", "combo"), [(name, combo) for name, combos in PUBLISHED_OBJECTIVE_CLASSES.items() for combo in combos]
)
def test_every_published_combination_gets_its_class(name, combo):
    # written the way the owners write AUs (no "AU", sides and intensities), through the parser
    code = combo.replace("AU", "")
    assert objective_class_from_aus(parse_action_units(code).aus) == name
    sided = "+".join(f"L{au}B" for au in code.split("+"))
    assert objective_class_from_aus(parse_action_units(sided).aus) == name
    # one more AU is another combination: the table is matched exactly
    assert objective_class_from_aus([*map(int, code.split("+")), 43]) == "VII"


def test_question_mark_after_an_au_marks_it_uncertain():
    from hlora_mer.data.annotations.action_units import RULE_QUESTION_SUFFIX

    parsed = parse_action_units("13?")
    assert parsed.ok and parsed.aus == {AU(13, uncertain=True)} and _rules("13?") == [RULE_QUESTION_SUFFIX.name]
    assert parse_action_units("6+R12B?").aus == {AU(6), AU(12, side="R", intensity="B", uncertain=True)}
    assert objective_class_from_aus(parse_action_units("6+12?").aus) == "I"  # active: the AU took part
    assert parse_action_units("?").aus is None  # a cell that is only '?' stays unknown


def test_or_cell_one_hot_has_one_reading_and_keeps_the_uncertain_flag():
    from hlora_mer.data.annotations.action_units import RULE_OR_OWNER, au_report, au_uncertain_table

    table = _table(
        [
            ("s1", "L12 or L14", None),  # no owners' class: the first alternative is the reading
            ("s2", "R12 or R14", "VII"),  # the owners' VII: R14 (R12 would be I)
            ("s3", "L12 or L14", "I"),  # the owners' I agrees with the first alternative
            ("s4", "(R6 or R12)+R15", 7),  # R6+R15 is V, R12+R15 is VII: the owners' VII picks R12
            ("s5", "4+7", "III"),
        ]
    )
    onehot = au_table(table)
    assert list(onehot.columns) == ["AU4", "AU6", "AU7", "AU12", "AU14", "AU15"]
    assert onehot.loc["s1"].to_dict() == {"AU4": 0, "AU6": 0, "AU7": 0, "AU12": 1, "AU14": 0, "AU15": 0}
    assert onehot.loc["s2"].to_dict() == {"AU4": 0, "AU6": 0, "AU7": 0, "AU12": 0, "AU14": 1, "AU15": 0}
    assert onehot.loc["s3", ["AU12", "AU14"]].tolist() == [1, 0]
    assert onehot.loc["s4", ["AU6", "AU12", "AU15"]].tolist() == [0, 1, 1]
    assert onehot.sum(axis=None) == 1 + 1 + 1 + 2 + 2  # one alternative per 'or', never all of them
    flags = au_uncertain_table(table)
    assert list(flags.columns) == list(onehot.columns) and list(flags.index) == list(onehot.index)
    assert flags.loc["s1", ["AU12", "AU14"]].tolist() == [1, 1]  # both alternatives stay marked uncertain
    assert flags.loc["s4"].to_dict() == {"AU4": 0, "AU6": 1, "AU7": 0, "AU12": 1, "AU14": 0, "AU15": 0}
    assert flags.loc["s5"].sum() == 0
    applied = [(sid, r.rule) for sid, r in au_report(table).rules]
    assert (("s2", RULE_OR_OWNER.name) in applied) and (("s4", RULE_OR_OWNER.name) in applied)
    assert ("s1", RULE_OR_OWNER.name) not in applied and ("s3", RULE_OR_OWNER.name) not in applied
    agreement = objective_agreement(table)
    assert (agreement.compared, agreement.agreed) == (4, 4)


def test_or_alternatives_are_kept_but_only_the_reading_is_active():
    parsed = parse_action_units("L12 or L14")
    assert parsed.aus == {AU(12, side="L", uncertain=True), AU(14, side="L", uncertain=True, alternative=True)}
    assert active_numbers(parsed.aus) == {12} and objective_class_from_aus(parsed.aus) == "I"
    resolved = parse_action_units("L12 or L14", owner_class="VII")
    assert active_numbers(resolved.aus) == {14}
    # an owners' class no alternative gives leaves the first alternative as the reading
    assert active_numbers(parse_action_units("L12 or L14", owner_class="III").aus) == {12}
    assert active_numbers(parse_action_units("R14A or 17A or 24A", owner_class="VII").aus) == {14}


def test_real_samm_or_rows_in_the_one_hot_table(tmp_path):
    from hlora_mer.data.annotations.action_units import au_uncertain_table

    samm = _real(tmp_path, "samm", SAMM_FILE)
    onehot, flags = au_table(samm), au_uncertain_table(samm)
    row = onehot.loc["samm/011/011_4_2"]  # L12 or L14, owners' class I
    assert (row["AU12"], row["AU14"]) == (1, 0) and flags.loc["samm/011/011_4_2", ["AU12", "AU14"]].tolist() == [1, 1]
    assert onehot.loc["samm/014/014_5_2", ["AU12", "AU14"]].tolist() == [0, 1]  # R12 or R14, owners' VII
    assert onehot.loc["samm/007/007_6_1", ["AU6", "AU12", "AU15"]].tolist() == [0, 1, 1]  # (R6 or R12)+R15, VII
    assert onehot.loc["samm/035/035_7_2", ["AU14", "AU17", "AU24"]].tolist() == [1, 0, 0]
    assert int(flags.to_numpy().sum()) == 2 + 2 + 2 + 2 + 3 + 3  # 5 'or' rows (11 AUs) + 3 slash rows
    agreement = objective_agreement(samm)
    assert (agreement.compared, agreement.agreed) == (159, 148)
    assert "samm/011/011_4_2" not in set(agreement.disagreements["sample_id"])
    from hlora_mer.data.annotations.action_units import RULE_OR_OWNER, au_report

    by_owner = [sid for sid, application in au_report(samm).rules if application.rule == RULE_OR_OWNER.name]
    assert by_owner == ["samm/007/007_6_1", "samm/007/007_6_5", "samm/014/014_5_2"]  # docs/datasets.md


def _classes_of_au_set(table, numbers):
    from collections import Counter

    from hlora_mer.data.annotations.action_units import normalize_objective_class

    return Counter(
        normalize_objective_class(owner)
        for code, owner in zip(table["action_units"], table["objective_class"], strict=True)
        if active_numbers(parse_action_units(code).aus) == frozenset(numbers)
    )


def test_real_owners_classes_of_4_plus_10(tmp_path):
    # docs/datasets.md: only CASME2-ObjectiveClasses.xlsx puts 4+10 (with its one-sided forms) in class IV
    place(CASME2_OBJECTIVE, tmp_path / "c2")
    column = _real(tmp_path / "c2", "casme2", CASME2_FILES["20190701"], version="20190701", objective_classes="coding")
    assert _classes_of_au_set(column, {4, 10}) == {"VII": 9, "IV": 1}
    objective_file = _real(tmp_path / "c2", "casme2", CASME2_FILES["20140508"], version="20140508")
    assert _classes_of_au_set(objective_file, {4, 10}) == {"IV": 8, "III": 1}
    casme3 = _real(tmp_path / "c3", "casme3", CASME3_FILE)
    assert _classes_of_au_set(casme3, {4, 10}) == {"VII": 2}
    assert objective_class_from_aus([4, 10]) == "VII"  # the published table does not list 4+10
