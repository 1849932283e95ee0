"""labels.csv and review's auto-drops as the split stage applies them: drop, relabel, keep over an
auto-drop, rows about absent images reported, and one-line errors naming the row."""

from __future__ import annotations

import hashlib

import pytest
import yaml
from PIL import Image

from conftest import tiny_params_dict
from imgclass import files
from imgclass.data.decisions import (Decision, DecisionsError, apply_decisions, auto_drop_candidates, read_auto_drops,
                                read_decisions)
from imgclass.data.split import SPLITS
from imgclass.data.validate import REPORT_COLUMNS
from test_split import run_split_stage

CLASSES = ["cat", "dog"]


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_labels(path, rows: list[tuple[str, str, str, str]]) -> None:
    lines = ["sha256,action,new_class,note"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_a_missing_file_decides_nothing(tmp_path):
    assert read_decisions(tmp_path / "labels.csv", CLASSES) == {}
    assert read_auto_drops(tmp_path / "auto_drop.csv") == {}


@pytest.mark.parametrize("row, message", [
    ((sha("a"), "relabel", "horse", ""), "row 2: new_class 'horse' is not one of the classes (cat, dog)"),
    ((sha("a"), "delete", "", ""), "row 2: action 'delete' is unknown; use one of drop, relabel, keep"),
    (("abc123", "drop", "", ""), "row 2: sha256 'abc123' is not 64 hex digits"),
    ((sha("a"), "drop", "dog", ""), "row 2: new_class 'dog' is only for action relabel"),
])
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, row, message):
    write_labels(tmp_path / "labels.csv", [row])
    with pytest.raises(DecisionsError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_decisions(tmp_path / "labels.csv", CLASSES)
    assert "\n" not in str(err.value)


def test_two_rows_about_one_image_are_an_error(tmp_path):
    write_labels(tmp_path / "labels.csv", [(sha("a"), "drop", "", ""), (sha("b"), "drop", "", ""),
                                           (sha("a"), "relabel", "dog", "")])
    with pytest.raises(DecisionsError, match="rows 2 and 4 both decide about image"):
        read_decisions(tmp_path / "labels.csv", CLASSES)


def test_a_header_without_sha256_names_the_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("hash,action\nx,drop\n")
    with pytest.raises(DecisionsError, match="missing column.*sha256; the header must be sha256,action,new_class,note"):
        read_decisions(tmp_path / "labels.csv", CLASSES)


def test_spreadsheet_csv_with_bom_quotes_and_upper_case_is_read(tmp_path):
    text = f'sha256,action,new_class,note\r\n{sha("a").upper()},Relabel,dog,"looks like a dog, not a cat"\r\n'
    (tmp_path / "labels.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    decision = read_decisions(tmp_path / "labels.csv", CLASSES)[sha("a")]
    assert (decision.action, decision.new_class) == ("relabel", "dog")
    assert decision.source == "row 2: looks like a dog, not a cat"


def test_a_person_overrides_the_review_and_absent_images_are_reported():
    rows = [{"path": f"cat/{n}.png", "label": "cat", "sha256": sha(n), "group": sha(n)} for n in "abcd"]
    person = {sha(n): Decision(sha(n), action, new_class, "row")
              for n, action, new_class in [("a", "drop", ""), ("b", "relabel", "dog"), ("c", "keep", ""),
                                           ("gone", "drop", "")]}
    auto = {sha(n): Decision(sha(n), "drop", "", "review: outlier 0.99") for n in "cd"}
    kept, applied, counts = apply_decisions(rows, person, auto)
    # review's drops are left to the split (outside test only); a person's rows apply everywhere
    assert [(r["sha256"], r["label"], r["original_label"]) for r in kept] == [
        (sha("b"), "dog", "cat"), (sha("c"), "cat", "cat"), (sha("d"), "cat", "cat")]
    assert counts == {"dropped": 1, "relabelled": 1, "kept_over_auto": 1, "not_found": 1,
                      "not_found_sha256": [sha("gone")]}
    assert {r["sha256"]: r["action"] for r in applied} == {sha("a"): "drop", sha("b"): "relabel", sha("c"): "keep"}
    assert auto_drop_candidates(auto, person) == {sha("d"): auto[sha("d")]}


# --- the split stage ------------------------------------------------------------------------------

def write_clean_tree(root, n_per_class: int) -> dict[str, list[str]]:
    """data/clean as validate leaves it, with real sha256-looking names; returns class -> sha256s."""
    rows, shas = [], {}
    for label in CLASSES:
        for i in range(n_per_class):
            digest = sha(f"{label}{i}")
            out = f"{label}/{digest}.png"
            (root / "data/clean" / label).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i, 7 if label == "cat" else 200, 9)).save(root / "data/clean" / out)
            rows.append({"path": f"{label}/{i}.png", "class": label, "status": "ok", "sha256": digest,
                         "group": digest, "out": out})
            shas.setdefault(label, []).append(digest)
    files.write_csv(root / "data/clean/report.csv", rows, REPORT_COLUMNS)
    return shas


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(classes=CLASSES, image_size=8)))
    monkeypatch.chdir(tmp_path)
    return tmp_path, write_clean_tree(tmp_path, 40)


