"""The one retry policy of the web sources, for image search and image download alike (tenacity).

A call that fails in a way worth trying again raises `Transient(reason, delay)`; `call_with_retries`
runs it up to `retries` more times, waiting `delay` seconds when the server said how long (a capped
Retry-After), else exponential backoff with jitter. Anything else it raises is not retried. When the
retries run out, the last Transient propagates, so the caller reports its reason.
"""

from __future__ import annotations

import logging
import random
from typing import Callable, Optional, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

log = logging.getLogger(__name__)
T = TypeVar("T")


class Transient(Exception):
    """A failure that may pass: try again after `delay` seconds (None: exponential backoff)."""

    def __init__(self, reason: str, delay: Optional[float] = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def backoff_delay(attempt: int, base: float, cap: float = float("inf")) -> float:
    """Exponential backoff with jitter, so parallel clients do not retry in lockstep."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


def call_with_retries(fn: Callable[[], T], retries: int, backoff: float, cap: float = float("inf"),
                      what: str = "") -> T:
    """fn(), tried again on Transient up to `retries` times; `what` names the call in the log."""
    policy = Retrying(
        stop=stop_after_attempt(retries + 1),
        retry=retry_if_exception_type(Transient),
        wait=lambda state: _delay(state, backoff, cap),
        before_sleep=lambda state: _log_retry(state, retries, what),
        reraise=True,
    )
    return policy(fn)


def _delay(state: RetryCallState, backoff: float, cap: float) -> float:
    failure = state.outcome.exception()
    if failure.delay is not None:  # the server's Retry-After, already capped by the caller
        return failure.delay
    return backoff_delay(state.attempt_number - 1, backoff, cap)


def _log_retry(state: RetryCallState, retries: int, what: str) -> None:
    if what:
        log.warning("%s: %s; retry %d/%d in %.1fs", what, state.outcome.exception().reason, state.attempt_number,
                    retries, state.upcoming_sleep)
