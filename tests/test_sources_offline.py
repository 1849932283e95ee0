import hashlib
from pathlib import Path

import pytest
from PIL import Image

from conftest import TUXPAINT, require_fashion, require_tuxpaint, tiny_params_dict
from imgclass.data import sources
from imgclass.config.params import parse_params
from imgclass.data.sources import SourceError


def test_fashion_mnist_writes_content_named_pngs_per_class(tmp_path):
    require_fashion()
    params = parse_params(tiny_params_dict())
    rows = sources.collect(params, tmp_path)
    assert len(rows) == 4 * 60 and {r["status"] for r in rows} == {"ok"}
    for row in rows[:5]:
        path = tmp_path / row["path"]
        assert path.parent.name == row["class"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"] == path.stem
        assert Image.open(path).size == (28, 28)
    again = sources.collect(params, tmp_path)
    assert {r["status"] for r in again} == {"exists"}
    assert [r["sha256"] for r in again] == [r["sha256"] for r in rows]  # seeded: the same sample


def test_fashion_mnist_unknown_class_is_named(tmp_path):
    params = parse_params(tiny_params_dict(classes=["trouser", "hat"]))
    with pytest.raises(SourceError, match="'hat' is not a Fashion-MNIST class"):
        sources.collect(params, tmp_path)


def test_folder_source_maps_classes_to_globs(tmp_path):
    require_tuxpaint()
    raw = tiny_params_dict(classes=["mammals", "birds"])
    raw["scrape"]["source"] = "folder"
    raw["scrape"]["folder"] = {"root": str(TUXPAINT), "mapping": {"mammals": ["animals/mammals/**/*.png"],
                                                                   "birds": ["animals/birds/**/*.png"]}}
    rows = sources.collect(parse_params(raw), tmp_path)
    birds = [r for r in rows if r["class"] == "birds"]
    assert 20 < len(birds) <= 60 and all(r["url"].endswith(".png") for r in birds)
    for name, folder in (("mammals", "animals/mammals"), ("birds", "animals/birds")):
        # each class gets the files its glob matches (up to max_per_class, in name order) ...
        matched = sorted(p for p in (TUXPAINT / folder).rglob("*.png"))[:60]
        assert [r["url"] for r in rows if r["class"] == name] == [p.as_posix() for p in matched], name
    for row in rows:
        # ... copied whole into data/raw/CLASS, named by the content hash
        source, stored = Path(row["url"]).read_bytes(), tmp_path / row["path"]
        assert stored.parent == tmp_path / row["class"] and stored.read_bytes() == source, row
        assert stored.stem == row["sha256"] == hashlib.sha256(source).hexdigest() and row["bytes"] == len(source)


def test_folder_source_errors_name_the_problem(tmp_path):
    raw = tiny_params_dict(classes=["a", "b"])
    raw["scrape"]["source"] = "folder"
    raw["scrape"]["folder"] = {"root": str(tmp_path / "missing"), "mapping": {"a": ["a/*"], "b": ["b/*"]}}
    with pytest.raises(SourceError, match="is not a folder"):
        sources.collect(parse_params(raw), tmp_path / "raw")
    (tmp_path / "tree" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(tmp_path / "tree" / "a" / "x.png")
    raw["scrape"]["folder"]["root"] = str(tmp_path / "tree")
    with pytest.raises(SourceError, match=r"mapping\.b: no image files match"):
        sources.collect(parse_params(raw), tmp_path / "raw")


def test_prune_removes_files_of_other_datasets_only(tmp_path):
    keep = tmp_path / "cat" / "a.png"
    stale = tmp_path / "cat" / "old.png"
    dropped = tmp_path / "dog" / "b.png"
    journal = tmp_path / ".journal" / "log.jsonl"
    for path in (keep, stale, dropped, journal):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    removed = sources.prune(tmp_path, [{"path": "cat/a.png"}], ["cat"])
    assert removed == 2 and keep.exists() and journal.exists()
    assert not stale.exists() and not (tmp_path / "dog").exists()
