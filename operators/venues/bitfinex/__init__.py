"""Bitfinex websocket v2 (``wss://api.bitfinex.com/ws/2``, ``wss://api-pub.bitfinex.com/ws/2``).

Data frames are arrays ``[chanId, payload, ...]``. The framer maps ``chanId`` to a subscription from each
connection's ``subscribed`` events and names envelope channels after it (``trades``, ``ticker``,
``book-<prec>-<freq>-<len>``, ``candles-<interval>``, ``status-deriv``), adding ``+ts``, ``+seq`` and ``+cs``
when the connection's ``conf`` flags (sent, then confirmed by the server) make the server append a TIMESTAMP
(32768) and a SEQ_ALL sequence (65536), in that order, or send OB_CHECKSUM (131072) frames.

Channels (recorded: trades, book P0, ticker, with SEQ_ALL; the others from Bitfinex's documentation):
``trades`` (the on-subscribe history, newest first, is emitted oldest first and once with `RecentTrades`;
``te`` always, its ``tu`` repeat only when not seen); ``ticker``; ``book`` P0..P4 ``[PRICE, COUNT, AMOUNT]``
(COUNT 0 removes the level); ``candles`` (key ``trade:<interval>:<symbol>``, rows ``[MTS, OPEN, CLOSE, HIGH,
LOW, VOLUME]``; in a snapshot all but the newest candle are ``closed``); ``status`` ``deriv:<symbol>`` ->
funding (``CURRENT_FUNDING`` rate, ``NEXT_FUNDING_ACCRUED`` predicted, 8 h interval) and open interest.
The framer consumes heartbeats and events. Not supported: R0 raw books (dead-lettered: P0 carries the same
price levels), the ``liq:global`` feed, funding currencies (``fUSD``), bulk book updates (flag 536870912).
One book per instrument: frames of a second book subscription are dead-lettered.

Sequence and checksum rules:

* SEQ_ALL numbers every data frame of a connection (heartbeats and checksum frames too, even for a ``chanId``
  not announced yet; events carry none). The framer expects last + 1; a jump or a repeat yields a
  ``sequence_gap`` control envelope for every instrument of the connection, before the frame's own envelope.
  A book update whose sequence is not above the book's last one is a ``gap`` too (reordering after keying).
* With OB_CHECKSUM, book updates are committed when the following ``[chanId, "cs", CHECKSUM]`` frame matches
  the signed CRC32 of the top 25 bids and asks interleaved as ``price:amount`` (ask amounts negative), numbers
  printed as JavaScript's ``String(number)`` (the docs' reference code); as clients disagree on how numbers
  below 1e-6 print, a match with those in fixed notation is accepted too. A mismatch -> "checksum" resync.
* After any resync nothing is published until the next venue snapshot. Bitfinex sends a book snapshot only when
  the book is subscribed, and nothing feeds a resync back to the collector, so live the book stays out of sync
  until its connection is replaced and the new session subscribes again: a reconnect Bitfinex asks for (info
  20051/20061), a lost connection, or a planned rotation, which happens only when
  ``COLLECTOR_ROTATION_INTERVAL_S`` is set (`BitfinexLive` declares no ``rotate_after_s``).

Live (`BitfinexLive`): the ``conf`` frame asking for SEQ_ALL, then one subscribe frame per channel, at most 25
channels per connection (Bitfinex's limit); server heartbeats keep the connection alive; info events 20051
(server restart) and 20061 (maintenance over) ask clients to reconnect. The pair lists
(``/v2/conf/pub:list:pair:exchange`` and ``:future``) teach the framer the listed pairs. Checksum frames are not
requested: SEQ_ALL already exposes any lost frame of the connection.

Semantics: AMOUNT > 0 is a taker buy or a bid; sizes are absolute. Books, tickers and candles carry no event
time: the TIMESTAMP flag's value, else receipt time. Symbols: ``tBTCUSD`` -> ``BTC.USD`` (3+3 letters),
``tTESTBTC:TESTUSD`` -> ``TESTBTC.TESTUSD``, ``tBTCF0:USTF0`` -> ``BTC.USDT-PERP``; ``UST`` is USDT.

Layout: ``framer.py`` (flags, symbols, `BitfinexFramer`), ``normalizer.py`` (`BitfinexNormalizer`, the channel
handlers), ``book.py`` (the checksum), ``live.py`` (`BitfinexLive`); this module registers the venue.
"""

from __future__ import annotations

from operators.venues.base import Venue
from operators.venues.bitfinex.book import book_checksum, js_number
from operators.venues.bitfinex.framer import (
    CS_FLAG,
    OB_CHECKSUM,
    SEQ_ALL,
    SEQ_FLAG,
    TIMESTAMP,
    TS_FLAG,
    BitfinexFramer,
    symbol_from_venue,
)
from operators.venues.bitfinex.live import BitfinexLive
from operators.venues.bitfinex.normalizer import BitfinexNormalizer

__all__ = [
    "CS_FLAG",
    "OB_CHECKSUM",
    "SEQ_ALL",
    "SEQ_FLAG",
    "TIMESTAMP",
    "TS_FLAG",
    "VENUES",
    "BitfinexFramer",
    "BitfinexLive",
    "BitfinexNormalizer",
    "book_checksum",
    "js_number",
    "symbol_from_venue",
]

# Recovery snapshots pickle normalizers by class path: keep the one they had when this venue was one module.
BitfinexNormalizer.__module__ = __name__

VENUES = [
    Venue(
        "bitfinex",
        ("BITFINEX",),
        BitfinexFramer,
        BitfinexNormalizer,
        "Bitfinex websocket v2",
        live=BitfinexLive(
            ws_url="wss://api-pub.bitfinex.com/ws/2",
            rest_url="https://api-pub.bitfinex.com",
            channels=(
                "trades",
                "ticker",
                r"book-P[0-4]-F[01]-(1|25|100|250)",
                r"candles-(1m|5m|15m|30m|1h|3h|6h|12h|1D|1W|14D|1M)",
                "status-deriv",
            ),
            default_channels=("book-P0-F0-100", "trades", "ticker"),
            default_instruments=("BTC.USD", "ETH.USD"),
            instrument_lists=("/v2/conf/pub:list:pair:exchange", "/v2/conf/pub:list:pair:future"),
            max_subscriptions=25,
        ),
    )
]
