"""Collector configuration: files, environment, defaults, and clear errors for everything that cannot work."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.collector.config import CollectorConfigError, live_specs, load_selections, with_origin
from connectors.collector.settings import load_collector_settings
from connectors.config import ConfigError
from operators.venues import VENUES

ALL_VENUES = {
    "binance",
    "binance_us",
    "binance_futures",
    "binance_delivery",
    "coinbase",
    "bybit",
    "okx",
    "kraken",
    "kraken_futures",
    "bitfinex",
    "deribit",
    "gemini",
}


def _selections_from(tmp_path: Path, text: str, suffix: str = ".toml", **settings: str) -> list:
    path = tmp_path / f"collector{suffix}"
    path.write_text(text)
    return load_selections(load_collector_settings(collector_config=str(path), **settings))


def test_every_venue_the_normalizers_support_can_be_collected() -> None:
    assert set(live_specs()) == set(VENUES) == ALL_VENUES


def test_without_a_file_every_venue_is_collected_with_its_defaults() -> None:
    selections = load_selections(load_collector_settings(collector_config=None, collector_venues=None))
    assert {s.name for s in selections} == ALL_VENUES
    for selection in selections:
        assert selection.instruments and selection.channels
        assert all(selection.spec.accepts_channel(c) for c in selection.channels), selection.name
        assert selection.spec.ws_url.startswith("wss://") and selection.spec.rest_url.startswith("https://")


def test_a_venue_list_selects_venues_with_their_defaults() -> None:
    selections = load_selections(load_collector_settings(collector_venues="okx, kraken"))
    assert [s.name for s in selections] == ["okx", "kraken"]
    assert selections[0].instruments == live_specs()["okx"].default_instruments


def test_a_toml_file_names_instruments_channels_and_endpoints(tmp_path: Path) -> None:
    text = """
[venues.binance]
instruments = ["BTC.USDT", "ETHUSDT"]
channels = ["depth@100ms", "aggTrade"]
endpoint = "http://127.0.0.1:9001"

[venues.coinbase]
"""
    binance, coinbase = _selections_from(tmp_path, text)
    assert binance.instruments == ("BTC.USDT", "ETHUSDT") and binance.channels == ("depth@100ms", "aggTrade")
    assert binance.spec.ws_url == "ws://127.0.0.1:9001/stream"
    assert binance.spec.rest_url == "http://127.0.0.1:9001"
    assert coinbase.instruments == ("BTC.USD", "ETH.USD")
    assert coinbase.spec.ws_url == "wss://advanced-trade-ws.coinbase.com"


def test_a_json_file_and_the_environment_override_of_its_endpoint(tmp_path: Path) -> None:
    text = orjson.dumps({"venues": {"okx": {"endpoint": "http://127.0.0.1:1"}}}).decode()
    (okx,) = _selections_from(tmp_path, text, ".json", collector_endpoints="okx=https://sim.example:8443")
    assert okx.spec.ws_url == "wss://sim.example:8443/ws/v5"
    assert okx.spec.rest_url == "https://sim.example:8443"


def test_origins_swap_scheme_host_and_port_and_keep_paths() -> None:
    assert with_origin("wss://stream.bybit.com/v5/public", "http://127.0.0.1:5", True) == "ws://127.0.0.1:5/v5/public"
    assert with_origin("https://api.bybit.com", "ws://h:6", False) == "http://h:6"
    assert with_origin("wss://ws.kraken.com", "wss://proxy:7", True) == "wss://proxy:7"


def test_an_unknown_venue_is_named_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(CollectorConfigError, match=r"unknown venue 'binanse'; known: binance, binance_delivery"):
        _selections_from(tmp_path, "[venues.binanse]\n")


def test_an_unknown_channel_is_named_with_the_venue_channels(tmp_path: Path) -> None:
    with pytest.raises(CollectorConfigError) as err:
        _selections_from(tmp_path, '[venues.kraken]\nchannels = ["book-1000", "trades", "book-7"]\n')
    message = str(err.value)
    assert "kraken: unknown channel 'trades'" in message and "kraken: unknown channel 'book-7'" in message
    assert "kraken channels: trade, ticker, spread" in message
    assert str(tmp_path / "collector.toml") in message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:9001",
        "127.0.0.1:9001",
        "http://",
        "http://127.0.0.1:99999",
        "http://h:1/stream",
        "http://h?x=1",
    ],
)
def test_a_bad_endpoint_url_is_rejected_in_the_file(tmp_path: Path, url: str) -> None:
    with pytest.raises(CollectorConfigError, match=r"venues\.okx\.endpoint: endpoint .* is not a URL like http://host"):
        _selections_from(tmp_path, f'[venues.okx]\nendpoint = "{url}"\n')


def test_a_bad_endpoint_url_is_rejected_in_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"COLLECTOR_ENDPOINTS: .*endpoint 'ws:/nowhere' is not a URL"):
        load_collector_settings(collector_endpoints="okx=ws:/nowhere")
    with pytest.raises(ConfigError, match=r"entry 'okx' is not venue=URL"):
        load_collector_settings(collector_endpoints="okx")


def test_endpoints_of_venues_not_collected_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(CollectorConfigError, match=r"COLLECTOR_ENDPOINTS names venues that are not collected: bybit"):
        _selections_from(tmp_path, "[venues.okx]\n", collector_endpoints="bybit=http://127.0.0.1:1")


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = '[venues.okx]\ninstruments = []\nchanels = ["books"]\n[venues.gemini]\ninstruments = ["BTCUSD", "BTCUSD"]\n'
    with pytest.raises(CollectorConfigError) as err:
        _selections_from(tmp_path, text)
    message = str(err.value)
    assert "venues.okx.instruments: List should have at least 1 item" in message
    assert "venues.okx.chanels: Extra inputs are not permitted" in message
    assert "venues.gemini.instruments: instruments are listed twice: BTCUSD" in message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CollectorConfigError, match=r"cannot read collector configuration .*collector\.toml"):
        _selections_from(tmp_path, "[venues.okx\n")
    with pytest.raises(CollectorConfigError, match=r"invalid collector configuration in .*: venues: Field required"):
        _selections_from(tmp_path, "{}", ".json")


def test_settings_are_validated_with_the_variable_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"COLLECTOR_CONFIG: Value error, .*must be a \.toml or \.json file"):
        load_collector_settings(collector_config=str(tmp_path / "collector.yaml"))
    with pytest.raises(ConfigError, match=r"COLLECTOR_CONFIG: .*does not exist"):
        load_collector_settings(collector_config=str(tmp_path / "missing.toml"))
    with pytest.raises(
        ConfigError, match=r"COLLECTOR_BACKOFF_MAX_S \(1\.0\) is below COLLECTOR_BACKOFF_MIN_S \(2\.0\)"
    ):
        load_collector_settings(collector_backoff_min_s=2, collector_backoff_max_s=1)
    with pytest.raises(ConfigError, match=r"COLLECTOR_ROTATION_INTERVAL_S: Input should be greater than 0"):
        load_collector_settings(collector_rotation_interval_s=0)
