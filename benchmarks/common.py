"""What every benchmark shares: timing, the machine description, and one figure's shape."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["DATA", "Figure", "best_rate", "machine"]

DATA = Path(__file__).resolve().parents[1] / "data"


@dataclass(frozen=True)
class Figure:
    """One measured figure next to its baseline measured in the same run."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def best_rate(work: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs (the least disturbed by a noisy machine)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        items = work()
        elapsed = time.perf_counter() - start
        best = max(best, items / elapsed)
    return best


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
    }
