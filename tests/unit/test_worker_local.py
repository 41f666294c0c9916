"""Per-worker objects survive the worker's whole run, with several workers in one process."""

from __future__ import annotations

import itertools
import threading

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from connectors.input_aligned import SharedPerWorker
from connectors.worker_local import WorkerLocal


def test_each_worker_keeps_one_object_for_its_whole_run() -> None:
    made = itertools.count()
    local = WorkerLocal(lambda: next(made))
    seen: list[tuple[int, int]] = []
    flow = Dataflow("worker_local")
    numbers = op.input("in", flow, TestingSource(range(20_000), batch_size=10))
    # Routing by key spreads the items over both workers; each item hops threads, and the GIL is let go between.
    keyed = op.key_on("by_number", numbers, str)
    owned = op.stateful_map("own", keyed, lambda state, item: (None, (threading.get_ident(), local.get())))
    op.output("out", op.map("unkey", owned, lambda kv: kv[1]), TestingSink(seen))

    cluster_main(flow, [], 0, worker_count_per_proc=2)

    assert len(seen) == 20_000
    by_thread: dict[int, set[int]] = {}
    for thread, value in seen:
        by_thread.setdefault(thread, set()).add(value)
    assert len(by_thread) == 2, "both workers ran"
    assert sorted(value for values in by_thread.values() for value in values) == [0, 1]


def test_the_last_partition_to_let_go_closes_the_shared_object() -> None:
    closed: list[list[str]] = []
    shared = SharedPerWorker(list, closed.append)
    first = shared.acquire()
    assert shared.acquire() is first
    shared.release()
    assert closed == []
    shared.release()
    assert closed == [first]
    assert shared.acquire() is not first, "a new one after the last was closed"
