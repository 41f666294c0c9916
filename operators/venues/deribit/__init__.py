"""Deribit JSON-RPC websocket v2 (``wss://www.deribit.com/ws/api/v2``), public market-data channels.

Notifications are ``{"method": "subscription", "params": {"channel": .., "data": ..}}``; RPC responses
(``id``), errors and ``heartbeat``/``test_request`` frames are dropped by the framer, as are channels that name
no instrument (``deribit_price_index``, ``platform_state``, ...).

* ``book.<inst>.raw`` / ``.100ms`` / ``.agg2``: ``type`` ``snapshot`` then ``change`` with levels
  ``[action, price, amount]`` (``new``/``change`` set the level, ``delete`` removes it). A change's
  ``prev_change_id`` must equal the ``change_id`` of the notification before it; otherwise it is a gap: resync,
  then nothing until the next snapshot. A change whose ``change_id`` is not above the last one is a repeat and
  ignored. Deribit sends no checksum.
* ``book.<inst>.<group>.<depth>.<interval>``: every notification is a whole (top ``depth``) book of
  ``[price, amount]`` levels, published as a venue snapshot.
* ``trades.<inst>.<interval>`` and the multi-instrument ``trades.<kind>.<currency>.<interval>`` (the framer
  gives the frame to each instrument it names; each normalizer takes its own trades). ``direction`` is the taker
  side. A trade with ``liquidation`` ``M``/``T``/``MT`` also yields one ``liquidations`` record per liquidated
  party, with that party's order side: the taker's is ``direction``, the maker's the opposite. This follows
  Deribit's documentation; cryptofeed always reports ``direction``.
* ``ticker.<inst>.<interval>``: ``ticker``; ``open_interest`` whenever ``open_interest`` changes (every ticker
  carries it); for perpetuals a ``funding`` record with ``rate`` = ``current_funding`` (the same value the
  ``perpetual`` channel calls ``interest``). ``funding_8h`` (funding realized over the trailing 8 h) has no
  field in the funding record and is not carried. Deribit reports an empty book side as price 0, amount 0:
  that becomes a null bid or ask.
* ``quote.<inst>``: best bid/ask as a ``ticker``. ``chart.trades.<inst>.<resolution>``: ``candles``
  (no venue event time: ``event_timestamp`` is the receipt time; whether a bar is closed is not said).
  ``perpetual.<inst>.<interval>``: ``funding`` with ``rate`` = ``interest``.

``incremental_ticker`` and unknown notification shapes on instrument channels are dead-lettered.

Live (`DeribitLive`): ``public/set_heartbeat`` (30 s) first, answering each ``test_request`` with
``public/test`` as Deribit requires, then ``public/subscribe`` with at most 100 channels per frame. Configured
channels omit the instrument (``book.100ms`` subscribes ``book.<instrument>.100ms``); ``raw`` intervals need an
authorized connection on Deribit today, so the defaults use ``100ms``.

Symbols: ``BTC-PERPETUAL`` -> ``BTC.USD-PERP``, ``BTC_USDC-PERPETUAL`` -> ``BTC.USDC-PERP``, ``BTC-24SEP21``
-> ``BTC.USD-20210924``, ``BTC-24SEP21-8000-P`` -> ``BTC.USD-20210924-8000-P`` (``d`` in a strike is its
decimal point), ``BTC_USDC`` -> ``BTC.USDC``; ``get_instruments`` responses teach them where captured. Inverse
options quoted in their base currency are named against USD, the currency of their strike.

Layout: ``framer.py`` (symbols, `DeribitFramer`), ``normalizer.py`` (`DeribitNormalizer`, the channel handlers
and the book's ``change_id`` rule), ``live.py`` (`DeribitLive`); this module registers the venue.
"""

from __future__ import annotations

from operators.venues.base import Venue
from operators.venues.deribit.framer import DeribitFramer, symbol_from_info, symbol_from_name
from operators.venues.deribit.live import DeribitLive
from operators.venues.deribit.normalizer import DeribitNormalizer

__all__ = ["VENUES", "DeribitFramer", "DeribitLive", "DeribitNormalizer", "symbol_from_info", "symbol_from_name"]

# Recovery snapshots pickle normalizers by class path: keep the one they had when this venue was one module.
DeribitNormalizer.__module__ = __name__

VENUES = [
    Venue(
        "deribit",
        ("DERIBIT",),
        DeribitFramer,
        DeribitNormalizer,
        "Deribit JSON-RPC websocket v2",
        channels=("book", "trades", "ticker", "quote", "chart.trades", "perpetual"),
        live=DeribitLive(
            ws_url="wss://www.deribit.com/ws/api/v2",
            rest_url="https://www.deribit.com",
            channels=(
                r"(book|trades|ticker|perpetual)\.(raw|100ms|agg2)",
                r"book\.(none|1|2|5|10|25|100|250)\.(1|10|20)\.(100ms|agg2)",
                "quote",
                r"chart\.trades\.(1|3|5|10|15|30|60|120|180|360|720|1D)",
            ),
            default_channels=("book.100ms", "trades.100ms", "ticker.100ms"),
            default_instruments=("BTC.USD-PERP", "ETH.USD-PERP"),
            instrument_lists=tuple(
                f"/api/v2/public/get_instruments?currency={coin}&expired=false" for coin in ("BTC", "ETH", "USDC")
            ),
            max_subscriptions=300,
        ),
    )
]
