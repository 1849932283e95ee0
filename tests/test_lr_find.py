import json
import math

from evaluation_checks import assert_png_figure
from imgclass.training.lr_find import lr_range_test, plot, suggest


def test_suggestion_is_at_the_steepest_descent():
    lrs = [10 ** (-6 + i * 0.5) for i in range(11)]
    losses = [2.0, 2.0, 1.99, 1.9, 1.5, 0.8, 0.5, 0.45, 0.6, 2.0, 9.0]
    assert suggest(lrs, losses) in lrs[3:6]


def test_range_test_on_real_data_stops_when_the_loss_explodes(fashion_split, tmp_path):
    params, split_dir = fashion_split
    result = lr_range_test("cnn_simple", params, split_dir, steps=60)
    # Rates up to 10 blow the loss up: the test must stop there, before its 60 steps.
    assert len(result["lrs"]) == len(result["losses"]) < 60
    last = result["losses"][-1]
    assert not math.isfinite(last) or last > 4 * min(result["losses"])
    assert all(b > a for a, b in zip(result["lrs"], result["lrs"][1:]))
    assert 1e-7 <= result["suggestion"] <= 10 and math.isfinite(result["suggestion"])
    assert min(result["losses"]) < result["losses"][0]
    assert_png_figure(plot(result, tmp_path / "lr.png"))


def test_cli_lr_find_writes_plot_and_suggestion(fashion_split, tmp_path, monkeypatch, capsys):
    import yaml

    from conftest import tiny_params_dict
    from imgclass.cli import main

    params, split_dir = fashion_split
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict()))
    monkeypatch.chdir(tmp_path)
    assert main(["lr-find", "cnn_simple", "--split-dir", str(split_dir), "--steps", "30"]) == 0
    # the plot, and beside it the curve it draws with the rate suggested from it, as printed
    found = json.loads((tmp_path / "plots" / "lr_find" / "cnn_simple.json").read_text())
    assert 2 < len(found["lrs"]) == len(found["losses"]) <= 30 and found["suggestion"] in found["lrs"]
    assert found["suggestion"] == suggest(found["lrs"], found["losses"])
    assert f"suggested lr {found['suggestion']:.2e}" in capsys.readouterr().out
    assert_png_figure(tmp_path / "plots" / "lr_find" / "cnn_simple.png")
    assert main(["lr-find", "nope", "--split-dir", str(split_dir)]) == 1
