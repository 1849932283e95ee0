"""The HTTP client shared by the web sources (ddg, urls): fetch one image safely, download many in a
thread pool, and remember every outcome in a journal so that an interrupted run resumes.

- `fetch_image(url, settings)` never raises for network trouble: it returns a `FetchResult` whose
  `reason` is a short machine-friendly word (http_404, timeout, too_large, not_image, truncated, ...).
  A body is kept only when it decodes fully, checked by validate's own sniffer and decompression-bomb
  guard (`images.decoded`); the size policy (min_size, aspect) stays with validate.
- Retries (5xx, 429 with its Retry-After, timeouts, dropped connections) follow the one policy of
  `sources.retry`; each attempt has an overall deadline of `settings.timeout`.
- `download_all(jobs, raw_dir, settings, journal)` returns one manifest row per job, in job order.
- `download_class(jobs, raw_dir, settings, limit, journal)` downloads one class until `limit`
  distinct images are on disk.
- `Journal(raw_dir)` is `raw_dir/.journal/downloads.jsonl`: one JSON line per finished URL, flushed
  at once, so a killed run loses at most the downloads that were in flight.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import urlsplit

import requests
import urllib3
from PIL import Image

from imgclass import files
from imgclass.config.params import Download, ValidateParams
from imgclass.data.images import ImageRejected, check_pixel_count, decoded
from imgclass.data.sources import store_image
from imgclass.data.sources.retry import Transient, call_with_retries
from imgclass.progress import Progress

# Some image hosts refuse the default python-requests agent; present as a current desktop browser.
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
HEADERS = {"User-Agent": USER_AGENT, "Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"}
MAX_REDIRECTS = 10
CHUNK_SIZE = 64 * 1024
JOURNAL_DIR = ".journal"

# File extension per Pillow format; formats not listed take Pillow's first registered extension.
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif",
              "HEIF": "heic", "AVIF": "avif"}
DEFAULT_MAX_PIXELS = ValidateParams().max_pixels  # callers pass params.validate.max_pixels
# What validate calls these, a download calls not_image: the server sent something else.
NOT_IMAGE_REASONS = {"empty_file", "html_not_image", "svg_not_supported", "not_an_image"}

# Failures that a later run would see again (these and 4xx); other failures (timeouts, 5xx, 429,
# dropped connections, and bombs, which depend on validate.max_pixels) are tried again when a run resumes.
PERMANENT_FAILURES = {"bad_scheme", "bad_url", "too_many_redirects", "too_large", "not_image", "sha256_mismatch",
                      "truncated", "corrupt", "unsupported_format"}


def is_permanent(reason: str) -> bool:
    return reason in PERMANENT_FAILURES or (reason.startswith("http_4") and reason != "http_408")


@dataclass(frozen=True)
class Job:
    """One URL to fetch for a class. `sha256`, when known (a collaborator's manifest), must match."""

    cls: str
    url: str
    query: str = ""
    sha256: str = ""


@dataclass
class FetchResult:
    url: str
    reason: str = ""  # empty when the image was fetched
    data: bytes = b""
    ext: str = ""
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return not self.reason


class _Fail(Exception):
    """A failure that retrying will not fix."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --- one URL ----------------------------------------------------------------------------------

def new_session() -> requests.Session:
    session = requests.Session()
    session.headers.update(HEADERS)
    session.max_redirects = MAX_REDIRECTS
    return session


def fetch_image(url: str, settings: Download = Download(), session: Optional[requests.Session] = None,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> FetchResult:
    """GET `url` and check that it is a whole image; retry 5xx, timeouts, dropped connections and 429."""
    try:
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return FetchResult(url, reason="bad_scheme")
    except ValueError:  # e.g. an unbalanced "[" in the host
        return FetchResult(url, reason="bad_url")
    session = session or new_session()
    try:
        data = call_with_retries(partial(_get_body, session, url, settings), settings.retries, settings.backoff)
        ext, width, height = identify_image(data, max_pixels)
    except (_Fail, Transient) as failure:
        return FetchResult(url, reason=failure.reason)
    return FetchResult(url, data=data, ext=ext, width=width, height=height)


def _get_body(session: requests.Session, url: str, settings: Download) -> bytes:
    """The response body, read with a byte limit and an overall deadline (requests' own timeout is
    per socket read, so a server trickling bytes would otherwise never time out)."""
    deadline = time.monotonic() + settings.timeout
    try:
        with session.get(url, stream=True, timeout=settings.timeout) as response:
            _check_status(response, settings)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > settings.max_bytes:
                raise _Fail("too_large")
            body = bytearray()
            # read1 returns what one socket read brings, so the deadline is checked as bytes arrive;
            # iter_content(CHUNK_SIZE) waits for a whole chunk, which a trickle of bytes takes hours to fill.
            while chunk := response.raw.read1(CHUNK_SIZE, decode_content=True):
                body += chunk
                if len(body) > settings.max_bytes:
                    raise _Fail("too_large")
                if time.monotonic() > deadline:
                    raise Transient("timeout")
            return bytes(body)
    except requests.TooManyRedirects:
        raise _Fail("too_many_redirects") from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema):
        raise _Fail("bad_scheme") from None  # e.g. a redirect to ftp:// or data:
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
        raise _Fail("bad_url") from None
    except requests.Timeout:
        raise Transient("timeout") from None
    except requests.ConnectionError as exc:
        # A read timeout in the middle of the body arrives wrapped as a ConnectionError.
        timed_out = any(isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)
        raise Transient("timeout" if timed_out else "connection_error") from None
    except urllib3.exceptions.ReadTimeoutError:  # the body is read from urllib3 itself (read1)
        raise Transient("timeout") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError):  # a body cut short of its
        raise Transient("connection_error") from None                   # Content-Length, or undecodable


def _check_status(response: requests.Response, settings: Download) -> None:
    code = response.status_code
    if code == 429:
        raise Transient("rate_limited", retry_after_seconds(response.headers.get("Retry-After"), settings.max_retry_after))
    if code >= 500:
        raise Transient(f"http_{code}")
    if code >= 300:  # 4xx, and 3xx that requests did not follow (no Location)
        raise _Fail(f"http_{code}")


def retry_after_seconds(value: Optional[str], cap: float) -> Optional[float]:
    """Retry-After as seconds (it may be a number or an HTTP date), at most `cap`; None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(cap, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(cap, max(0.0, when.timestamp() - time.time()))


def identify_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """(extension, width, height) when `data` decodes fully as validate would decode it, else _Fail
    with validate's reason (not_image for what is no image at all)."""
    try:
        with decoded(io.BytesIO(data), partial(check_pixel_count, max_pixels=max_pixels)) as image:
            fmt, (width, height) = image.format or "", image.size
    except ImageRejected as rejected:
        raise _Fail("not_image" if rejected.reason in NOT_IMAGE_REASONS else rejected.reason) from None
    ext = EXTENSIONS.get(fmt) or _registered_extension(fmt)
    if ext is None:
        raise _Fail("unsupported_format")
    return ext, width, height


def _registered_extension(fmt: str) -> Optional[str]:
    """Pillow's first file extension for a format (e.g. ICO -> ico), without the dot."""
    return next((ext.lstrip(".") for ext, name in Image.registered_extensions().items() if name == fmt), None)


# --- the journal ------------------------------------------------------------------------------

def journal_dir(raw_dir: Path) -> Path:
    return Path(raw_dir) / JOURNAL_DIR


class Journal:
    """Append-only record of finished URLs, `raw_dir/.journal/downloads.jsonl`; the last line for a
    (class, url) wins. Thread-safe; each line is flushed before the next download is reported."""

    def __init__(self, raw_dir: Path):
        self.raw_dir = Path(raw_dir)
        self.path = journal_dir(raw_dir) / "downloads.jsonl"
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], dict] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._own_copy()
            self._load()

    def _own_copy(self) -> None:
        """After `dvc repro`, the journal is a link into DVC's cache (.dvc/config cache.type): appending
        to it would change the cached file in place. Rewrite it as a file of its own first."""
        if self.path.is_symlink() or self.path.stat().st_nlink > 1:
            files.write_bytes(self.path, self.path.read_bytes())

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8")
        for line in text.splitlines():
            try:
                row = json.loads(line)
                self._rows[(row["class"], row["url"])] = row
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill; that URL is simply fetched again
        if text and not text.endswith("\n"):
            with self.path.open("a", encoding="utf-8") as f:
                f.write("\n")  # so the next line does not glue onto the torn one

    def lookup(self, cls: str, url: str) -> Optional[dict]:
        return self._rows.get((cls, url))

    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def record(self, row: dict) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            self._rows[(row["class"], row["url"])] = row


