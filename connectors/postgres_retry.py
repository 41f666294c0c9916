"""Waiting out a database that went away: exponential backoff, one log line per outage, a gauge while waiting.

Only errors `connectors.postgres_writer.failure_kind` calls transient are waited out (lost connections, a
server shutting down or starting up, deadlocks, full disks); anything else propagates at once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import Gauge

from connectors.postgres_writer import failure_kind

__all__ = ["WAITING", "Backoff", "retry_transient"]

T = TypeVar("T")
log = logging.getLogger(__name__)

WAITING = Gauge("marketpipe_postgres_waiting", "1 while the Postgres loader waits for its database.", ["flow"])


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits of ``minimum`` seconds, doubling up to ``maximum``; each with jitter so that workers spread out."""

    minimum: float
    maximum: float

    def wait(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): between half and all of the nominal wait."""
        nominal = min(self.maximum, self.minimum * 2 ** min(attempt, 32))
        return nominal / 2 + random.uniform(0, nominal / 2)


def retry_transient(
    action: Callable[[], T],
    backoff: Backoff,
    holding: str,
    flow: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action`` until it succeeds, waiting out transient database errors.

    ``holding`` says what waits (e.g. "1000 rows for table trades"); it appears in the one warning logged when
    the database first fails, and the recovery is logged once when it comes back.
    """
    attempt = 0
    started = 0.0
    while True:
        try:
            result = action()
        except Exception as exc:
            if failure_kind(exc) != "transient":
                raise
            if attempt == 0:
                started = time.monotonic()
                WAITING.labels(flow).set(1)
                log.warning(
                    "PostgreSQL unavailable (%s: %s); holding %s and retrying with backoff %.1f-%.0f s",
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0] if str(exc).strip() else "no message",
                    holding,
                    backoff.minimum,
                    backoff.maximum,
                )
            sleep(backoff.wait(attempt))
            attempt += 1
            continue
        if attempt:
            WAITING.labels(flow).set(0)
            log.warning(
                "PostgreSQL available again after %.1f s and %d retries; %s landed",
                time.monotonic() - started,
                attempt,
                holding,
            )
        return result
