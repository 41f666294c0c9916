"""Broadcaster building blocks on real standardized records: protocol, routing, queues, books, access rules."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from broadcaster.access import RequestRateLimiter, api_key_valid, offered_api_key, origin_allowed
from broadcaster.books import BookKeeper
from broadcaster.feed import KafkaFeed
from broadcaster.frames import record_frame
from broadcaster.hub import Hub, RecordItem
from broadcaster.metrics import BroadcasterMetrics
from broadcaster.outbox import ACCEPTED, CONFLATED, REFUSED, Outbox
from broadcaster.protocol import ErrorCode, Pattern, ProtocolError, Subscribe, Unsubscribe, parse_request
from broadcaster.settings import BroadcasterSettings, load_settings
from broadcaster.subscriptions import SubscriptionIndex
from connectors.config import ConfigError, Settings
from schemas import CEX_TOPICS
from tests.support import ReplayedBook, capture, drop_nth, envelopes, normalize

CHANNELS = set(CEX_TOPICS)


def _records(venue: str) -> list[tuple[str, str, dict[str, Any]]]:
    return normalize(envelopes(capture(venue)))


def _items(outs: list[tuple[str, str, dict[str, Any]]]) -> list[RecordItem]:
    """Records as the Kafka feed hands them over (offsets numbered per topic)."""
    offsets: dict[str, int] = {}
    items = []
    for key, topic, record in outs:
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        frame = record_frame("data", topic, key, 0, offset, None, record)
        items.append(RecordItem(topic, key, 0, offset, frame, record if topic == "lob" else None))
    return items


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("{nope", ErrorCode.MALFORMED_JSON, None),
        ("[1]", ErrorCode.MALFORMED_JSON, None),
        ('{"op": "list"}', ErrorCode.INVALID_REQUEST, None),
        ('{"id": 1.5, "op": "list"}', ErrorCode.INVALID_REQUEST, None),
        ('{"id": true, "op": "list"}', ErrorCode.INVALID_REQUEST, None),
        ('{"id": 3, "op": "jump"}', ErrorCode.INVALID_REQUEST, 3),
        ('{"id": "a", "op": "list", "more": 1}', ErrorCode.INVALID_REQUEST, "a"),
        ('{"id": 4, "op": "subscribe", "channel": "trades", "exchange": "binance"}', ErrorCode.INVALID_REQUEST, 4),
        ('{"id": 5, "op": "subscribe", "channel": "trades", "exchange": "a b", "symbol": "*"}', "invalid_request", 5),
        ('{"id": 6, "op": "subscribe", "channel": 1, "exchange": "a", "symbol": "*"}', ErrorCode.INVALID_REQUEST, 6),
        ('{"id": 7, "op": "subscribe", "channel": "books", "exchange": "a", "symbol": "*"}', "unknown_channel", 7),
    ],
)
def test_bad_requests_get_the_documented_code_and_their_id(frame: str, code: str, request_id: Any) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_request(frame, CHANNELS)
    assert (raised.value.code, raised.value.request_id) == (code, request_id)
    assert raised.value.message


def test_good_requests_parse_to_messages() -> None:
    request = parse_request(
        '{"id": 9, "op": "subscribe", "channel": "lob", "exchange": "*", "symbol": "BTC.USD"}', CHANNELS
    )
    assert isinstance(request, Subscribe) and request.pattern == Pattern("lob", "*", "BTC.USD")
    request = parse_request(
        '{"id": "u", "op": "unsubscribe", "channel": "lob", "exchange": "okx", "symbol": "*"}', CHANNELS
    )
    assert isinstance(request, Unsubscribe) and request.id == "u"


def test_routes_union_wildcards_without_duplicates_and_follow_changes() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(Pattern("trades", "okx", "BTC.USDT"), "exact")
    index.add(Pattern("trades", "okx", "*"), "venue")
    index.add(Pattern("trades", "*", "BTC.USDT"), "symbol")
    index.add(Pattern("trades", "*", "*"), "all")
    index.add(Pattern("trades", "okx", "*"), "all")  # overlaps its channel-wide subscription
    assert sorted(index.targets("trades", "okx:BTC.USDT")) == ["all", "exact", "symbol", "venue"]
    assert sorted(index.targets("trades", "bybit:BTC.USDT")) == ["all", "symbol"]
    assert sorted(index.targets("trades", "okx:ETH.USDT")) == ["all", "venue"]
    assert index.targets("lob", "okx:BTC.USDT") == ()
    index.remove(Pattern("trades", "*", "*"), "all")
    assert sorted(index.targets("trades", "bybit:BTC.USDT")) == ["symbol"]
    assert sorted(index.targets("trades", "okx:ETH.USDT")) == ["all", "venue"]


def test_disconnect_policy_refuses_once_the_queue_is_full() -> None:
    outbox = Outbox(capacity=3, conflate=False)
    assert [outbox.offer(f"f{i}", ("ticker", "k")) for i in range(4)] == [ACCEPTED] * 3 + [REFUSED]
    assert outbox.take(1_000) == (["f0", "f1", "f2"], [])


def test_conflate_policy_keeps_the_latest_state_per_key_and_refuses_when_trades_fill_the_queue() -> None:
    outbox = Outbox(capacity=4, conflate=True)
    for frame, key in (("t1", None), ("a1", ("ticker", "a")), ("b1", ("lob", "b")), ("a2", ("ticker", "a"))):
        assert outbox.offer(frame, key) is ACCEPTED
    assert outbox.offer("a3", ("ticker", "a")) is CONFLATED
    assert outbox.offer("a4", ("ticker", "a")) is ACCEPTED  # pending: the latest state goes out later
    assert outbox.take(1_000) == (["t1"], [("ticker", "a"), ("lob", "b")])
    for i in range(4):
        assert outbox.offer(f"t{i + 2}", None) is ACCEPTED
    assert outbox.offer("t6", None) is REFUSED


def test_a_book_snapshot_at_any_point_plus_the_rest_equals_the_whole_stream() -> None:
    outs = normalize(
        drop_nth(envelopes(capture("BINANCE")), lambda e: e.channel == "depth@100ms" and "NKN" in e.key, 40)
    ) + _records("KRAKEN")
    lob = [(key, record) for key, topic, record in outs if topic == "lob"]
    assert any(record["action"] == "resync" for _, record in lob)
    final: dict[str, ReplayedBook] = {}
    for key, record in lob:
        final.setdefault(key, ReplayedBook()).apply(record)
    for cut in range(0, len(lob), 97):
        keeper = BookKeeper()
        for offset, (key, record) in enumerate(lob[:cut]):
            keeper.apply(key, record, 0, offset)
        rebuilt: dict[str, ReplayedBook] = {}
        for key in keeper.instruments():
            found = keeper.snapshot(key)
            assert found is not None
            rebuilt.setdefault(key, ReplayedBook()).apply(found[1])
        for key, record in lob[cut:]:
            book = rebuilt.setdefault(key, ReplayedBook())
            if record["action"] != "update" or book.valid:
                book.apply(record)
        for key, book in final.items():
            assert (book.valid, book.bids, book.asks) == (rebuilt[key].valid, rebuilt[key].bids, rebuilt[key].asks)


def test_the_hub_sends_ack_snapshot_then_records_and_stops_after_unsubscribe() -> None:
    items = _items(_records("OKX"))
    hub = Hub(CEX_TOPICS, max_subscriptions=2, metrics=BroadcasterMetrics())
    client = hub.connect(Outbox(capacity=10_000, conflate=False))
    cut = len(items) // 2
    hub.dispatch(items[:cut])
    hub.subscribe(client, Subscribe(id=1, op="subscribe", channel="lob", exchange="okx", symbol="BTC.USDT"))
    hub.dispatch(items[cut:])
    frames = [orjson.loads(frame) for frame in client.outbox.take(10**9)[0]]
    assert frames[0] == {
        "type": "ack",
        "id": 1,
        "op": "subscribe",
        "subscription": Pattern("lob", "okx", "BTC.USDT").as_dict(),
    }
    assert frames[1]["type"] == "snapshot" and frames[1]["data"]["action"] == "snapshot"
    expected = [item.record for item in items[cut:] if item.channel == "lob" and item.key == "okx:BTC.USDT"]
    assert [frame["data"] for frame in frames[2:]] == expected
    assert frames[2]["prev"] is None or frames[2]["offset"] > frames[1]["offset"]
    hub.unsubscribe(client, Unsubscribe(id=2, op="unsubscribe", channel="lob", exchange="okx", symbol="BTC.USDT"))
    hub.dispatch(items)
    assert [orjson.loads(frame)["type"] for frame in client.outbox.take(10**9)[0]] == ["ack"]
    for symbol in ("A", "B"):
        hub.subscribe(client, Subscribe(id=symbol, op="subscribe", channel="trades", exchange="okx", symbol=symbol))
    with pytest.raises(ProtocolError) as raised:
        hub.subscribe(client, Subscribe(id=3, op="subscribe", channel="trades", exchange="okx", symbol="C"))
    assert raised.value.code == ErrorCode.SUBSCRIPTION_LIMIT


def test_api_keys_origins_and_the_request_rate() -> None:
    keys = frozenset({"k1", "k2"})
    assert api_key_valid(offered_api_key({"api_key": "k2"}, {}), keys)
    assert api_key_valid(offered_api_key({}, {"authorization": "Bearer k1"}), keys)
    assert api_key_valid(offered_api_key({}, {"x-api-key": "k1"}), keys)
    assert not api_key_valid(offered_api_key({}, {"authorization": "Basic k1"}), keys)
    assert not api_key_valid(None, keys)
    assert api_key_valid(None, frozenset())
    assert origin_allowed(None, "h:1", frozenset())
    assert origin_allowed("http://h:1", "h:1", frozenset())
    assert not origin_allowed("http://evil", "h:1", frozenset())
    assert origin_allowed("https://app.example/", "h:1", frozenset({"https://app.example"}))
    assert origin_allowed("http://evil", "h:1", frozenset({"*"}))
    now = [0.0]
    limiter = RequestRateLimiter(2, clock=lambda: now[0])
    assert [limiter.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert [limiter.allow() for _ in range(2)] == [True, False]


def test_settings_are_validated_with_clear_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BroadcasterSettings().topics[:2] == ["trades", "lob"]
    monkeypatch.setenv("BROADCASTER_QUEUE_LENGTH", "10")
    monkeypatch.setenv("BROADCASTER_ALLOWED_ORIGINS", "ftp://x")
    with pytest.raises(ConfigError, match="BROADCASTER_ALLOWED_ORIGINS"):
        load_settings()
    monkeypatch.delenv("BROADCASTER_ALLOWED_ORIGINS")
    with pytest.raises(ConfigError, match="must be at least BROADCASTER_BATCH_SIZE"):
        load_settings()


@pytest.mark.parametrize("wait_ms", [10, 250])
def test_the_feed_consumer_holds_fetches_no_longer_than_kafka_fetch_wait_max_ms(wait_ms: int) -> None:
    kafka = Settings(kafka_brokers="127.0.0.1:9", kafka_fetch_wait_max_ms=wait_ms)
    feed = KafkaFeed(kafka, BroadcasterSettings(), BroadcasterMetrics(), lambda items: None, "replica-1")
    assert feed._config()["fetch.wait.max.ms"] == wait_ms
