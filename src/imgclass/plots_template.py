"""An HTML page template for `dvc plots show` that works offline: vega, vega-lite and vega-embed inlined.

DVC fills `{scripts}` with <script src="https://cdn.jsdelivr.net/..."> tags; this template has no
`{scripts}` placeholder, so those tags are dropped and the copies from ./node_modules (`npm install`,
versions pinned in package.json) draw the plots instead. DVC only needs `{plot_divs}`; `{refresh_tag}`
keeps `--refresh`-style pages working.

    python -m imgclass.plots_template                  # writes .dvc/plots/offline.html
    dvc config --local plots.html_template plots/offline.html    # relative to .dvc/
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from imgclass import files

LIBRARIES = ("vega", "vega-lite", "vega-embed")  # load order: vega-embed finds the other two as globals
DEFAULT_OUT = Path(".dvc/plots/offline.html")
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
{libraries}
    <script>
        // DVC's divs call vegaEmbed(el, spec): draw SVG, which stays sharp and can be searched and checked
        window.vegaEmbed = (function (embed) {
            return function (el, spec, opt) { return embed(el, spec, Object.assign({renderer: "svg"}, opt)); };
        })(window.vegaEmbed);
    </script>
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class LibraryMissing(FileNotFoundError):
    """node_modules lacks vega, vega-lite or vega-embed; the message says how to install them."""


def library_script(node_modules: Path, name: str) -> str:
    """One library's browser build (the file its CDN serves) as an inline <script>."""
    package_json = node_modules / name / "package.json"
    if not package_json.is_file():
        raise LibraryMissing(f"{package_json} not found: run `npm install --no-audit --no-fund` in the repository")
    package = json.loads(package_json.read_text(encoding="utf-8"))
    code = (node_modules / name / package["jsdelivr"]).read_text(encoding="utf-8")
    # no source-map fetches, and nothing in the code may close the <script> element early
    code = SOURCE_MAP.sub("", code).replace("</script", "<\\/script")
    return f'    <script data-library="{name}@{package["version"]}">\n{code}\n    </script>'


def build_template(node_modules: Path, out: Path) -> Path:
    """Write the offline page template to `out` (atomically) and return it."""
    libraries = "\n".join(library_script(Path(node_modules), name) for name in LIBRARIES)
    # str.replace, not str.format: the page's CSS and the libraries are full of braces
    files.write_text(out, PAGE.replace("{libraries}", libraries))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", type=Path, default=Path("node_modules"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        out = build_template(args.node_modules, args.out)
    except LibraryMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    setting = out.relative_to(".dvc") if out.is_relative_to(".dvc") else out.resolve()  # dvc reads it from .dvc/
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB); dvc config --local plots.html_template {setting}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
