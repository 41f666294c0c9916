"""Which Bytewax worker owns which input partition and which key, asked of Bytewax itself.

    PROBE_PARTS=raw:4 PROBE_KEYS=binance:BTC.USDT,... python -m bytewax.run benchmarks.routing:flow -w 2

Prints ``part <name> <worker>`` and ``key <key> <worker>`` lines. The scaling benchmark uses it to pick
instruments that two workers share evenly, as a production keyspace of hundreds of instruments would (with a
handful of instruments, hashing alone can give one worker twice the other's share, and the figure would measure
that instead of the pipeline).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from collections.abc import Sequence

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from benchmarks.common import REPO

__all__ = ["balanced_keys", "kafka_partition", "probe"]


class _OnePart(StatefulSourcePartition[tuple[str, str], None]):
    def __init__(self, name: str, keys: list[str]) -> None:
        self.items = [("part", name)] + ([("key", key) for key in keys] if name.startswith("0-") else [])
        self.done = False

    def next_batch(self) -> list[tuple[str, str]]:
        if self.done:
            raise StopIteration
        self.done = True
        return self.items

    def snapshot(self) -> None:
        return None


class _Parts(FixedPartitionedSource[tuple[str, str], None]):
    """The partitions a Bytewax KafkaSource lists for a topic (``<index>-<topic>``), and the probe keys."""

    def __init__(self, topic: str, count: int, keys: list[str]) -> None:
        self.names = [f"{index}-{topic}" for index in range(count)]
        self.keys = keys

    def list_parts(self) -> list[str]:
        return self.names

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _OnePart:
        return _OnePart(for_part, self.keys)


def _print_owner(step_id: str, item: tuple[str, str], epoch: int, worker: int) -> None:
    os.write(1, f"{item[0]} {item[1]} {worker}\n".encode())  # one write: workers are threads sharing stdout


def _build() -> Dataflow:
    topic, _, count = os.environ.get("PROBE_PARTS", "raw:2").partition(":")
    keys = [k for k in os.environ.get("PROBE_KEYS", "").split(",") if k]
    flow = Dataflow("routing_probe")
    items = op.input("parts", flow, _Parts(topic, int(count), keys))
    parts = op.filter("parts_only", items, lambda item: item[0] == "part")
    op.inspect_debug("part_owner", parts, inspector=_print_owner)
    keyed = op.filter_map("keys_only", items, lambda item: (item[1], item[1]) if item[0] == "key" else None)
    owned = op.stateful_map("owner", keyed, lambda state, value: (state, ("key", value)))
    op.inspect_debug("key_owner", op.map("unkey", owned, lambda kv: kv[1]), inspector=_print_owner)
    return flow


def probe(topic: str, partitions: int, keys: Sequence[str], workers: int) -> tuple[dict[str, int], dict[str, int]]:
    """(partition name -> worker, key -> worker) as Bytewax assigns them with ``workers`` workers."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_PARTS": f"{topic}:{partitions}", "PROBE_KEYS": ",".join(keys)}
    argv = [sys.executable, "-m", "bytewax.run", "benchmarks.routing:flow", "-w", str(workers)]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    parts: dict[str, int] = {}
    owners: dict[str, int] = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] in ("part", "key") and fields[2].isdigit():
            (parts if fields[0] == "part" else owners)[fields[1]] = int(fields[2])
    return parts, owners


def kafka_partition(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC32 of the key) gives ``key``."""
    return zlib.crc32(key.encode()) % partitions


def balanced_keys(candidates: Sequence[str], count: int, topic: str, partitions: int, workers: int = 2) -> list[str]:
    """``count`` of ``candidates`` (in order) such that every worker owns as many keys, and reads as many of them.

    A key is owned (normalized) by the worker its hash routes it to, and read (consumed, parsed) by the worker
    owning its Kafka partition; both are balanced.
    """
    parts, owners = probe(topic, partitions, candidates, workers)
    share = count // workers
    owned = dict.fromkeys(range(workers), 0)
    read = dict.fromkeys(range(workers), 0)
    chosen: list[str] = []
    for key in candidates:
        owner = owners.get(key)
        reader = parts.get(f"{kafka_partition(key, partitions)}-{topic}")
        if owner is None or reader is None or owned[owner] >= share or read[reader] >= share:
            continue
        chosen.append(key)
        owned[owner] += 1
        read[reader] += 1
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"no balanced choice of {count} keys among {len(candidates)}: owners {owners}, parts {parts}")


def __getattr__(name: str) -> Dataflow:
    if name == "flow":
        return _build()
    raise AttributeError(name)
