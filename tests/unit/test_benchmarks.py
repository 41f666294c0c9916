"""The benchmark runner's output format (``python -m benchmarks``). Nothing here judges a timing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import NAMES, main
from benchmarks.common import Figure, Result, Skipped
from benchmarks.report import FIELDS, records, table, to_json

REPO = Path(__file__).resolve().parents[2]
MACHINE_KEYS = {"cores", "cpus", "cpu_model", "python", "platform"}


def _check_record(row: dict[str, Any]) -> None:
    assert list(row) == list(FIELDS)
    assert set(row["machine"]) >= MACHINE_KEYS
    if row["skipped"]:
        assert row["value"] is None and row["ratio"] is None
        return
    assert row["value"] > 0 and row["baseline"] > 0
    assert math.isclose(row["ratio"], row["value"] / row["baseline"], rel_tol=1e-9)


def test_records_carry_ratio_target_verdict_and_machine() -> None:
    machine = {"cores": 2, "cpus": 2, "cpu_model": "cpu", "python": "3.11", "platform": "linux"}
    results: list[tuple[str, Result, float]] = [
        ("normalize", Figure("rate", 150.0, "frames/s", 1000.0, "decode", "ratio >= 0.15", "note"), 1.0),
        ("e2e", Figure("p99", 120.0, "ms", 40.0, "raw p99", "value < 100"), 2.0),
        ("memory", Figure("rss", 81.0, "MB", 80.0, "warm-up", "ratio <= 1.05"), 3.0),
        ("cryptofeed", Skipped("vs cryptofeed", "cryptofeed is not installed"), 0.0),
    ]
    rows = json.loads(to_json(records(results, machine)))
    assert [row["figure"] for row in rows] == ["normalize", "e2e", "memory", "cryptofeed"]
    for row in rows:
        _check_record(row)
        assert row["machine"] == machine
    assert [row["met"] for row in rows] == [True, False, True, None]
    assert rows[3]["skipped"] == "cryptofeed is not installed"
    text = table(rows, machine)
    assert "2 cores" in text and "cpu" in text and "3.11" in text
    assert "0.150" in text and "ratio >= 0.15" in text and "skipped: cryptofeed is not installed" in text


def test_unknown_figure_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "nonsense"])
    assert "known: " + ", ".join(NAMES) in capsys.readouterr().err


def test_quick_json_run_of_a_cheap_figure_prints_one_object_per_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "normalize", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and len(rows) == 1
    (row,) = rows
    _check_record(row)
    assert row["figure"] == "normalize" and row["unit"] == "frames/s" and row["target"] == "ratio >= 0.15"
    assert row["skipped"] is None and row["met"] in (True, False)
