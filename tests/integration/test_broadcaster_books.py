"""Order books over the broadcaster: a client that joins late rebuilds the same book as one that saw everything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from embedded.kafka import TansuBroker
from tests.integration.test_broadcaster import (
    Broadcaster,
    Client,
    Out,
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
from tests.support import capture, drop_nth, envelopes, normalize

pytestmark = pytest.mark.integration


def _with_resync() -> list[Out]:
    """Real Binance records with one depth frame dropped: the normalizer publishes a real ``resync``."""
    envs = drop_nth(
        envelopes(capture("BINANCE")), lambda e: e.channel == "depth@100ms" and e.key == "binance:NKN.USDT", 40
    )
    outs = [(key, topic, record) for key, topic, record in normalize(envs)]
    assert any(topic == "lob" and record["action"] == "resync" for _, topic, record in outs)
    return outs + real_records("OKX", "COINBASE")


def test_a_client_subscribing_mid_stream_rebuilds_the_same_books(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    outs = _with_resync()
    lob = [out for out in outs if out[1] == "lob"]
    cut = len(lob) // 2

    async def run(broadcaster: Broadcaster) -> None:
        early = await Client.connect(broadcaster.ws_url)
        await early.subscribe("lob", "*", "*")
        await asyncio.to_thread(produce, kafka.bootstrap, lob[:cut])
        await settle(broadcaster, cut, early)
        late = await Client.connect(broadcaster.ws_url)
        await late.subscribe("lob", "*", "*")
        exact = await Client.connect(broadcaster.ws_url)
        await exact.subscribe("lob", "binance", "NKN.USDT")
        for client in (late, exact):
            await client.request("ping")  # the snapshots follow the subscribe ack
        snapshots = [f for f in late.frames if f["type"] == "snapshot"]
        assert {f["key"] for f in snapshots} == {key for key, _, _ in lob[:cut]}
        await asyncio.to_thread(produce, kafka.bootstrap, lob[cut:])
        await settle(broadcaster, len(lob), early, late, exact)

        truth = replayed(lob)
        same_books(books_of(early), truth)
        same_books(books_of(late), truth)
        same_books(books_of(exact), {"binance:NKN.USDT": truth["binance:NKN.USDT"]})
        # The resync reached the clients that were there, and the book it invalidated stays invalid.
        assert any(f["data"]["action"] == "resync" for f in early.data("lob"))
        assert not truth["binance:NKN.USDT"].valid
        # The late client's frames after its snapshots are exactly the records after the cut.
        assert received(late) == expected(lob[cut:], lambda topic, key: True)
        for client in (early, late, exact):
            await client.close()

    with Broadcaster(kafka.bootstrap, tmp_path) as broadcaster:
        asyncio.run(run(broadcaster))


def test_a_replica_started_late_builds_its_books_from_the_lookback(kafka: TansuBroker, tmp_path: Path) -> None:
    create_topics(kafka.bootstrap)
    lob = [out for out in real_records("COINBASE", "OKX", "BYBIT") if out[1] == "lob"]
    cut = len(lob) // 2
    produce(kafka.bootstrap, lob[:cut])

    async def run(broadcaster: Broadcaster) -> None:
        await asyncio.to_thread(broadcaster.wait_consumed, cut)
        client = await Client.connect(broadcaster.ws_url)
        await client.subscribe("lob", "*", "*")
        await client.request("ping")
        # Records produced before the replica started reach the client as its snapshots.
        assert not client.data()
        same_books(books_of(client), replayed(lob[:cut]))
        await asyncio.to_thread(produce, kafka.bootstrap, lob[cut:])
        await settle(broadcaster, len(lob), client)
        same_books(books_of(client), replayed(lob))
        await client.close()

    with Broadcaster(kafka.bootstrap, tmp_path, broadcaster_book_lookback_s="600") as broadcaster:
        asyncio.run(run(broadcaster))
