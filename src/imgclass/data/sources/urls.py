"""The `urls` source: download the images listed in a CSV (`scrape.urls.csv`) with columns
class,url. Extra columns are ignored, so a collaborator's data/raw/manifest.csv works as the list and
rebuilds the same dataset:

- when the CSV has a `status` column, only rows with status ok/exists are fetched (a URL that failed
  for the collaborator must not add an image they never had);
- when it has a `sha256` column, a download whose content differs is rejected (`sha256_mismatch`);
- a `query` column, if present, is carried into the manifest.

Downloads resume like the ddg source's: see `download.Journal`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from imgclass import files
from imgclass.config.params import Params
from imgclass.data.sources import SourceError
from imgclass.data.sources.download import Job, Journal, download_class, remove_temp_files

log = logging.getLogger(__name__)
KEPT_STATUSES = {"ok", "exists"}


def collect(params: Params, raw_dir: Path) -> list[dict]:
    raw_dir = Path(raw_dir)
    jobs = read_url_list(Path(params.scrape.urls.csv), params.classes)
    remove_temp_files(raw_dir)
    journal = Journal(raw_dir)
    rows: list[dict] = []
    for cls in params.classes:
        rows += download_class(jobs[cls], raw_dir, params.scrape.download, params.scrape.max_per_class, journal,
                               max_pixels=params.validate.max_pixels)
    return rows


def read_url_list(path: Path, classes: list[str]) -> dict[str, list[Job]]:
    """Jobs per class from the CSV, in file order, without repeated (class, url) pairs."""
    if not path.exists():
        raise SourceError(f"scrape.urls.csv: {path} not found; give a CSV with columns class,url "
                          "(a data/raw/manifest.csv from another run works)")
    records = [_normalise_keys(r) for r in files.read_csv(path)]
    if records and not {"class", "url"} <= records[0].keys():
        raise SourceError(f"{path}: needs columns class and url; found {', '.join(records[0])}")
    jobs: dict[str, list[Job]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    unknown: set[str] = set()
    for record in records:
        cls, url = (record.get("class") or "").strip(), (record.get("url") or "").strip()
        if not url or (record.get("status") and record["status"] not in KEPT_STATUSES):
            continue
        if cls not in classes:
            unknown.add(cls)
            continue
        if (cls, url) not in seen:
            seen.add((cls, url))
            jobs[cls].append(Job(cls, url, query=record.get("query") or "", sha256=record.get("sha256") or ""))
    if unknown:
        log.warning("%s: skipped rows of classes not in params.classes: %s", path, ", ".join(sorted(unknown)))
    return jobs


def _normalise_keys(record: dict) -> dict:
    # Spreadsheet exports add a byte-order mark and odd capitalisation to the header.
    return {(key or "").lstrip("\ufeff").strip().lower(): value for key, value in record.items()}
