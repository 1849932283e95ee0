"""evaluate's report says how a person's relabels changed the test split, with the accuracy on the
labels before them (issue 25: test numbers before and after a labels.csv change, on the same images)."""

from __future__ import annotations

import numpy as np

from imgclass import files
from imgclass.evaluation.evaluation_report import decisions_on_test
from imgclass.data.split import SPLIT_FIELDS


def test_relabelled_test_images_are_counted_and_scored_on_both_labels(tmp_path):
    rows = [{"path": f"{i}.png", "label": label, "sha256": f"{i:064d}", "group": f"{i:064d}", "original_label": original}
            for i, (label, original) in enumerate([("cat", "cat"), ("dog", "cat"), ("dog", "dog"), ("cat", "")])]
    files.write_csv(tmp_path / "test.csv", rows, SPLIT_FIELDS)  # "": a split written before original_label
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])  # predicts cat, dog, dog, dog
    assert decisions_on_test(tmp_path, ["cat", "dog"], probs) == {
        "relabelled": 1, "accuracy": 0.75, "accuracy_on_original_labels": 0.5}
