import numpy as np
import pytest

from imgclass.ensemble import compare, hard_vote, oracle_accuracy, soft_vote, weighted_vote
from imgclass.evaluate import classification_metrics, expected_calibration_error, most_confused, report_table


def one_hot_probs(preds, n_classes=3, confidence=0.8):
    probs = np.full((len(preds), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_metrics_on_a_known_confusion():
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = one_hot_probs([0, 0, 1, 1, 1, 0])
    m = classification_metrics(y, probs, ["a", "b", "c"], top_k=2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"]["c"]["recall"] == 0
    assert m["per_class"]["a"]["mean_bias_error"] == pytest.approx(3 / 6 - 3 / 6)
    assert m["per_class"]["b"]["mean_bias_error"] == pytest.approx(3 / 6 - 2 / 6)
    assert m["most_confused"][0]["count"] == 1
    assert "top2_accuracy" in m and m["top2_accuracy"] >= m["accuracy"]
    assert "macro f1" in report_table(m, ["a", "b", "c"])


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    y = np.array([0] * 10)
    calibrated = one_hot_probs([0] * 8 + [1] * 2, confidence=0.8)
    assert expected_calibration_error(y, calibrated)[0] == pytest.approx(0.0, abs=1e-9)
    overconfident = one_hot_probs([0] * 5 + [1] * 5, confidence=0.99)
    assert expected_calibration_error(y, overconfident)[0] == pytest.approx(0.49, abs=1e-6)


def test_most_confused_orders_by_count():
    cm = np.array([[5, 3, 0], [1, 5, 0], [0, 4, 5]])
    pairs = most_confused(cm, ["a", "b", "c"], n=2)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 4), ("a", "b", 3)]


def test_hard_vote_majority_and_tie_break():
    # three members, four samples; sample 3 is a three-way tie
    votes = np.stack([one_hot_probs([0, 1, 2, 0]), one_hot_probs([0, 1, 1, 1]), one_hot_probs([1, 2, 1, 2])])
    assert hard_vote(votes, tie_break=0).tolist() == [0, 1, 1, 0]
    assert hard_vote(votes, tie_break=2).tolist() == [0, 1, 1, 2]


def test_hard_vote_tie_falls_back_to_probability_when_tie_breaker_is_outvoted():
    votes = np.stack([one_hot_probs([0], 3, 0.9), one_hot_probs([1], 3, 0.6), one_hot_probs([2], 3, 0.5),
                      one_hot_probs([2], 3, 0.5)])
    # classes 2 has two votes; the tie-break member voted 0 (not tied at the top)
    assert hard_vote(votes, tie_break=0).tolist() == [2]


def test_soft_and_weighted_votes():
    a = np.array([[0.6, 0.4]])
    b = np.array([[0.1, 0.9]])
    probs = np.stack([a, b])
    assert soft_vote(probs).argmax(axis=1).tolist() == [1]
    assert weighted_vote(probs, [0.9, 0.1]).argmax(axis=1).tolist() == [0]
    with pytest.raises(ValueError):
        weighted_vote(probs, [0, 0])


def test_oracle_and_comparison_table():
    y = np.array([0, 1, 2])
    probs = np.stack([one_hot_probs([0, 0, 0]), one_hot_probs([1, 1, 1]), one_hot_probs([0, 1, 1])])
    assert oracle_accuracy(probs, y) == pytest.approx(2 / 3)
    table = compare(["a", "b", "c"], probs, y, [0.5, 0.5, 0.9], tie_break="c")
    assert table["oracle"] >= max(table["a"], table["b"], table["c"], table["hard_vote"], table["soft_vote"])
    assert table["hard_vote"] == pytest.approx(2 / 3)
