"""Exponential backoff with jitter, for reconnects and REST retries."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that grow exponentially from ``min_s`` to ``max_s``, jittered so clients do not reconnect in step.

    The n-th delay (from 0) is drawn uniformly from ``[min_s, min(max_s, min_s * 2 ** (n + 1))]``: never shorter
    than ``min_s``, never longer than ``max_s``. `reset` starts over once a connection proved healthy.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min ({min_s}) <= max ({max_s})")
        self.min_s = min_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failed attempt."""
        ceiling = min(self.max_s, self.min_s * 2.0 ** min(self.attempt + 1, 62))
        self.attempt += 1
        return self._rng.uniform(self.min_s, ceiling)

    def reset(self) -> None:
        self.attempt = 0
