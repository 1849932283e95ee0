"""Scenario 7: twenty-plus classes with few images each (tests/scenarios.py)."""

from __future__ import annotations

import pytest
from conftest import TUXPAINT, require_tuxpaint
from PIL import Image
from scenarios import assert_model_outputs, cnn, folder_params, repro

pytestmark = pytest.mark.slow


MANY = {"asl": "symbols/alphabets/asl", "birds": "animals/birds", "houses": "town/houses/cartoon",
        "uppercase": "symbols/alphabets/english/filled/uppercase", "fruit": "food/fruit",
        "flowers": "plants/flowers", "roadsigns": "town/roadsigns", "christmas": "seasonal/christmas",
        "vegetables": "food/vegetables", "halloween": "seasonal/halloween", "bovines": "animals/mammals/bovines",
        "fruit_cartoons": "food/fruit/cartoon", "tools": "household/tools", "mammals": "animals/mammals",
        "rodents": "animals/mammals/rodents", "chess": "symbols/chess", "clothes": "clothes", "hanukkah": "seasonal/hanukkah",
        "easter": "seasonal/easter", "insects_drawn_as_cartoons": "animals/insects/cartoon", "fish": "animals/fish",
        "planets": "space/planets"}


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    require_tuxpaint()
    mapping = {name: [f"{folder}/*.png"] for name, folder in MANY.items()}
    params = folder_params(TUXPAINT, mapping, {"cnn_simple": cnn(3)}, image_size=32,
                           validate={"min_size": 32}, split={"min_per_class": 6})
    params["scrape"]["max_per_class"] = 15  # 22 rows and columns are the point, not the images in them
    return repro(tmp_path_factory, "many", params, target="ensemble")


def test_many_classes_keep_tables_and_plots_readable(many):
    classes = list(MANY)
    scalars = assert_model_outputs(many, "cnn_simple", classes)
    assert scalars["top3_accuracy"] >= scalars["accuracy"]
    table = (many / "plots" / "eval" / "cnn_simple" / "report.txt").read_text().splitlines()
    rows = [line for line in table if line.split()[0] in {"class", *classes}]
    assert len(rows) == 1 + len(classes)  # the header and one row per class, names in full
    assert len({len(line) for line in rows}) == 1, "report.txt columns do not line up"
    with Image.open(many / "plots" / "eval" / "cnn_simple" / "confusion.png") as im:
        assert min(im.size) >= 22 * 40  # room for 22 labels and counts
