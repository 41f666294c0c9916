"""Replicas: each reads every partition, so clients on any of them get everything, and scaling loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from embedded.kafka import TansuBroker
from tests.integration.test_broadcaster import (
    Broadcaster,
    Client,
    books_of,
    create_topics,
    expected,
    produce,
    real_records,
    received,
    replayed,
    same_books,
    settle,
)

pytestmark = pytest.mark.integration


def test_clients_on_two_replicas_get_everything_while_a_replica_comes_and_goes(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    create_topics(kafka.bootstrap)
    outs = [out for out in real_records("COINBASE", "OKX", "BYBIT") if out[1] in ("trades", "lob")]
    first, second, third = outs[: len(outs) // 3], outs[len(outs) // 3 : 2 * len(outs) // 3], outs[2 * len(outs) // 3 :]

    async def subscribed(broadcaster: Broadcaster) -> Client:
        client = await Client.connect(broadcaster.ws_url)
        await client.subscribe("trades", "*", "*")
        await client.subscribe("lob", "*", "*")
        await client.request("ping")  # read the lob snapshots
        return client

    async def run(stable: Broadcaster) -> None:
        on_stable = await subscribed(stable)
        await asyncio.to_thread(produce, kafka.bootstrap, first)
        await settle(stable, len(first), on_stable)

        # Scale up: a second replica (its own consumer group) joins while the first keeps serving.
        joining = Broadcaster(kafka.bootstrap, tmp_path, broadcaster_consumer_mode="unique_group")
        await asyncio.to_thread(joining.start)
        try:
            on_joining = await subscribed(joining)
            await asyncio.to_thread(produce, kafka.bootstrap, second)
            await settle(stable, len(first) + len(second), on_stable)
            await on_joining.read_until(lambda c: len(c.data()) >= len(second))
            await settle(joining, 0, on_joining)
        finally:
            # Scale down: the replica leaves; its client is told to reconnect (1012, service restart).
            await asyncio.to_thread(joining.stop)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await on_joining.next_frame()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012

        await asyncio.to_thread(produce, kafka.bootstrap, third)
        await settle(stable, len(outs), on_stable)

        assert received(on_stable) == expected(outs, lambda topic, key: True)
        assert received(on_joining) == expected(second, lambda topic, key: True)
        # The joining replica's books, from its lookback, were complete for its client.
        same_books(books_of(on_joining), replayed(first + second))
        same_books(books_of(on_stable), replayed(outs))
        await on_stable.close()

    with Broadcaster(kafka.bootstrap, tmp_path) as stable:
        asyncio.run(run(stable))
