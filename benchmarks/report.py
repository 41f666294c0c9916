"""The runner's output: one record per figure (JSON) or a table, each with the machine it was measured on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from benchmarks.common import Result

__all__ = ["FIELDS", "records", "table", "to_json"]

#: Keys of every figure record, in order.
FIELDS = (
    "figure",
    "name",
    "value",
    "unit",
    "baseline",
    "baseline_name",
    "ratio",
    "target",
    "met",
    "note",
    "skipped",
    "seconds",
    "machine",
)


def records(results: Sequence[tuple[str, Result, float]], machine: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON-ready object per figure: ``(figure name, result, seconds its group took)`` -> record."""
    out = []
    for figure, result, seconds in results:
        record = {"figure": figure, **result.as_dict(), "seconds": round(seconds, 1), "machine": machine}
        out.append({key: record.get(key) for key in FIELDS})
    return out


def to_json(rows: list[dict[str, Any]]) -> str:
    """A JSON array of figure objects (each carries its machine)."""
    return json.dumps(rows, indent=2)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if size >= 0.1 else f"{value:.3g}"


def _verdict(row: dict[str, Any]) -> str:
    if row["skipped"]:
        return "skipped"
    return {True: "yes", False: "NO", None: "-"}[row["met"]]


def _grid(header: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(cells) for cells in body)]


def table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    """The figures as a text table, then what each baseline is and what else each run showed."""
    header = ["#", "figure", "name", "value", "unit", "baseline", "ratio", "target", "met"]
    body = []
    for number, row in enumerate(rows, 1):
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        body.append(
            [
                str(number),
                row["figure"],
                row["name"],
                _number(row["value"]),
                row["unit"],
                _number(row["baseline"]),
                ratio,
                row["target"] or "-",
                _verdict(row),
            ]
        )
    lines = [
        f"machine: {machine['cores']} cores ({machine['cpus']} CPUs, {machine['cpu_model']}), "
        f"Python {machine['python']}, {machine['platform']}",
        "",
        *_grid(header, body, right={0, 3, 5, 6}),
        "",
    ]
    for number, row in enumerate(rows, 1):
        if row["skipped"]:
            lines.append(f"{number}. skipped: {row['skipped']}")
            continue
        lines.append(f"{number}. baseline: {row['baseline_name']}" if row["baseline_name"] else f"{number}.")
        if row["note"]:
            lines.append(f"   {row['note']}")
    return "\n".join(lines)
