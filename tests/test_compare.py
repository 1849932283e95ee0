"""`imgclass compare`: the headline table from `dvc exp show --json`, within 120 columns."""

from __future__ import annotations

from imgclass.tracking.compare import render, rows_from_show


def metrics_entry(members: dict[str, float], votes: dict[str, float], seconds: float, chosen: str = "soft_vote"):
    """The metrics files as the pipeline writes them: per model and the ensemble's votes."""
    files = {f"metrics/eval/{m}.json": {"data": {"accuracy": a, "macro_f1": a, "ece": 0.05,
                                                  "train_seconds": seconds}}
             for m, a in members.items()}
    files["metrics/ensemble.json"] = {"data": {**votes, "chosen_vote": chosen}}
    return files


def older_metrics_entry(members: dict[str, float], votes: dict[str, float], seconds: float):
    """Before the metrics files held only headline numbers: training time in metrics/train/M.json, and
    every member, vote and the oracle under the ensemble's test_accuracy."""
    files = {f"metrics/eval/{m}.json": {"data": {"accuracy": a, "macro_f1": a, "ece": 0.05, "n": 400}}
             for m, a in members.items()}
    files.update({f"metrics/train/{m}.json": {"data": {"train_seconds": seconds, "best_epoch": 3}} for m in members})
    files["metrics/ensemble.json"] = {"data": {"accuracy": votes["soft_vote"], "chosen_vote": "soft_vote",
                                               "test_accuracy": {**members, **votes},
                                               "val_accuracy": {**members, **votes}}}
    return files


def revision(rev: str, params: dict, metrics: dict, name: str | None = None) -> dict:
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {"params.yaml": {"data": params}},
                                               "metrics": metrics}}


MEMBERS = {"efficientnet_lite0": 0.9, "cnn_simple": 0.81, "mobilenet_v3_large": 0.88}  # params order, unsorted
VOTES = {"hard_vote": 0.9, "soft_vote": 0.915, "weighted_vote": 0.91, "oracle": 0.97}
PARAMS = {"seed": 0, "models": {m: {"lr": 0.01, "epochs": 10, "augment": {"hflip": False}} for m in MEMBERS}}


def show_json() -> list[dict]:
    """The shape of `dvc exp show --json` (DVC 3): workspace, then commits with their experiments."""
    changed = {**PARAMS, "models": {**PARAMS["models"], "cnn_simple": {"lr": 0.03, "epochs": 14,
                                                                      "augment": {"hflip": True}}}}
    many = {**PARAMS, "seed": 7, "models": {m: {"lr": 0.001, "epochs": 30, "augment": {"hflip": True}}
                                            for m in MEMBERS}}
    head = revision("a" * 40, PARAMS, metrics_entry(MEMBERS, VOTES, 120.0), name="main")
    head["experiments"] = [
        {"name": "lr-high", "executor": None, "revs": [revision("b" * 40, changed, metrics_entry(
            {**MEMBERS, "cnn_simple": 0.84}, {**VOTES, "soft_vote": 0.92}, 150.0), name="lr-high")]},
        {"name": "everything-changed", "executor": None, "revs": [revision("c" * 40, many, metrics_entry(
            MEMBERS, VOTES, 3725.0, chosen="hard_vote"), name="everything-changed")]},
        {"name": "waiting", "executor": {"state": "queued"}, "revs": [revision("d" * 40, changed, {})]},
    ]
    return [revision("workspace", PARAMS, metrics_entry(MEMBERS, VOTES, 120.0)), head]


def test_rows_compare_each_experiment_with_its_baseline():
    rows = {r.name.strip(): r for r in rows_from_show(show_json())}
    assert list(rows) == ["workspace", "main", "lr-high", "everything-changed", "waiting (queued)"]
    assert rows["workspace"].changed == [] and rows["main"].changed == []
    assert rows["lr-high"].changed == ["cnn_simple.lr=0.03", "cnn_simple.epochs=14", "cnn_simple.augment.hflip=True"]
    assert rows["lr-high"].members["cnn_simple"] == 0.84 and rows["lr-high"].votes["soft_vote"] == 0.92
    assert rows["lr-high"].train_seconds == 450.0  # three members
    assert rows["waiting (queued)"].members == {} and rows["waiting (queued)"].train_seconds is None


def test_table_fits_the_width_and_wraps_long_param_lists():
    table = render(rows_from_show(show_json()), 120)
    lines = table.splitlines()
    assert max(map(len, lines)) <= 120, table
    header = lines[0].split()
    assert header[:3] == ["experiment", "changed", "params"]
    assert header[3:] == ["efficient…", "cnn_simple", "mobilenet…", "hard", "soft", "weighted", "oracle", "time"]
    lr_high = next(line for line in lines if line.strip().startswith("lr-high"))
    assert "0.840" in lr_high and "0.920*" in lr_high and "7m30s" in lr_high
    everything = [i for i, line in enumerate(lines) if line.strip().startswith("everything-changed")][0]
    assert "0.900*" in lines[everything] and "3h06m" in lines[everything]
    assert lines[everything + 1].startswith(" " * 10) and "_lite0.lr=0.001" in lines[everything + 1]  # wrapped
    waiting = next(line for line in lines if "waiting (queued)" in line)
    assert waiting.split()[-1] == "-"


def test_a_narrow_terminal_still_gets_lines_within_its_width():
    assert max(map(len, render(rows_from_show(show_json()), 80).splitlines())) <= 80


def test_metrics_files_of_other_shapes_do_not_break_the_table():
    """An older ensemble.json (no chosen vote), a failed stage (no metrics), a non-number value."""
    old = revision("e" * 40, PARAMS, {"metrics/ensemble.json": {"data": {"test_accuracy": {
        "cnn_simple": 0.8, "hard_vote": 0.85, "soft_vote": "n/a"}}}, "metrics/eval/x.json": {"error": "broken"}})
    rows = rows_from_show([old])
    assert rows[0].members == {"cnn_simple": 0.8} and rows[0].votes == {"hard_vote": 0.85}
    assert rows[0].chosen_vote is None
    assert "0.850" in render(rows)


def test_older_metrics_files_give_the_same_row():
    older = rows_from_show([revision("f" * 40, PARAMS, older_metrics_entry(MEMBERS, VOTES, 120.0))])[0]
    newer = rows_from_show([revision("f" * 40, PARAMS, metrics_entry(MEMBERS, VOTES, 120.0))])[0]
    assert older.members == newer.members == MEMBERS and list(newer.members) == list(MEMBERS)  # params order
    assert older.votes == newer.votes == VOTES and older.chosen_vote == newer.chosen_vote == "soft_vote"
    assert older.train_seconds == newer.train_seconds == 360.0


def test_long_params_break_after_dots_and_equals():
    from imgclass.tracking.compare import pack

    lines = pack(["efficientnet_lite0.augment.hflip=True", "seed=7"], 20)
    assert lines == ["efficientnet_lite0.", "augment.hflip=True", "seed=7"]
    assert pack(["a" * 45], 20) == ["a" * 20, "a" * 20, "a" * 5]
