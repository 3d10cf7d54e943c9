"""The one HTTP client of the project (crawl and the remote title backend): a descriptive User-Agent,
a pause between requests where a host asks for one, retries with exponential backoff on timeouts,
dropped connections, 429 and 5xx, and a Retry-After honoured whether it gives seconds or a date.

    client = HttpClient(max_retries=8, min_interval=lambda url: 3.0)
    root = client.send("GET", url, params=..., check=parse)   # check may raise Retryable

`check(response)` turns an answer into the value wanted, or raises Retryable for an answer worth
asking again (an HTML maintenance page, truncated XML); after max_retries attempts the last problem
is raised as GiveUp.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from chatgentitle import __version__

T = TypeVar("T")


class Retryable(Exception):
    """A failure worth trying again (5xx, 429/503 + Retry-After, an answer that is not what was asked for)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class GiveUp(RuntimeError):
    """The request kept failing; the message says how often and why."""


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def user_agent(purpose: str, contact: str | None = None) -> str:
    return f"chatgentitle/{__version__} ({purpose}" + (f"; mailto:{contact})" if contact else ")")


class HttpClient:
    """Requests with politeness and retries; `requests` and `retries` count what it did."""

    def __init__(self, *, timeout_seconds: float = 60.0, max_retries: int = 8, backoff_seconds: float = 1.0,
                 max_backoff_seconds: float = 60.0, max_retry_after_seconds: float = 600.0,
                 headers: dict | None = None, max_connections: int = 1,
                 min_interval: Callable[[str], float] | None = None, on_wait: Callable[[float], None] | None = None,
                 retry_unreachable: bool = True):
        self.client = httpx.Client(timeout=timeout_seconds, headers=headers or {}, follow_redirects=True,
                                   limits=httpx.Limits(max_connections=max_connections,
                                                       max_keepalive_connections=max_connections))
        self.min_interval = min_interval  # seconds a host wants between our requests
        self.on_wait = on_wait
        self.max_retry_after_seconds = max_retry_after_seconds
        self.backoff = wait_exponential(multiplier=backoff_seconds, max=max_backoff_seconds)
        self.last_request = 0.0  # monotonic time of the previous request
        self.requests = 0
        self.retries = 0
        # a host that refuses connections may be restarting (retried) or not there at all (a typo: fail now)
        retried = retry_if_exception_type((Retryable, httpx.TransportError))
        if not retry_unreachable:
            retried = retried & retry_if_not_exception_type(httpx.ConnectError)
        self._send = retry(retry=retried, wait=self._wait,
                           stop=stop_after_attempt(max_retries), reraise=True,
                           before_sleep=self._count_retry)(self._send_once)

    @property
    def headers(self) -> httpx.Headers:
        return self.client.headers

    def send(self, method: str, url: str, check: Callable[[httpx.Response], T] = lambda r: r, **kwargs) -> T:
        """check(response) for the first answer that is not worth retrying, or GiveUp."""
        try:
            return self._send(method, url, check, **kwargs)
        except httpx.ConnectError as err:
            raise GiveUp(f"cannot connect to {url}: {err}") from None
        except (Retryable, httpx.TransportError) as err:
            raise GiveUp(f"giving up on {url} after {self.retries} retries: {err}") from None

    def _send_once(self, method: str, url: str, check, **kwargs):
        self._pause(url)
        self.last_request = time.monotonic()
        self.requests += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TimeoutException as err:
            raise Retryable(f"timed out ({err})") from None
        if response.status_code in (429, 503):
            raise Retryable(f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("Retry-After")))
        if response.status_code >= 500:
            raise Retryable(f"HTTP {response.status_code}")
        return check(response)

    def _pause(self, url: str) -> None:
        wait = self.last_request + (self.min_interval(url) if self.min_interval else 0.0) - time.monotonic()
        if wait > 0:
            if self.on_wait:
                self.on_wait(wait)
            time.sleep(wait)

    def _wait(self, state: RetryCallState) -> float:
        """Retry-After when the server gave one, else exponential backoff."""
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Retryable) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after_seconds)
        return self.backoff(state)

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    def close(self) -> None:
        self.client.close()
