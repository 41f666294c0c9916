"""The exchange simulator as a client sees it: real HTTP and websockets, and clear refusals."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from simulator import Simulator
from tests.collector_support import RECORDED
from tests.support import raw_lines

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        return exc.code, json.loads(exc.read())


def _recorded(capture: str, conn: str, kind: str) -> list[str]:
    return [
        line["data"] for line in raw_lines(RECORDED[capture].path) if line.get("conn") == conn and line["t"] == kind
    ]


def test_rest_responses_are_the_recorded_ones_matched_by_path_and_query(tmp_path: Path) -> None:
    with Simulator(RECORDED["bybit"].path, tmp_path, speed=0) as sim:
        status, body = _get(f"{sim.url}/v5/market/instruments-info?category=spot")
        assert status == 200 and body["result"]["category"] == "spot"
        status, body = _get(f"{sim.url}/v5/market/instruments-info?category=linear&status=Trading&limit=1000")
        assert status == 200 and body["result"]["category"] == "linear"
        status, body = _get(f"{sim.url}/v5/market/instruments-info?category=inverse")
        assert status == 404 and "category=inverse is not in the bybit recording" in body["msg"]
        status, info = _get(f"{sim.url}/__simulator__")
        assert status == 200 and {c["conn"] for c in info["connections"]} == {"BYBIT.ws.2", "BYBIT.ws.3"}


def test_a_client_is_played_the_recorded_connection_its_subscriptions_cover(tmp_path: Path) -> None:
    spot = _recorded("bybit", "BYBIT.ws.3", "recv")
    with (
        Simulator(RECORDED["bybit"].path, tmp_path, speed=0) as sim,
        connect(f"ws://127.0.0.1:{sim.port}/v5/public/spot") as ws,
    ):
        # The recorded client sent seven frames; the same subscriptions batched differently are served at once.
        topics = ["tickers.BTCUSDT", "tickers.ETHUSDT", "orderbook.200.BTCUSDT", "orderbook.200.ETHUSDT"]
        topics += ["publicTrade.BTCUSDT", "publicTrade.ETHUSDT", "kline.1.BTCUSDT", "kline.1.ETHUSDT"]
        ws.send(json.dumps({"op": "subscribe", "args": topics[:5]}))
        ws.send(json.dumps({"op": "subscribe", "args": topics[5:]}))
        assert [ws.recv(timeout=10) for _ in range(len(spot))] == spot


def test_a_partial_subscription_is_played_after_the_match_timeout(tmp_path: Path) -> None:
    linear = _recorded("bybit", "BYBIT.ws.2", "recv")
    with (
        Simulator(RECORDED["bybit"].path, tmp_path, speed=0) as sim,
        connect(f"ws://127.0.0.1:{sim.port}/v5/public/linear") as ws,
    ):
        ws.send(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT"]}))
        assert [ws.recv(timeout=30) for _ in range(len(linear))] == linear


def test_connections_that_match_nothing_are_closed_with_the_reason(tmp_path: Path) -> None:
    with Simulator(RECORDED["bybit"].path, tmp_path, speed=0) as sim:
        with connect(f"ws://127.0.0.1:{sim.port}/v5/public/option") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        received = closed.value.rcvd
        assert received is not None
        assert (received.code, received.reason) == (1008, "no recorded connection at /v5/public/option")
        with connect(f"ws://127.0.0.1:{sim.port}/v5/public/spot") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.send("hello")
            ws.recv(timeout=30)
        received = closed.value.rcvd
        assert received is not None and received.reason == "the subscription matches no recorded connection"
