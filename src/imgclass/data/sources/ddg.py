"""The `ddg` source: DuckDuckGo image search (the `ddgs` package), then downloads.

Per class, each template of `scrape.ddg.queries` ("{class} photo", ...) is searched for up to
`scrape.max_per_class` results with the region/safesearch/size/type/licence/backend of params; the
result URLs, interleaved across queries and without repeats, are downloaded until the class has
`max_per_class` distinct images.

Rate limits: a rate-limited, timed-out or empty search (ddgs hides a 202/403 block behind "No results
found") is retried `scrape.ddg.retries` times with exponential backoff and jitter (`backoff_base`,
doubling, at most `backoff_max` seconds), by the same policy as downloads (`sources.retry`); `pause`
seconds separate consecutive searches. When the
retries run out, or the search service cannot be reached at all (offline), `collect` raises
SourceError("image search unreachable: <reason>; downloaded images kept").

Resuming: each search's results are cached in `raw_dir/.journal/search/` (so a rerun does not
search again for what it already searched), and downloads are journaled (see `download.Journal`).

Search seam, for tests and other backends:
- `collect(params, raw_dir, search=fn)` where `fn(query: str, max_results: int) -> list[dict]`
  returns dicts shaped like `DDGS().images` results ({"image": url, "title": ...}). To signal
  trouble it raises `ddgs.exceptions.RatelimitException` / `TimeoutException` / `DDGSException`
  (retried) or `SearchUnreachable` (not retried: the stage stops at once).
- The environment variable `IMGCLASS_SEARCH_URL`, when set, replaces ddgs by
  `GET $IMGCLASS_SEARCH_URL?q=<query>&max_results=N`, expecting that JSON list; answers 202, 403 and
  429 count as rate limits, 5xx as errors to retry, a refused connection as unreachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Callable, Optional

import requests
from ddgs import DDGS
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from imgclass import files
from imgclass.config.params import DdgSource, Params
from imgclass.data.sources import SourceError
from imgclass.data.sources.download import HEADERS, Job, Journal, download_class, journal_dir, remove_temp_files
from imgclass.data.sources.retry import Transient, call_with_retries
from imgclass.progress import track

Search = Callable[[str, int], list]
SEARCH_URL_ENV = "IMGCLASS_SEARCH_URL"
SEARCH_TIMEOUT = 20.0
# How ddgs words the errors of an unreachable network, and of a search service that is blocking us.
UNREACHABLE_PATTERN = re.compile(r"DNSError|ConnectError|Connection refused|Name or service not known|Network is unreachable", re.I)
RATELIMIT_PATTERN = re.compile(r"ratelimit|rate limit|\b(202|403|429)\b|vqd", re.I)


class SearchUnreachable(Exception):
    """The search service cannot be reached at all; retrying now will not help."""


def collect(params: Params, raw_dir: Path, search: Optional[Search] = None) -> list[dict]:
    raw_dir = Path(raw_dir)
    scrape = params.scrape
    search = search or default_search(scrape.ddg)
    remove_temp_files(raw_dir)
    journal = Journal(raw_dir)
    pacer = Pacer(scrape.ddg.pause)
    rows: list[dict] = []
    for cls in params.classes:  # search then download per class, so a block later keeps this class
        jobs = search_class(cls, scrape.ddg, scrape.max_per_class, search, raw_dir, pacer)
        rows += download_class(jobs, raw_dir, scrape.download, scrape.max_per_class, journal,
                               max_pixels=params.validate.max_pixels)
    return rows


# --- searching --------------------------------------------------------------------------------

def search_class(cls: str, ddg: DdgSource, max_results: int, search: Search, raw_dir: Path, pacer: "Pacer") -> list[Job]:
    """Jobs for one class: the results of every query, interleaved, each URL once."""
    per_query = []
    for template in track(ddg.queries, f"scrape: search {cls}", unit="query"):
        query = template.replace("{class}", cls)
        per_query.append((query, cached_search(query, ddg, max_results, search, raw_dir, pacer)))
    jobs, seen = [], set()
    for rank in range(max((len(results) for _, results in per_query), default=0)):
        for query, results in per_query:
            url = results[rank].get("image") if rank < len(results) else None
            if url and url not in seen:
                seen.add(url)
                jobs.append(Job(cls, url, query=query))
    return jobs


def cached_search(query: str, ddg: DdgSource, max_results: int, search: Search, raw_dir: Path, pacer: "Pacer") -> list[dict]:
    """Results from the cache when an earlier run searched the same query with the same filters."""
    path = search_cache_path(raw_dir, query, ddg)
    if path.exists():
        cached = files.read_json(path)
        if cached["max_results"] >= max_results:
            return cached["results"][:max_results]
    pacer.wait()
    results = [r for r in search_with_retries(search, query, max_results, ddg) if isinstance(r, dict)]
    files.write_json(path, {"query": query, "max_results": max_results, "results": results})
    return results


def search_cache_path(raw_dir: Path, query: str, ddg: DdgSource) -> Path:
    filters = [query, ddg.region, ddg.safesearch, ddg.size, ddg.type_image, ddg.license_image, ddg.backend]
    key = hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", query).strip("-")[:60]
    return journal_dir(raw_dir) / "search" / f"{slug}-{key}.json"


def search_with_retries(search: Search, query: str, max_results: int, ddg: DdgSource) -> list[dict]:
    """search(), retried on rate limits, timeouts and errors by the sources' one retry policy."""
    def attempt() -> list[dict]:
        try:
            return search(query, max_results)
        except DDGSException as exc:
            raise Transient(describe_search_error(exc)) from None

    try:
        return call_with_retries(attempt, ddg.retries, ddg.backoff_base, ddg.backoff_max, what=f"search {query!r}")
    except SearchUnreachable as exc:  # not retried: the stage stops at once
        raise unreachable(str(exc)) from None
    except Transient as exc:
        raise unreachable(f"{exc.reason} after {ddg.retries} retries") from None


