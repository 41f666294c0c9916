"""Errors the local JSON-RPC server can be told to produce, the way real nodes and providers fail.

* ``rate_limit``: HTTP 200 with JSON-RPC error ``-32005`` ("limit exceeded") for every request of the body, as
  Infura and most providers answer when a rate limit is hit.
* ``http_429``: HTTP 429 Too Many Requests with ``Retry-After`` (seconds).
* ``http_503``: HTTP 503 Service Unavailable, as a load balancer with no healthy node answers.
* ``timeout``: the answer comes only after ``delay_s`` seconds, longer than a client waits.

A fault applies to the next ``count`` HTTP requests whose body calls ``method`` (any request when unset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Fault", "FaultKind", "FaultQueue"]

FaultKind = Literal["rate_limit", "http_429", "http_503", "timeout"]


@dataclass(slots=True)
class Fault:
    """One armed fault; ``count`` is how many more requests it hits."""

    kind: FaultKind
    count: int = 1
    method: str | None = None
    delay_s: float = 30.0
    retry_after_s: int = 0


class FaultQueue:
    """Armed faults, first armed first served, and how many requests each kind has hit."""

    def __init__(self) -> None:
        self._armed: list[Fault] = []
        self.served: dict[str, int] = {}

    def arm(self, fault: Fault) -> None:
        if fault.count < 1:
            raise ValueError("a fault needs count >= 1")
        self._armed.append(fault)

    def clear(self) -> None:
        self._armed.clear()

    def take(self, methods: Sequence[str]) -> Fault | None:
        """The fault that hits a request calling ``methods``, if any (its count goes down by one)."""
        for fault in self._armed:
            if fault.method is None or fault.method in methods:
                fault.count -= 1
                if fault.count == 0:
                    self._armed.remove(fault)
                self.served[fault.kind] = self.served.get(fault.kind, 0) + 1
                return fault
        return None