# --- many URLs --------------------------------------------------------------------------------

def manifest_row(job: Job, status: str, reason: str = "", sha256: str = "", size: Optional[int] = None,
                 width: Optional[int] = None, height: Optional[int] = None, path: str = "") -> dict:
    return {"class": job.cls, "query": job.query, "url": job.url, "status": status, "reason": reason,
            "sha256": sha256, "bytes": size, "width": width, "height": height, "path": path}


class _Downloader:
    """State shared by the worker threads of one download_all call."""

    def __init__(self, raw_dir: Path, settings: Download, journal: Optional[Journal], max_pixels: int):
        self.raw_dir = Path(raw_dir)
        self.settings = settings
        self.journal = journal
        self.max_pixels = max_pixels
        self._local = threading.local()
        self._store_lock = threading.Lock()
        # path -> URL that first stored it, to say which URL a duplicate duplicates.
        self._first_url = {r["path"]: r["url"] for r in (journal.rows() if journal else []) if r["status"] == "ok"}
        self.new_paths: set[str] = set()  # stored by this call

    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):  # requests.Session is not thread-safe: one per thread
            self._local.session = new_session()
        return self._local.session

    def run(self, job: Job) -> dict:
        earlier = self.reusable(job)
        if earlier is not None:
            return earlier
        row = self.fetch_and_store(job)
        if self.journal is not None:
            self.journal.record(row)
        return row

    def reusable(self, job: Job) -> Optional[dict]:
        """The outcome of an earlier run, if this URL need not be requested again."""
        row = self.journal.lookup(job.cls, job.url) if self.journal else None
        if row is None:
            return None
        if row["status"] in ("ok", "exists") and row["path"] and (self.raw_dir / row["path"]).exists():
            return {**row, "query": job.query, "status": "exists", "reason": "earlier_run"}
        if row["status"] == "failed" and is_permanent(row["reason"]):
            return {**row, "query": job.query}
        return None

    def fetch_and_store(self, job: Job) -> dict:
        fetched = fetch_image(job.url, self.settings, self.session(), self.max_pixels)
        if not fetched.ok:
            return manifest_row(job, "failed", fetched.reason)
        if job.sha256 and hashlib.sha256(fetched.data).hexdigest() != job.sha256:
            return manifest_row(job, "failed", "sha256_mismatch")
        # store_image checks then writes: under one lock, only one of two threads storing the same
        # bytes sees them as new.
        with self._store_lock:
            sha, path, is_new = store_image(fetched.data, self.raw_dir / job.cls, fetched.ext)
            rel = path.relative_to(self.raw_dir).as_posix()
            first_url = self._first_url.setdefault(rel, job.url)
            if is_new:
                self.new_paths.add(rel)
        if is_new:
            status, reason = "ok", ""
        else:
            status = "exists"
            reason = f"duplicate_of:{first_url}" if first_url != job.url else "earlier_run"
        return manifest_row(job, status, reason, sha, len(fetched.data), fetched.width, fetched.height, rel)


