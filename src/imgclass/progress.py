"""Progress of long steps: done / total, rate and ETA, in a terminal and in a CI log alike.

On a terminal it is a tqdm bar. Anywhere else (a CI log, `dvc repro > log`, a captured test run) a bar
is a stream of carriage returns, so it prints one plain line every `IMGCLASS_PROGRESS_SECONDS`
seconds (default 10) and a last line with the total time, only for steps that took that long:

    validate: 1200/2000 files (60%), 31.2 files/s, ETA 26 s
    validate: 2000/2000 files in 64 s, 31.3 files/s
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Iterable, Iterator, Optional, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")
INTERVAL_ENV = "IMGCLASS_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 10.0


def interval_seconds() -> float:
    value = os.environ.get(INTERVAL_ENV, "")
    if not value:
        return DEFAULT_INTERVAL
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:  # NaN or infinity would silently print nothing
        raise ValueError(f"{INTERVAL_ENV}={value!r}: expected seconds between progress lines, e.g. 10")
    return seconds


class Progress:
    """`update(n)` as items finish; use as a context manager (or call `close`)."""

    def __init__(self, total: int, desc: str, unit: str = "image", stream: Optional[TextIO] = None,
                 interval: Optional[float] = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream or sys.stderr
        self.interval = interval_seconds() if interval is None else interval
        self.done = 0
        self.started = self._last_line = time.monotonic()
        self._printed = False
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, leave=False,
                         mininterval=0.5) if _is_terminal(self.stream) else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval and self.done < self.total:
            self._last_line = now
            self._print(self._running_line(now - self.started))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            return
        elapsed = time.monotonic() - self.started
        if self._printed or elapsed >= self.interval:
            self._print(f"{self.desc}: {self.done}/{self.total} {self._units()} in {_duration(elapsed)}, "
                        f"{_rate(self.done, elapsed)} {self._units()}/s")

    def _running_line(self, elapsed: float) -> str:
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        percent = 100 * self.done / self.total if self.total else 100
        return (f"{self.desc}: {self.done}/{self.total} {self._units()} ({percent:.0f}%), "
                f"{_rate(self.done, elapsed)} {self._units()}/s, ETA {eta}")

    def _units(self) -> str:
        return self.unit if self.unit.endswith("s") else self.unit + "s"

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
        self._printed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, total: Optional[int] = None, unit: str = "image") -> Iterator[T]:
    """Yield `items`, reporting each one done (as a Progress does)."""
    total = len(items) if total is None else total  # type: ignore[arg-type]
    with Progress(total, desc, unit) as progress:
        for item in items:
            yield item
            progress.update()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _rate(done: int, elapsed: float) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
