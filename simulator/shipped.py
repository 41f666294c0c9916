"""The captures shipped in ``data/cex/cryptofeed`` and the collector configuration that subscribes each.

The instruments and channels are read off each capture's ``connect`` URLs and ``send`` frames (see
``data/README.md``), in the collector's configuration terms (normalized symbols where the venue's instrument
list names them, venue symbols elsewhere, in the order the recording subscribed them), so a collector pointed
at a simulator of the capture is served the whole recording.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CAPTURES", "SHIPPED", "ShippedCapture", "collector_config"]

CAPTURES = Path(__file__).resolve().parents[1] / "data" / "cex" / "cryptofeed"


@dataclass(frozen=True)
class ShippedCapture:
    """A shipped cryptofeed capture and the collector configuration that subscribes what it recorded."""

    capture: str
    instruments: tuple[str, ...]
    channels: tuple[str, ...]

    @property
    def path(self) -> Path:
        return CAPTURES / f"{self.capture}.jsonl.zst"

    def section(self, endpoint: str | None = None) -> dict[str, Any]:
        section: dict[str, Any] = {"instruments": list(self.instruments), "channels": list(self.channels)}
        if endpoint is not None:
            section["endpoint"] = endpoint
        return section


SHIPPED: dict[str, ShippedCapture] = {
    "binance": ShippedCapture(
        "BINANCE", ("NKN.USDT", "BLZ.ETH", "LRC.BTC", "RUNE.EUR"), ("depth@100ms", "bookTicker", "kline_1m", "aggTrade")
    ),
    "binance_futures": ShippedCapture(
        "BINANCE_FUTURES",
        ("SUSHI.USDT-PERP", "AKRO.USDT-PERP", "KEEPUSDT", "CTK.USDT-PERP"),
        ("aggTrade", "depth@100ms", "kline_1m", "bookTicker"),
    ),
    "coinbase": ShippedCapture(
        "COINBASE", ("BTC.USD", "ETH-USD"), ("market_trades", "candles", "ticker", "level2", "heartbeats")
    ),
    "bybit": ShippedCapture(
        "BYBIT",
        ("BTC.USDT-PERP", "ETH.USDT-PERP", "SOL.USDT-PERP", "DOGE.USDT-PERP", "BTC.USDT", "ETH.USDT"),
        ("tickers", "orderbook.200", "publicTrade", "kline.1", "allLiquidation"),
    ),
    "okx": ShippedCapture("OKX", ("BTC.USD-20220527", "UNI-USD-SWAP", "BTC.USDT"), ("tickers", "trades", "books")),
    "kraken": ShippedCapture(
        "KRAKEN",
        (
            "WAVES.EUR",
            "XMR.USD",
            "KSM.BTC",
            "GRT.ETH",
            "SC.EUR",
            "ETH.CHF",
            "OCEAN.BTC",
            "OMG.USD",
            "XBT/CHF",
            "ADA.BTC",
        ),
        ("book-1000", "trade", "ticker"),
    ),
    "kraken_futures": ShippedCapture(
        "KRAKEN_FUTURES",
        (
            "ETH.USD-20211231",
            "PI_XRPUSD",
            "PI_LTCUSD",
            "BCH.USD-20210730",
            "PI_ETHUSD",
            "BTC.USD-20210924",
            "ETH.USD-20210730",
            "BCH.USD-20210924",
            "XRP.USD-20210924",
            "BTC.USD-20210730",
        ),
        ("book", "trade", "ticker_lite"),
    ),
    "bitfinex": ShippedCapture(
        "BITFINEX",
        ("BFT.USD", "IOT.ETH", "tDOGUSD", "MNA.BTC", "ODE.USD", "tTESTBTC:TESTUSD", "SNG.USD"),
        ("ticker", "book-P0-F0-100", "trades"),
    ),
    "deribit": ShippedCapture(
        "DERIBIT",
        (
            "BTC.USD-20210924-8000-P",
            "BTC-30JUL21-24000-P",
            "ETH.USD-20210730-2800-C",
            "BTC.USD-20211231-34000-P",
            "BTC.USD-20210924-34000-P",
            "BTC.USD-20220624-15000-C",
            "BTC.USD-20211231-300000-C",
            "ETH.USD-20210827-4000-P",
            "BTC.USD-20220325-30000-C",
            "ETH.USD-20210723-2300-C",
        ),
        ("book.raw", "trades.raw", "ticker.raw"),
    ),
    "gemini": ShippedCapture(
        "GEMINI",
        (
            "SOL.USDC-PERP",
            "BTC.USDC-PERP",
            "BTC.USDT",
            "SOL.USD",
            "ETHUSDT",
            "BTC.GBP",
            "ETH.USDC-PERP",
            "ETH.USD",
            "BTC.EUR",
            "BTCUSD",
        ),
        ("l2",),
    ),
}


def collector_config(endpoints: Mapping[str, str]) -> dict[str, Any]:
    """A collector configuration (the JSON form) collecting each venue in ``endpoints`` from its simulator."""
    return {"venues": {venue: SHIPPED[venue].section(url) for venue, url in endpoints.items()}}
