"""The README's run command, end to end: every server and flow on the embedded default, then the summary.

The recordings are played without pauses (``--speed 0``) so the run is short. The summary's figures are checked
against each other and against the files on disk: every Kafka record of every standardized topic is in the
Parquet archive and in Postgres, every raw frame is in the raw archive, and nothing is left running.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from embedded.process import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
_COUNT = re.compile(r"^  (\w+)\s+([\d,]+)$")
_PARQUET = re.compile(r"^  (\w+)\s+(\d+) files\s+([\d,]+) rows$")


def _section(lines: list[str], title: str, pattern: re.Pattern[str]) -> dict[str, tuple[int, ...]]:
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    found: dict[str, tuple[int, ...]] = {}
    for line in lines[start:]:
        match = pattern.match(line)
        if match is None:
            break
        found[match[1]] = tuple(int(group.replace(",", "")) for group in match.groups()[1:])
    return found


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if text in cmdline or cwd.startswith(text):
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_the_demo_runs_every_part_and_its_summary_matches_the_archives_and_tables(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "embedded.demo", "--workdir", str(workdir), "--speed", "0", "--port", str(free_port())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    lines = result.stdout.splitlines()
    assert lines[-1] == "Stopped; nothing is left running."
    assert _processes_mentioning(str(workdir)) == []

    topics = {name: counts[0] for name, counts in _section(lines, "Records per Kafka topic:", _COUNT).items()}
    parquet = _section(lines, "Parquet archive", _PARQUET)
    tables = {name: counts[0] for name, counts in _section(lines, "Postgres tables (rows):", _COUNT).items()}
    assert "all recorded input sent; waiting for the pipeline to drain ..." in result.stdout
    # The last progress line: what each flow's own counters (its /metrics) said once everything was processed.
    last_flows = [line for line in lines if line.startswith("        per flow: ")][-1]
    per_flow = {name: int(count.replace(",", "")) for name, count in re.findall(r"(\w+) ([\d,]+)", last_flows)}

    # Every venue's simulator was collected and normalized; the recorded Ethereum blocks were decoded.
    assert topics["trades"] > 1000 and topics["lob"] > 10_000 and topics["ticker"] > 500
    assert topics["ethereum_blocks"] == 2 and topics["token_transfers"] > 100 and topics["dex_swaps"] > 10
    assert "Dead letters: none" in lines
    assert per_flow["collect_cex"] == per_flow["normalize_cex"] == per_flow["archive_raw"] == topics["raw"]
    # The Parquet archive holds exactly the Kafka records of every standardized topic.
    assert {topic: rows for topic, (_, rows) in parquet.items()} == {
        topic: count for topic, count in topics.items() if count and topic != "raw"
    }
    # Postgres: one row per record where each record has its own key (trades by trade id, books by offset).
    for topic in ("trades", "lob", "ticker", "ethereum_blocks", "token_transfers", "dex_swaps"):
        assert tables[topic] == topics[topic], topic
    # The raw archive: every raw frame once, as zstd JSON Lines; no temporary file left behind.
    raw_lines = 0
    for path in (workdir / "archive" / "raw").rglob("*"):
        assert not path.name.endswith(".tmp"), path
        if path.is_file():
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes()), read_across_frames=True)
            raw_lines += reader.read().count(b"\n")
    assert raw_lines == topics["raw"]
