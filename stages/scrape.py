"""Stage scrape: collect raw images for params.classes from params.scrape.source into data/raw."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.config.params import load_params
from imgclass.data import sources
from imgclass.data.sources.preview import save_sample_grid

RAW = Path("data/raw")


def main() -> int:
    params = load_params()
    try:
        rows = sources.collect(params, RAW)
    except sources.SourceError as exc:
        print(f"scrape: {exc}", file=sys.stderr)
        return 1
    sources.prune(RAW, rows, params.classes)
    files.write_csv(RAW / "manifest.csv", rows, sources.MANIFEST_FIELDS)
    summary = sources.summarize(rows)
    files.write_json("metrics/scrape.json", {"downloaded": summary["downloaded"]})  # the number runs compare
    files.write_json("reports/scrape.json", summary)  # per class and per failure reason
    save_sample_grid(RAW, params.classes, Path("plots/scrape/samples.png"))
    print(f"scrape: {summary['downloaded']} images for {len(params.classes)} classes "
          f"({params.scrape.source}); {summary['found'] - summary['downloaded']} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
