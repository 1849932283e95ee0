"""`dvc plots show` with our template draws every plot in a browser that has no network."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, require
from imgclass import plots_template

CHROMIUM = Path("/usr/bin/chromium")
NODE_MODULES = REPO / "node_modules"


@pytest.fixture
def node_modules():
    require((NODE_MODULES / "vega-embed").is_dir(), "node_modules/vega-embed (npm ci)")


@pytest.fixture
def chromium_installed():  # not `chromium`: that name is the function below, which would hide the fixture
    require(CHROMIUM.exists(), "/usr/bin/chromium (Debian's chromium)")


needs_node_modules = pytest.mark.usefixtures("node_modules")
needs_chromium = pytest.mark.usefixtures("chromium_installed")
AXIS_TITLES = ("loss", "method", "actual")  # one per vega plot below: text only a drawn chart has
DVC_YAML = """\
plots:
  - loss.tsv:
      x: step
      y: loss
  - comparison.json:
      template: bar_horizontal
      x: test_accuracy
      y: method
  - confusion.csv:
      template: confusion
      x: predicted
      y: actual
  - sample.png
"""


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_plots_repo(repo: Path) -> None:
    """A git + dvc repository declaring a linear TSV, a bar JSON, a confusion CSV and a PNG."""
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    (repo / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.6\n2\t0.45\n3\t0.4\n")
    (repo / "comparison.json").write_text(json.dumps([{"method": "vote", "test_accuracy": 0.91},
                                                      {"method": "cnn_simple", "test_accuracy": 0.87}]))
    (repo / "confusion.csv").write_text("actual,predicted\nbag,bag\nbag,dress\ndress,dress\ndress,dress\n")
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(repo / "sample.png")
    (repo / "dvc.yaml").write_text(DVC_YAML)


def offline_page(repo: Path, out: str, *command: str) -> Path:
    """`dvc plots show` (or another `dvc plots` command) rendered with the offline template, set in
    .dvc/config.local as the Makefile sets it; returns the page."""
    plots_template.build_template(NODE_MODULES, repo / ".dvc" / "plots" / "offline.html")
    dvc(repo, "config", "--local", "plots.html_template", "plots/offline.html")
    dvc(repo, "plots", *(command or ("show",)), "-o", out)
    return repo / out / "index.html"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """{"default": DVC's own page, "offline": the page with our template set in .dvc/config.local}."""
    repo = tmp_path_factory.mktemp("plots_repo")
    make_plots_repo(repo)
    dvc(repo, "plots", "show", "-o", "default")
    return {"default": repo / "default" / "index.html", "offline": offline_page(repo, "offline")}


def chromium(page: Path, tmp_path: Path, *args: str) -> str:
    """Headless Chromium on a file:// page with every host name unresolvable and a dead proxy."""
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
               "--virtual-time-budget=5000", *args, page.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def drawn_charts(dom: str) -> int:
    return len(re.findall(r'<svg[^>]*class="marks"', dom))


def external_scripts(html: str) -> list[str]:
    return re.findall(r'<script[^>]*\bsrc\s*=\s*["\']?(https?:[^"\' >]*)', html)


@needs_node_modules
def test_template_inlines_the_pinned_libraries_and_drops_dvcs_cdn_tags(tmp_path):
    page = plots_template.build_template(NODE_MODULES, tmp_path / "offline.html").read_text()
    pinned = json.loads((REPO / "package.json").read_text())["dependencies"]
    for name in plots_template.LIBRARIES:
        assert f'data-library="{name}@{pinned[name]}"' in page
    assert "{plot_divs}" in page and "{refresh_tag}" in page and "{scripts}" not in page
    assert "sourceMappingURL" not in page and not external_scripts(page)


def test_missing_node_modules_says_how_to_install(tmp_path, capsys):
    with pytest.raises(plots_template.LibraryMissing, match="npm install"):
        plots_template.build_template(tmp_path / "node_modules", tmp_path / "offline.html")
    assert plots_template.main(["--node-modules", str(tmp_path), "--out", str(tmp_path / "x.html")]) == 1
    assert "npm install" in capsys.readouterr().err and not (tmp_path / "x.html").exists()


@needs_node_modules
def test_dvc_uses_the_configured_template(pages):
    default, offline = pages["default"].read_text(), pages["offline"].read_text()
    assert external_scripts(default)  # DVC's own page needs a CDN...
    assert not external_scripts(offline) and offline.count("vegaEmbed('#") == 3  # ...ours does not
    assert '<img src="static/workspace_sample.png">' in offline


@pytest.mark.slow
@needs_chromium
@needs_node_modules
def test_offline_page_draws_every_plot_without_network(pages, tmp_path):
    dom = chromium(pages["offline"], tmp_path, "--dump-dom")
    assert drawn_charts(dom) == 3
    for title in AXIS_TITLES:
        assert re.search(rf"<text[^>]*>{title}</text>", dom), title
    assert not external_scripts(dom)
    # the control: the same plots on DVC's default page stay blank here, so the network really is off
    assert drawn_charts(chromium(pages["default"], tmp_path, "--dump-dom")) == 0


@pytest.mark.slow
@needs_chromium
@needs_node_modules
def test_offline_page_screenshot_shows_charts(pages, tmp_path):
    shot = tmp_path / "plots.png"
    chromium(pages["offline"], tmp_path, f"--screenshot={shot}", "--window-size=1200,2000")
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2000, 1200)
    assert (pixels < 200).mean() > 0.02  # lines, bars, cells and the image: not a blank page