def split_labels() -> dict[str, tuple[str, str]]:
    return {r["sha256"]: (s, r["label"]) for s in SPLITS for r in files.read_csv(f"data/split/{s}.csv")}


def test_the_split_stage_drops_relabels_and_keeps_over_an_auto_drop(project, capsys):
    root, shas = project
    dropped, relabelled, kept, auto = shas["cat"][0], shas["cat"][1], shas["dog"][0], shas["dog"][1]
    write_labels(root / "labels.csv", [(dropped, "drop", "", "a cartoon"), (relabelled, "relabel", "dog", ""),
                                       (kept, "keep", "", ""), (sha("no longer scraped"), "drop", "", "")])
    files.write_csv(root / "data/review/auto_drop.csv",
                    [{"sha256": s, "path": f"dog/{s}.png", "class": "dog", "issue": "outlier", "score": 0.97,
                      "reason": "far from every class"} for s in (kept, auto)],
                    ["sha256", "path", "class", "issue", "score", "reason"])
    assert run_split_stage() == 0
    labels = split_labels()
    assert dropped not in labels and auto not in labels and len(labels) == 78
    assert labels[relabelled][1] == "dog" and labels[kept][1] == "dog"
    test_labels = [label for split, label in labels.values() if split == "test"]
    assert sorted(set(test_labels)) == CLASSES
    decisions = files.read_json("reports/split.json")["decisions"]
    assert decisions == {"dropped": 1, "relabelled": 1, "auto_dropped": 1, "auto_drops_spared_in_test": 0,
                         "kept_over_auto": 1, "not_found": 1, "not_found_sha256": [sha("no longer scraped")]}
    applied = {r["sha256"]: r for r in files.read_csv("reports/decisions.csv")}
    assert applied[auto]["source"] == "review: outlier 0.97 far from every class"
    assert applied[dropped]["source"] == "row 2: a cartoon"
    out = capsys.readouterr().out
    assert "1 rows of labels.csv name images that are not in data/clean" in out
    assert ("1 dropped, 1 relabelled, 1 auto-dropped by review (outside test; 0 spared in test), "
            "1 kept against review") in out


def test_an_unknown_class_in_labels_csv_stops_the_stage_with_one_line(project, capsys):
    root, shas = project
    write_labels(root / "labels.csv", [(shas["cat"][3], "relabel", "horse", "")])
    assert run_split_stage() == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("split: labels.csv row 2: new_class 'horse' is not one of the classes") and "\n" not in err


def test_review_auto_drops_spare_test_images_and_a_relabel_keeps_its_split(project, capsys):
    """Only a person changes what test holds: review's auto-drops act on train and val, and relabelling a
    test image in labels.csv leaves it in test (the previous split is the stage's starting point)."""
    root, shas = project
    assert run_split_stage() == 0
    first = split_labels()
    in_test = [s for s, (split, _) in first.items() if split == "test"]
    outside = [s for s, (split, _) in first.items() if split != "test"]
    files.write_csv(root / "data/review/auto_drop.csv",
                    [{"sha256": s, "path": "x.png", "class": first[s][1], "issue": "label", "score": 0.99,
                      "reason": "looks like another class"} for s in (in_test[0], outside[0])],
                    ["sha256", "path", "class", "issue", "score", "reason"])
    other = "dog" if first[in_test[1]][1] == "cat" else "cat"
    write_labels(root / "labels.csv", [(in_test[1], "relabel", other, "a person looked")])
    assert run_split_stage() == 0
    second = split_labels()
    assert second[in_test[0]][0] == "test" and outside[0] not in second
    assert second[in_test[1]] == ("test", other)
    test_rows = {r["sha256"]: r for r in files.read_csv("data/split/test.csv")}
    assert test_rows[in_test[1]]["original_label"] == first[in_test[1]][1]
    report = files.read_json("reports/split.json")
    assert report["decisions"]["auto_dropped"] == 1 and report["decisions"]["auto_drops_spared_in_test"] == 1
    assert report["restarted"] is None and report["moved_by_merge"] == 0
    moved = sum(second[s][0] != split for s, (split, _) in first.items() if s in second)
    assert report["moved"] == moved <= 4
