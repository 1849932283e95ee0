import numpy as np
import pytest

from imgclass.evaluation.ensemble import compare, hard_vote, oracle_accuracy, soft_vote, weighted_vote
from imgclass.evaluation.evaluate import classification_metrics, expected_calibration_error, most_confused, report_table


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


def test_binary_metrics_report_auc_and_threshold_and_no_top_k():
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.7, 0.35, 0.8, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics(y, probs, ["sneaker", "bag"])
    assert not [k for k in m if k.startswith("top")]
    assert m["positive_class"] == "bag" and m["threshold"] == 0.5
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1)) and m["roc_auc"] == pytest.approx(7 / 9)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p1))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert "positive class 'bag'" in report_table(m, ["sneaker", "bag"])
    one_class = classification_metrics(np.array([1, 1]), probs[:2], ["sneaker", "bag"])
    assert one_class["roc_auc"] is None and one_class["average_precision"] is None  # undefined, not a crash


def test_top_k_is_reported_only_below_the_number_of_classes():
    from imgclass.evaluation.evaluate import top_k_metrics

    y = np.array([0, 1, 2, 3])
    probs = np.array([[0.5, 0.3, 0.15, 0.05]] * 4)  # ranks: class 0, 1, 2, 3
    assert top_k_metrics(y, probs, 4) == {"top3_accuracy": 0.75}
    assert top_k_metrics(y, probs, 4, top_k=2) == {"top2_accuracy": 0.5}
    assert top_k_metrics(y[:3], probs[:3, :3] / probs[:3, :3].sum(axis=1, keepdims=True), 3) == {"top2_accuracy": 2 / 3}
    assert top_k_metrics(np.array([0, 1]), probs[:2, :2] / 0.8, 2) == {}


def saved(val_preds, val_labels, test_preds, test_labels, n_classes=3, sha="0" * 64):
    from imgclass.evaluation.evaluate import SavedPredictions

    return SavedPredictions([f"c{i}" for i in range(n_classes)], one_hot_probs(val_preds, n_classes),
                            np.array(val_labels), one_hot_probs(test_preds, n_classes), np.array(test_labels), sha)


def test_every_ensemble_choice_is_made_on_validation_not_test():
    from imgclass.evaluation.ensemble import evaluate_ensemble

    # On validation, b is the best member and the hard vote wins (b breaks the three-way tie);
    # on test, a is the best member. Choices must follow validation.
    val_y, test_y = [0, 1, 2, 0], [0, 1, 2, 0]
    members = ["a", "b", "c"]
    preds = [saved([0, 1, 0, 1], val_y, [0, 1, 2, 0], test_y),
             saved([0, 1, 2, 0], val_y, [1, 1, 1, 1], test_y),
             saved([1, 2, 1, 2], val_y, [2, 2, 2, 2], test_y)]
    result = evaluate_ensemble(members, preds)
    assert result.spec.tie_break == "b"
    assert result.spec.weights == [0.5, 1.0, 0.0]
    assert result.val_accuracy["b"] == 1.0 and result.test_accuracy["a"] == 1.0
    assert result.spec.vote == max(("soft_vote", "weighted_vote", "hard_vote"),
                                   key=lambda v: (result.val_accuracy[v], v == "soft_vote"))
    record = result.record()
    assert record["chosen_vote"] == result.spec.vote
    assert record["accuracy"] == record["test_accuracy"][result.spec.vote]
    # metrics/ensemble.json: the votes and the oracle on test, and the choice; no members, no detail
    assert result.metrics() == {**{v: result.test_accuracy[v] for v in ("soft_vote", "weighted_vote", "hard_vote",
                                                                         "oracle")}, "chosen_vote": result.spec.vote}
    assert evaluate_ensemble(members, preds, tie_break="c").spec.tie_break == "c"


def test_vote_choice_prefers_soft_on_a_tie_and_a_single_member_equals_its_votes():
    from imgclass.evaluation.ensemble import choose_vote, evaluate_ensemble

    assert choose_vote({"hard_vote": 0.9, "soft_vote": 0.9, "weighted_vote": 0.9}) == "soft_vote"
    assert choose_vote({"hard_vote": 0.95, "soft_vote": 0.9, "weighted_vote": 0.9}) == "hard_vote"
    only = evaluate_ensemble(["a"], [saved([0, 1, 1], [0, 1, 2], [2, 1, 0], [0, 1, 2])])
    assert only.test_accuracy["a"] == only.test_accuracy["soft_vote"] == only.test_accuracy["hard_vote"] == 1 / 3
    assert only.spec.vote == "soft_vote"


def test_apply_vote_scores_and_the_hard_vote_tie_break():
    from imgclass.evaluation.ensemble import EnsembleSpec

    probs = np.stack([one_hot_probs([0], 3, 0.9), one_hot_probs([1], 3, 0.6)])
    hard = EnsembleSpec(["a", "b"], "hard_vote", "b", [1.0, 1.0])
    scores, predicted = hard.apply(probs)
    assert scores.tolist() == [[0.5, 0.5, 0.0]] and predicted.tolist() == [1]  # tie: b decides
    soft_scores, soft_predicted = EnsembleSpec(["a", "b"], "soft_vote", "b", [1.0, 1.0]).apply(probs)
    assert soft_predicted.tolist() == [0] and soft_scores.sum() == pytest.approx(1)
    assert EnsembleSpec.from_dict(hard.to_dict()) == hard


