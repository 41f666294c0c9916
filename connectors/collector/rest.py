"""REST GETs with retries: instrument lists at start, book snapshots while running.

Rate limits and server errors (418, 429, 5xx) and transport errors are retried with backoff, honouring
``Retry-After``; any other error status is final (the request itself is wrong).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx2

from connectors.collector.backoff import Backoff

__all__ = ["RestError", "get_text", "now_us"]

LOG = logging.getLogger(__name__)
RETRIED_STATUSES = frozenset((418, 429, 500, 502, 503, 504))


class RestError(RuntimeError):
    """A REST request that did not succeed, with the last status or error."""


def now_us() -> int:
    """Receipt time: UTC microseconds."""
    return time.time_ns() // 1000


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else None


async def get_text(client: httpx2.AsyncClient, url: str, backoff: Backoff, attempts: int | None) -> str:
    """The body of a successful GET of ``url``.

    Raises RestError on a final status, or after ``attempts`` failures (None: retry until cancelled).
    """
    last = ""
    attempt = 0
    while attempts is None or attempt < attempts:
        attempt += 1
        wait: float | None = None
        try:
            response = await client.get(url)
        except httpx2.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return response.text
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRIED_STATUSES:
                raise RestError(f"GET {url}: {last}")
            wait = _retry_after(response)
        if attempts is None or attempt < attempts:
            delay = wait if wait is not None else backoff.next_delay()
            LOG.warning("GET %s failed (%s); retrying in %.1fs", url, last, delay)
            await asyncio.sleep(delay)
    raise RestError(f"GET {url} failed {attempts} times; last: {last}")
