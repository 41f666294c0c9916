"""What every benchmark shares: timing, the machine description, and one figure's shape."""

from __future__ import annotations

import operator
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "DATA",
    "HFTBACKTEST",
    "REPO",
    "Figure",
    "Result",
    "Skipped",
    "best_rate",
    "machine",
    "percentile",
    "print_figures",
]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
#: The longest real recording shipped: Binance spot BTCUSDT, 41,249 frames over 346 s (books included).
HFTBACKTEST = DATA / "cex" / "hftbacktest" / "binance-spot-btcusdt-20240808.gz"

#: ``"<ratio|value> <op> <bound>"``, e.g. ``ratio >= 0.15`` or ``value < 50``.
_TARGET = re.compile(r"^\s*(ratio|value)\s*(>=|<=|>|<)\s*([0-9][0-9_,.]*)\s*$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Figure:
    """One measured figure next to its baseline measured in the same run."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: str = ""
    #: What else the run showed (sizes, samples, caveats), one line.
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    @property
    def met(self) -> bool | None:
        """Whether the target holds (None when there is no target, or no ratio to judge it on)."""
        match = _TARGET.match(self.target)
        if match is None:
            return None
        side, op, bound = match.groups()
        measured = self.ratio if side == "ratio" else self.value
        if measured is None:
            return None
        return _COMPARE[op](measured, float(bound.replace(",", "").replace("_", "")))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met, "skipped": None}


@dataclass(frozen=True)
class Skipped:
    """A figure that could not be measured in this run, and why (never a made-up number)."""

    name: str
    reason: str
    unit: str = ""
    baseline_name: str = ""
    target: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None,
            "unit": self.unit,
            "baseline": None,
            "baseline_name": self.baseline_name,
            "target": self.target,
            "note": "",
            "ratio": None,
            "met": None,
            "skipped": self.reason,
        }


Result = Figure | Skipped


def best_rate(work: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs (the least disturbed by a noisy machine)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        items = work()
        elapsed = time.perf_counter() - start
        best = max(best, items / elapsed)
    return best


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@cache
def machine() -> dict[str, Any]:
    """Where the figures were measured."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "cores": usable,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "system": platform.system(),
    }


def print_figures(results: list[Result], digits: int = 0) -> None:
    """The output of each script's own ``python -m benchmarks.<name>``."""
    info = machine()
    print(f"machine: {info['cores']} cores ({info['cpu_model']}), Python {info['python']}, {info['platform']}")
    for fig in results:
        if isinstance(fig, Skipped):
            print(f"{fig.name}: skipped ({fig.reason})")
            continue
        print(f"{fig.name}: {fig.value:,.{digits}f} {fig.unit}")
        if fig.baseline is not None:
            print(f"  baseline ({fig.baseline_name}): {fig.baseline:,.{digits}f} {fig.unit}")
        if fig.ratio is not None:
            print(f"  ratio: {fig.ratio:.3f}" + (f"  (target {fig.target})" if fig.target else ""))
        elif fig.target:
            print(f"  target {fig.target}")
        if fig.note:
            print(f"  {fig.note}")