def describe_search_error(exc: DDGSException) -> str:
    if isinstance(exc, RatelimitException):
        return f"rate_limited ({exc})" if str(exc) else "rate_limited"
    if isinstance(exc, TimeoutException):
        return "timeout"
    return f"search_error ({str(exc)[:120]})"


def unreachable(reason: str) -> SourceError:
    return SourceError(f"image search unreachable: {reason}; downloaded images kept")


class Pacer:
    """Keeps `pause` seconds between consecutive searches (cached ones do not count)."""

    def __init__(self, pause: float):
        self.pause = pause
        self._last: Optional[float] = None

    def wait(self) -> None:
        if self._last is not None:
            time.sleep(max(0.0, self._last + self.pause - time.monotonic()))
        self._last = time.monotonic()


# --- backends ---------------------------------------------------------------------------------

def default_search(ddg: DdgSource) -> Search:
    url = os.environ.get(SEARCH_URL_ENV)
    return http_search(url) if url else ddgs_search(ddg)


def ddgs_search(ddg: DdgSource) -> Search:
    """DDGS().images with the filters of params; ddgs' errors sorted into unreachable / rate limit."""

    def search(query: str, max_results: int) -> list[dict]:
        try:
            return DDGS(timeout=int(SEARCH_TIMEOUT)).images(
                query, region=ddg.region, safesearch=ddg.safesearch, size=ddg.size, type_image=ddg.type_image,
                license_image=ddg.license_image, backend=ddg.backend, max_results=max_results)
        except (RatelimitException, TimeoutException):
            raise
        except DDGSException as exc:
            text = str(exc)
            if UNREACHABLE_PATTERN.search(text):
                raise SearchUnreachable(f"connection_error ({text.split(':', 1)[0][:60]})") from None  # e.g. DNSError
            if RATELIMIT_PATTERN.search(text):
                raise RatelimitException(_first_line(text)) from None
            raise

    return search


def http_search(base_url: str) -> Search:
    """A search service with the DDGS().images answer shape, as JSON over HTTP (the test seam)."""

    def search(query: str, max_results: int) -> list[dict]:
        try:
            response = requests.get(base_url, params={"q": query, "max_results": max_results},
                                    headers=HEADERS, timeout=SEARCH_TIMEOUT)
        except requests.Timeout:
            raise TimeoutException(f"{base_url} timed out") from None
        except requests.ConnectionError:
            raise SearchUnreachable(f"connection_error ({base_url})") from None
        if response.status_code in (202, 403, 429):
            raise RatelimitException(f"http_{response.status_code}")
        if response.status_code != 200:
            raise DDGSException(f"http_{response.status_code}")
        try:
            results = response.json()
        except ValueError:
            raise DDGSException("answer is not JSON") from None
        if not isinstance(results, list):
            raise DDGSException("answer is not a JSON list")
        return results

    return search


def _first_line(text: str) -> str:
    return text.splitlines()[0][:160] if text else ""