def download_all(jobs: Iterable[Job], raw_dir: Path, settings: Download = Download(),
                 journal: Optional[Journal] = None, on_row: Optional[Callable[[dict], None]] = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Fetch every job with `settings.workers` threads; one manifest row per job, in job order.

    URLs the journal already holds (stored and still on disk, or failed for good) are not requested.
    `on_row` is called in the calling thread as each job finishes (for progress bars); `max_pixels`
    is the decompression-bomb limit (params.validate.max_pixels).
    """
    jobs = list(jobs)
    downloader = _Downloader(raw_dir, settings, journal, max_pixels)
    rows: list[Optional[dict]] = [None] * len(jobs)
    pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="download")
    try:
        futures = {pool.submit(downloader.run, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            if on_row is not None:
                on_row(rows[futures[future]])
    except BaseException:
        # Ctrl-C: drop the queue, let the requests in flight finish (bounded by the timeout).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    for index in credit_first_in_job_order(rows, downloader.new_paths):  # type: ignore[arg-type]
        if journal is not None:
            journal.record(rows[index])  # the last line wins: the journal agrees with the manifest
    return rows  # type: ignore[return-value]


def credit_first_in_job_order(rows: list[dict], new_paths: set[str]) -> list[int]:
    """Jobs fetching the same bytes race to store them; whichever thread won, the manifest credits
    the earliest job, so that a run's manifest does not depend on thread timing. Returns the
    indexes of the rows it relabelled."""
    first_url: dict[str, str] = {}
    changed = []
    for index, row in enumerate(rows):
        if row["path"] not in new_paths or row["status"] not in ("ok", "exists"):
            continue
        first = first_url.setdefault(row["path"], row["url"])
        label = ("ok", "") if first == row["url"] else ("exists", f"duplicate_of:{first}")
        if (row["status"], row["reason"]) != label:
            row["status"], row["reason"] = label
            changed.append(index)
    return changed


def download_class(jobs: list[Job], raw_dir: Path, settings: Download, limit: int,
                   journal: Optional[Journal] = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Download one class's jobs in order until `limit` distinct images are stored.

    Works in batches of the number still missing, so the class never overshoots `limit` while the
    pool stays busy; URLs after the limit is reached get no row.
    """
    rows: list[dict] = []
    stored: set[str] = set()
    position = 0
    desc = f"scrape: download {jobs[0].cls}" if jobs else "scrape: download"
    with Progress(min(limit, len(jobs)), desc) as progress:

        def count_stored(row: dict) -> None:
            if row["status"] in ("ok", "exists") and row["path"] not in stored:
                stored.add(row["path"])
                progress.update()

        while len(stored) < limit and position < len(jobs):
            batch = jobs[position:position + limit - len(stored)]
            position += len(batch)
            rows += download_all(batch, raw_dir, settings, journal, on_row=count_stored, max_pixels=max_pixels)
    return rows


def remove_temp_files(raw_dir: Path) -> None:
    """Delete the temp files of atomic writes that a killed run (kill -9) left behind."""
    if raw_dir.exists():
        for tmp in raw_dir.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
