"""Cross-dataset composites defined as YAML (issue 15 item 4): loading, mapping, config, report, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from data_fixtures import CASME2_FILES, megc_root, place, smic_root
from hlora_mer.config import ExperimentConfig, from_dict
from hlora_mer.data import apply_label_scheme, get_scheme, load_dataset
from hlora_mer.data.annotations.composites import label_member, list_composites, load_composite, load_composite_table
from hlora_mer.data.table import make_table
from hlora_mer.errors import ConfigError, DatasetError
from hlora_mer.evaluation.metrics import scores
from hlora_mer.evaluation.report import compute_metrics, load_fold_predictions
from hlora_mer.training.data import TensorSource, load_labelled_table
from hlora_mer.training.runner import run_experiment
from train_fixtures import tiny_clips, tiny_experiment


def rows(dataset: str, items: list[tuple[str, str, str]]) -> pd.DataFrame:
    """An in-memory sample table of (subject, clip, emotion) rows, as a loader returns it."""
    return make_table(
        {
            "dataset": dataset,
            "subject": f"{dataset}/{s}",
            "subject_raw": s,
            "clip": c,
            "sample_id": f"{dataset}/{s}/{c}",
            "emotion": e,
        }
        for s, c, e in items
    )


def write_composite(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


TWO = {
    "name": "two",
    "classes": ["negative", "positive", "surprise"],
    "members": {
        "casme2": {"labels": {"happiness": "positive", "disgust": "negative", "surprise": "surprise"}},
        "samm": {"labels": {"Happiness": "positive", "Anger": "negative", "Surprise": "surprise"}, "drop": ["Other"]},
    },
}


# --- the shipped files -------------------------------------------------------------------------------


def test_shipped_composites_load_by_name() -> None:
    assert {"megc2019_3cls", "shared_emotion"} <= set(list_composites())
    megc = load_composite("megc2019_3cls")
    assert megc.datasets == ("casme2", "samm", "smic_hs")
    assert megc.member("casme2").version == "20140508"
    shared = load_composite("shared_emotion")
    assert set(shared.datasets) == {"casme", "casme2", "samm", "smic_hs", "casme3", "mmew", "4dme"}
    assert shared.classes == ("negative", "positive", "surprise", "others") and shared.missing == "skip"


def test_megc_file_maps_like_the_registered_scheme() -> None:
    megc, registered = load_composite("megc2019_3cls"), get_scheme("megc2019_3cls")
    assert megc.classes == registered.classes
    for member, key in (("casme2", "casme2"), ("samm", "samm"), ("smic_hs", "smic")):
        m = megc.member(member)
        assert dict(m.labels) == dict(registered.mappings[key])
        assert m.drop == registered.dropped.get(key, frozenset())


def test_megc2019_composite_equals_the_megc2019_loader(tmp_path: Path) -> None:
    root = megc_root(tmp_path)  # the real files (skips without HLORA_MER_ANNOTATIONS)
    official, _ = apply_label_scheme(load_dataset("megc2019", root).table, "megc2019_3cls")
    table, excluded, info = load_composite_table(
        load_composite("megc2019_3cls"), {"casme2": root / "CASME2", "samm": root / "SAMM", "smic_hs": root / "SMIC"}
    )
    assert len(table) == 442
    assert table["label"].value_counts().to_dict() == {"negative": 250, "positive": 109, "surprise": 83}
    assert table["subject"].nunique() == 68
    a = official.sort_values("sample_id").reset_index(drop=True)
    b = table[official.columns].sort_values("sample_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    left = excluded[excluded["kind"] == "composite_exclude"]
    assert sorted(left["clip"]) == ["EP07_01", "EP07_04f", "EP09_05f", "EP10_03", "EP12_01f"]
    assert info["casme2"]["version"] == "20140508"


def test_shared_emotion_maps_every_member() -> None:
    shared = load_composite("shared_emotion")
    cases = {
        "casme2": [
            ("01", "a", "fear", "negative"),
            ("01", "b", "others", "others"),
            ("02", "c", "happiness", "positive"),
        ],
        "samm": [
            ("006", "a", "Contempt", "negative"),
            ("006", "b", "Other", "others"),
            ("007", "c", "Surprise", "surprise"),
        ],
        "casme3": [
            ("spNO.1", "a", "sad", "negative"),
            ("spNO.1", "b", "Others", "others"),
            ("spNO.2", "c", "happy", "positive"),
        ],
        "mmew": [("S01", "a", "sadness", "negative"), ("S01", "b", "others", "others")],
    }
    for dataset, items in cases.items():
        labelled, _ = label_member(shared, shared.member(dataset), rows(dataset, [i[:3] for i in items]))
        assert labelled["label"].tolist() == [i[3] for i in items], dataset
        assert labelled["label_index"].tolist() == [shared.classes.index(i[3]) for i in items]


def test_members_without_a_root_are_skipped_or_refused(tmp_path: Path) -> None:
    smic = smic_root(tmp_path, [("s1", "s1_ne_01", "negative"), ("s2", "s2_po_01", "positive")], frames=1)
    table, _, info = load_composite_table(load_composite("shared_emotion"), {"smic_hs": smic})
    assert table["label"].tolist() == ["negative", "positive"]
    assert info["casme2"] == {"skipped": "no root folder"} and info["smic_hs"]["samples"] == 2
    with pytest.raises(DatasetError, match=r"needs every member.*data\.roots\.casme2="):
        load_composite_table(load_composite("megc2019_3cls"), {"smic_hs": smic})
    with pytest.raises(DatasetError, match="no member has a root folder"):
        load_composite_table(load_composite("shared_emotion"), {})


def test_excluded_samples_are_listed_with_their_reason(tmp_path: Path) -> None:
    data = {**TWO, "members": {"casme2": {**TWO["members"]["casme2"], "exclude": {"01/b": "apex missing"}}}}
    comp = load_composite(write_composite(tmp_path / "x.yaml", data))
    labelled, excluded = label_member(
        comp, comp.member("casme2"), rows("casme2", [("01", "a", "disgust"), ("01", "b", "disgust")])
    )
    assert labelled["clip"].tolist() == ["a"]
    assert excluded["kind"].tolist() == ["composite_exclude"] and "apex missing" in excluded["reason"].iloc[0]


# --- config and report ----------------------------------------------------------------------------


def test_config_takes_datasets_and_scheme_from_the_composite(tmp_path: Path) -> None:
    cfg = from_dict(ExperimentConfig, {"data": {"composite": "shared_emotion"}})
    assert cfg.data.datasets == load_composite("shared_emotion").datasets
    assert cfg.data.label_scheme == "shared_emotion" and "smic_hs" in cfg.data.roots
    assert get_scheme("shared_emotion").classes == ("negative", "positive", "surprise", "others")
    with pytest.raises(ConfigError, match="sets data.datasets"):
        from_dict(ExperimentConfig, {"data": {"composite": "shared_emotion", "datasets": ["casme2", "samm"]}})
    with pytest.raises(ConfigError, match="sets data.label_scheme"):
        from_dict(ExperimentConfig, {"data": {"composite": "megc2019_3cls", "label_scheme": "casme2_3cls"}})
    smic = smic_root(tmp_path, [("s1", "s1_ne_01", "negative"), ("s2", "s2_su_01", "surprise")], frames=1)
    cfg = from_dict(ExperimentConfig, {"data": {"composite": "shared_emotion", "roots": {"smic_hs": str(smic)}}})
    table, classes, _, info = load_labelled_table(cfg)
    assert classes == ("negative", "positive", "surprise", "others")
    assert table["label_index"].tolist() == [0, 2] and info["samm"] == {"skipped": "no root folder"}


@pytest.mark.slow
def test_a_composite_run_reports_pooled_and_per_dataset_scores(tmp_path: Path) -> None:
    path = write_composite(tmp_path / "two.yaml", TWO)
    comp = load_composite(path)
    items = {
        "casme2": [(f"{s:02d}", f"c{s}{e}", e) for s in (1, 2) for e in ("happiness", "disgust", "surprise")],
        "samm": [(f"{s:03d}", f"c{s}{e}", e) for s in (6, 7) for e in ("Happiness", "Anger", "Surprise", "Other")],
    }
    table = pd.concat([label_member(comp, comp.member(d), rows(d, i))[0] for d, i in items.items()], ignore_index=True)
    assert len(table) == 12  # the two SAMM 'Other' rows are dropped
    source = TensorSource(table, tiny_clips(table), comp.classes, flip_prob=0.0, info={})
    data = {"composite": str(path), "datasets": list(comp.datasets), "label_scheme": comp.name}
    cfg = tiny_experiment(
        data=data, train={"steps": 1}, eval={"protocol": "composite", "metrics": ["uf1", "uar"], "bootstrap": 0}
    )
    metrics = run_experiment(cfg, tmp_path / "run", source)
    assert [c["group"] for c in metrics["table"]] == ["composite"] * 2 + ["casme2"] * 2 + ["samm"] * 2
    preds, _, _ = load_fold_predictions(tmp_path / "run")
    for name, group in (("composite", preds), ("casme2", preds[preds["dataset"] == "casme2"])):
        expected = scores(group["label_index"].to_numpy(), group["prediction_index"].to_numpy(), 3)
        cell = next(c for c in metrics["table"] if c["group"] == name and c["metric"] == "uf1")
        assert np.isclose(cell["mean"], expected["uf1"])
    assert len(preds) == 12


def test_report_scores_of_a_composite_table_pool_and_split_by_dataset() -> None:
    comp = load_composite("shared_emotion")
    table = pd.concat(
        [
            label_member(
                comp, comp.member("casme2"), rows("casme2", [("01", "a", "happiness"), ("02", "b", "disgust")])
            )[0],
            label_member(comp, comp.member("samm"), rows("samm", [("006", "a", "Anger"), ("007", "b", "Surprise")]))[0],
        ],
        ignore_index=True,
    )
    preds = table.assign(prediction_index=[1, 1, 0, 0], seed=0, fold=table["subject"])
    metrics = compute_metrics(
        preds,
        [],
        comp.classes,
        protocol="composite",
        table_metrics=["uf1"],
        bootstrap=0,
        confidence=0.95,
        expected_runs=4,
    )
    cells = {c["group"]: c["mean"] for c in metrics["table"]}
    assert list(cells) == ["composite", "casme2", "samm"]
    assert cells["casme2"] == scores(np.array([1, 0]), np.array([1, 1]), 4)["uf1"]
    assert cells["samm"] == scores(np.array([0, 2]), np.array([0, 0]), 4)["uf1"]
    assert cells["composite"] == scores(np.array([1, 0, 0, 2]), np.array([1, 1, 0, 0]), 4)["uf1"]


# --- bad files: one clear message each ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"members": {"casmeII": {"labels": {"a": "positive"}}}}, r"member 'casmeII'.*unknown dataset"),
        ({"members": {"casme2": {"labels": {"happiness": "joy"}}}}, r"map to \['joy'\], which are not classes"),
        ({"members": {"casme2": {"labels": {"x": "positive"}, "version": "2020"}}}, r"unknown version '2020'"),
        ({"members": {"casme2": {"labels": {"x": "positive"}, "options": {"fast": 1}}}}, r"unknown option.*fast"),
        ({"members": {"casme2": {"labels": {"x": "positive"}, "drop": ["X"]}}}, r"both mapped and dropped"),
        ({"members": {"casme2": {"labels": {"x": "positive"}, "exclude": ["01/a"]}}}, r"'exclude' must map"),
        ({"members": {"casme2": {"label": {"x": "positive"}}}}, r"unknown key\(s\) \['label'\]"),
        ({"classes": ["a"]}, r"'classes' must list at least two"),
        ({"missing": "ignore"}, r"'missing' must be one of"),
        ({"members": {}}, r"'members' must map"),
        ({"mapping": {}}, r"unknown key\(s\) \['mapping'\]"),
    ],
)
def test_bad_files_get_one_clear_message(tmp_path: Path, change: dict, message: str) -> None:
    path = write_composite(tmp_path / "bad.yaml", {**TWO, **change})
    with pytest.raises(ConfigError, match=message) as info:
        load_composite(path)
    assert str(path) in str(info.value) and "docs/datasets.md" in str(info.value)


def test_unreadable_or_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_composite(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_composite(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match=r"unknown composite 'megc'; shipped composites: megc2019_3cls"):
        load_composite("megc")
    with pytest.raises(ConfigError, match="unknown composite"):
        from_dict(ExperimentConfig, {"data": {"composite": "megc"}})


def test_unmapped_emotion_or_excluded_sample_in_the_data(tmp_path: Path) -> None:
    comp = load_composite(write_composite(tmp_path / "two.yaml", TWO))
    with pytest.raises(DatasetError, match=r"member casme2.*unknown emotion 'fear'.*allowed labels.*'drop'"):
        label_member(comp, comp.member("casme2"), rows("casme2", [("01", "a", "fear")]))
    data = {**TWO, "members": {"casme2": {**TWO["members"]["casme2"], "exclude": {"09/zz": "gone"}}}}
    comp = load_composite(write_composite(tmp_path / "three.yaml", data))
    with pytest.raises(DatasetError, match=r"excludes \['09/zz'\], which are not samples"):
        label_member(comp, comp.member("casme2"), rows("casme2", [("01", "a", "disgust")]))


# --- MEGC2019 membership is its CSV, whatever the CASME II version -----------------------------------

# CASME II coding rows (Subject, Filename, onset, apex, offset, AUs, emotion) as 20190701 writes them:
# the three sub24 clips MEGC2019 leaves out (sadness in 20140508) are surprise here.
MEGC_CASME2_ROWS = [
    ("01", "EP02_01f", 46, 59, 86, "12", "happiness"),
    ("24", "EP07_01", 10, 20, 30, "1+2", "surprise"),
    ("24", "EP07_04f", 10, 20, 30, "1+2", "surprise"),
    ("24", "EP10_03", 10, 20, 30, "1+2", "surprise"),
    ("25", "EP01_01", 5, 9, 15, "1+2", "surprise"),
    ("04", "EP12_01f", 3, "/", 40, "4", "disgust"),
    ("05", "EP09_05f", 10, 10, 20, "4", "disgust"),
]


def write_casme2_coding(path: Path, items: list[tuple]) -> Path:
    columns = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(items, columns=columns).to_excel(path, sheet_name="Sheet1", index=False)
    return path


def test_megc2019_composite_keeps_the_csv_members_with_casme2_20190701(tmp_path: Path) -> None:
    write_casme2_coding(tmp_path / "CASME2-coding-20190701.xlsx", MEGC_CASME2_ROWS)
    megc = load_composite("megc2019_3cls")
    loaded = load_dataset("casme2", tmp_path, version="20190701")
    labelled, excluded = label_member(megc, megc.member("casme2"), loaded.table)
    assert labelled["sample_id"].tolist() == ["casme2/01/EP02_01f", "casme2/25/EP01_01"]
    left = excluded.set_index("clip")
    assert sorted(left.index) == ["EP07_01", "EP07_04f", "EP09_05f", "EP10_03", "EP12_01f"]
    assert set(left["kind"]) == {"composite_exclude"}
    assert "not in MEGC2019" in left.loc["EP07_01", "reason"] and "20190701" in left.loc["EP07_01", "reason"]


def test_real_megc2019_composite_with_casme2_20190701_is_the_csv(tmp_path: Path) -> None:
    root = megc_root(tmp_path)  # the real files (skips without HLORA_MER_ANNOTATIONS)
    official, _ = apply_label_scheme(load_dataset("megc2019", root).table, "megc2019_3cls")
    place(CASME2_FILES["20190701"], root / "CASME2")
    table, excluded, info = load_composite_table(
        load_composite("megc2019_3cls"),
        {"casme2": root / "CASME2", "samm": root / "SAMM", "smic_hs": root / "SMIC"},
        versions={"casme2": "20190701"},
    )
    assert info["casme2"]["version"] == "20190701"
    assert len(table) == 442
    assert sorted(table["sample_id"]) == sorted(official["sample_id"])
    merged = official.merge(table, on="sample_id", suffixes=("_csv", "_composite"))
    assert (merged["label_csv"] == merged["label_composite"]).all()
    left = excluded[excluded["kind"] == "composite_exclude"]
    assert sorted(left["clip"]) == ["EP07_01", "EP07_04f", "EP09_05f", "EP10_03", "EP12_01f"]
