"""OKX v5 public websocket (``wss://ws.okx.com:8443/ws/v5/public``).

Frames ``{"arg": {"channel", "instId"}, "action"?, "data": [...]}`` are attributed by a prefix match on ``arg``;
channels subscribed by ``instType`` (``liquidation-orders``) by each data item's ``instId`` (one envelope per
instrument, whole frame; each normalizer keeps its own items). Acks, ``error``/``notice`` events and ``pong``
are consumed. Symbols come from ``instruments`` pushes and REST lists (SPOT ``baseCcy``/``quoteCcy``, else
``uly``), else from the instId; an id of no known form keeps the venue id as its symbol.

* ``books``, ``books-l2-tbt``, ``books50-l2-tbt``: snapshot + update, levels ``[px, sz, "0", count]``, size 0
  deletes. ``checksum``, the signed CRC32 of ``bidPx:bidSz:askPx:askSz:...`` over the top 25 levels per side
  (interleaved, the longer side continuing alone, on the venue's own strings as OKX documents, where
  cryptofeed re-renders Decimals), is verified after snapshots and updates; a mismatch resyncs. With
  ``seqId``, an update's ``prevSeqId`` must equal the last ``seqId`` (else a ``gap`` resync); an update
  without levels is a heartbeat, checked but not published. The 2022 frames have no ``seqId``, so the
  checksum is the gap detector and a lost update touching only levels below the top 25 goes unnoticed
  until a later change reaches them. OKX deprecated the checksum in 2026 (always
  0): 0 beside a ``seqId`` counts as absent. ``lob.sequence`` is ``seqId``, else the frame ``ts`` (ms).
  ``books5``/``bbo-tbt`` messages are whole top-N books, published as snapshots. The first book channel seen
  owns an instrument's lob stream; another book channel's frames for it are dead-lettered, never mixed in.
* ``trades``, ``trades-all``: ``side`` is the taker side; the trade OKX repeats on subscribe is emitted once.
* ``tickers`` (``volume_24h`` = ``vol24h``: contracts, base currency on spot); ``mark-price`` /
  ``index-tickers`` -> tickers with only ``mark_price`` / ``index_price`` (index ``BTC-USDT`` -> ``BTC.USDT``).
* ``candle<bar>``: interval ``1m``/``1h``/``1d``/``1w``/``1M`` (``...utc`` bars too; plain day-and-longer bars
  start at 00:00 UTC+8). ``quote_volume`` = ``volCcyQuote`` (``volCcy`` in 7-field spot rows), ``closed`` =
  ``confirm``; no event time is sent, so it is the receipt time.
* ``funding-rate``: ``fundingRate`` is the current period's rate, settled at ``fundingTime`` (hence
  ``next_funding_timestamp``); ``predicted_rate`` = ``nextFundingRate``; ``interval_hours`` from
  ``nextFundingTime - fundingTime``; event time ``ts`` (cryptofeed uses ``fundingTime``, OKX documents ``ts``).
* ``open-interest``: ``oi`` (contracts); value ``oiUsd`` where sent (USD, standing in for USDT/USDC quotes).
* ``liquidation-orders``: one record per ``details`` item; ``side`` is the liquidation order's side as OKX
  documents it (``sell`` closes a long; ``posSide`` names the position), price ``bkPx``, size ``sz``.

Live (`OkxLive`): ``/ws/v5/public``, and ``/ws/v5/business`` for candles and ``trades-all`` (where OKX moved
them in 2023); ``{"op":"subscribe","args":[{"channel","instId"},..]}``, and the text ``ping`` every 25 s
because OKX drops connections idle for 30 s. Books start with a snapshot; nothing is fetched over REST.

Layout: ``framer.py`` (symbols, `OkxFramer`), ``normalizer.py`` (`OkxNormalizer`, the channel handlers),
``book.py`` (book channels and the checksum), ``live.py`` (`OkxLive`); this module registers the venue.
"""

from __future__ import annotations

from operators.venues.base import Venue
from operators.venues.okx.book import book_checksum
from operators.venues.okx.framer import OkxFramer, symbol_from_info, symbol_from_inst_id
from operators.venues.okx.live import OkxLive
from operators.venues.okx.normalizer import _CHANNELS, OkxNormalizer

__all__ = [
    "VENUES",
    "OkxFramer",
    "OkxLive",
    "OkxNormalizer",
    "book_checksum",
    "symbol_from_info",
    "symbol_from_inst_id",
]

# Recovery snapshots pickle normalizers by class path: keep the one they had when this venue was one module.
OkxNormalizer.__module__ = __name__

VENUES = [
    Venue(
        "okx",
        ("OKX",),
        OkxFramer,
        OkxNormalizer,
        "OKX v5 public websocket",
        channels=_CHANNELS,
        live=OkxLive(
            ws_url="wss://ws.okx.com:8443/ws/v5",
            rest_url="https://www.okx.com",
            channels=(
                "books",
                "books5",
                "bbo-tbt",
                "trades",
                "trades-all",
                "tickers",
                "mark-price",
                "funding-rate",
                "open-interest",
                r"candle(1s|1m|3m|5m|15m|30m|1H|2H|4H|6H|12H|1D|2D|3D|5D|1W|1M|3M)(utc)?",
            ),
            default_channels=("books", "trades", "tickers", "funding-rate", "open-interest"),
            default_instruments=("BTC.USDT", "ETH.USDT", "BTC.USDT-PERP", "ETH.USDT-PERP"),
            instrument_lists=tuple(
                f"/api/v5/public/instruments?instType={kind}" for kind in ("SPOT", "SWAP", "FUTURES")
            ),
            max_subscriptions=200,
            ping_interval_s=25.0,
        ),
    )
]