def test_roc_and_pr_curves_for_two_and_for_more_classes():
    from sklearn.metrics import roc_auc_score

    from imgclass.evaluation.evaluate import curve_area, roc_pr_curves

    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.4, 0.7, 0.35, 0.8, 0.9])
    binary = roc_pr_curves(y, np.stack([1 - p1, p1], axis=1))
    assert curve_area(binary["roc"], "fpr", "tpr") == pytest.approx(roc_auc_score(y, p1))
    assert binary["pr"][0]["recall"] == 1 and (binary["roc"][0]["fpr"], binary["roc"][-1]["tpr"]) == (0, 1)

    y3 = np.array([0, 1, 2, 2, 1, 0])
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3], [0.2, 0.7, 0.1],
                      [0.3, 0.3, 0.4]])
    micro = roc_pr_curves(y3, probs)  # one-vs-rest micro-average: every image x class pair is one score
    assert curve_area(micro["roc"], "fpr", "tpr") == pytest.approx(roc_auc_score(np.eye(3)[y3], probs, average="micro"))
    assert roc_pr_curves(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]])) == {"roc": [], "pr": []}


def test_evaluation_of_four_classes_writes_every_declared_output(fashion_split, tiny_checkpoint, tmp_path):
    from evaluation_checks import assert_png_figure, assert_report_matches_predictions
    from imgclass.evaluation import evaluation_report
    from imgclass import files
    from imgclass.model.checkpoint import load_trained
    from imgclass.evaluation.evaluate import predict_probs
    from imgclass.data.image_cache import load_split

    params, split_dir = fashion_split
    checkpoint = tiny_checkpoint  # read only: evaluate_model writes beside tmp_path
    report = evaluation_report.evaluate_model("m", checkpoint, split_dir, tmp_path / "plots", tmp_path / "m.npz",
                                    tmp_path / "m.json")
    headline = files.read_json(tmp_path / "m.json")
    assert list(headline) == ["accuracy", "macro_f1", "ece", "train_seconds"] and headline["train_seconds"] > 0
    # Every number agrees with the saved probabilities and the split's labels, recomputed here ...
    detail = assert_report_matches_predictions(tmp_path / "plots", tmp_path / "m.npz", split_dir, params.classes,
                                               checkpoint=checkpoint, headline=tmp_path / "m.json")
    assert "top3_accuracy" in detail and "roc_auc" not in detail
    # ... and the saved probabilities are the checkpoint's on the test split
    model, _, prep = load_trained(checkpoint)
    with np.load(tmp_path / "m.npz") as saved:
        np.testing.assert_allclose(saved["test_probs"],
                                   predict_probs(model, prep, load_split(split_dir, "test", params.classes, 28)[0]),
                                   atol=1e-5)
    tracked = report.tracked_metrics()  # MLflow still gets every scalar, not only the headline
    assert tracked["eval_val_accuracy"] == detail["val_accuracy"] and tracked["test_n"] == detail["n"]
    assert tracked["test_top3_accuracy"] == detail["top3_accuracy"] and tracked["test_accuracy"] == headline["accuracy"]
    # roc.csv and pr.csv: the micro-averaged curves, from (0, 0) to (1, 1) and from recall 1 down
    roc = [(float(r["fpr"]), float(r["tpr"])) for r in files.read_csv(tmp_path / "plots" / "roc.csv")]
    assert list(files.read_csv(tmp_path / "plots" / "roc.csv")[0]) == ["fpr", "tpr"]
    assert roc[0] == (0, 0) and roc[-1] == (1, 1) and roc == sorted(roc)
    pr = files.read_csv(tmp_path / "plots" / "pr.csv")
    assert list(pr[0]) == ["recall", "precision"] and float(pr[0]["recall"]) == 1 and float(pr[-1]["recall"]) == 0
    for name in ("confusion.png", "confusion_normalized.png", "reliability.png", "roc.png", "pr.png", "tsne.png",
                 "gradcam.png", "top_losses.png"):
        assert_png_figure(tmp_path / "plots" / name)


def test_training_curves_are_one_long_table_of_every_model_and_epoch(tmp_path):
    from dvclive import Live

    from imgclass import files

    from imgclass.tracking import training_curves

    for model, accuracies in (("b", [0.5, 0.7]), ("a", [0.4, 0.6, 0.8])):
        live = Live(dir=str(tmp_path / "dvclive" / model), dvcyaml=False, save_dvc_exp=False, report=None)
        for accuracy in accuracies:  # as the training Tracker logs an epoch: val_accuracy -> val/accuracy
            live.log_metric("val/accuracy", accuracy)
            live.log_metric("lr", 0.1)
            live.next_step()
        live.end()
    out = tmp_path / "curves.csv"
    training_curves.write_curves(["b", "a", "not_trained"], tmp_path / "dvclive", out)
    rows = files.read_csv(out)
    assert list(rows[0])[:7] == ["epoch", "model", "val_accuracy", "val_loss", "train_accuracy", "train_loss", "lr"]
    assert [(r["model"], int(r["epoch"]), float(r["val_accuracy"])) for r in rows] == [
        ("b", 1, 0.5), ("b", 2, 0.7), ("a", 1, 0.4), ("a", 2, 0.6), ("a", 3, 0.8)]
    assert {r["lr"] for r in rows} == {"0.1"} and {r["val_loss"] for r in rows} == {""}
