"""Bybit v5 public websockets: ``wss://stream.bybit.com/v5/public/{spot,linear,inverse,option}``.

Channels (topic ``<channel>.<symbol>``):

* ``orderbook.<depth>`` (1, 25, 50, 100, 200, 500, 1000): ``type`` ``snapshot`` replaces the book (Bybit also
  re-sends one at any time, and a frame with ``u == 1`` is a full book after a service restart, whatever its
  ``type``); every ``delta`` must carry ``u`` = previous ``u`` + 1, anything else is a gap: one resync, then
  nothing until the next snapshot. Bybit sends no checksum. Bybit keeps the book to the subscribed depth
  itself (it deletes levels leaving the window), so the local book is not truncated. One book per
  instrument: it follows the deepest depth subscribed, frames of shallower depths are ignored.
* ``publicTrade``: ``S`` is the taker side, ``i`` the trade id, ``seq`` the cross sequence. Block trades
  (``BT``) and RPI trades are trades of the instrument and are emitted too.
* ``tickers``: linear/inverse send a snapshot, then deltas with only the changed fields; spot and option send
  snapshots. The merged state of the fields used (best bid/ask, last, 24 h volume, mark, index, funding,
  open interest) is kept per instrument. A ``ticker`` record goes out when bid/ask/last/volume/mark/index
  change, ``funding`` when ``fundingRate``/``nextFundingTime``/``fundingIntervalHour`` change (it carries the
  current mark and index), ``open_interest`` when ``openInterest``/``openInterestValue`` change. Deltas
  before the first snapshot are ignored. Spot's ``usdIndexPrice`` is a coin's USD index, not the pair's, so it
  is not used as ``index_price``.
* ``kline.<interval>`` (1..720, D, W, M -> 1m..12h, 1d, 1w, 1M); ``end`` is inclusive in ms, so the exclusive
  end is ``end + 1`` ms; ``confirm`` -> ``closed``.
* ``allLiquidation`` and the older ``liquidation``: Bybit's side is the side of the *liquidated position*
  ("Buy" = a long was liquidated), so the liquidation *order* side recorded is the opposite (Buy -> sell).
  cryptofeed passes Bybit's side through unchanged; this module follows Bybit's documentation instead.

Inverse contracts: sizes and volumes are in contracts (1 USD each) and Bybit's ``turnover`` and
``openInterestValue`` are in the base coin, so ``quote_volume`` and ``open_interest_value`` are left null.

Symbols: the market comes from the connection URL, because ``BTCUSDT`` is both a spot pair and a linear
perpetual. REST ``instruments-info`` responses name base, quote, contract type and delivery time; without
them symbols are parsed (``BTCUSDT-14AUG26``, ``BTCPERP`` = USDC perpetual, ``BTCUSDH25`` = inverse future
expiring on the last Friday of the month, ``BTC-27DEC24-100000-C[-USDT]`` option quoted in USD unless a
quote suffix is given). A symbol that cannot be parsed keeps the venue symbol (``-PERP`` appended off spot).
Subscription acks, pongs and error replies carry no ``topic`` and are dropped by the framer.

Live (`BybitLive`): one connection per market (``/v5/public/spot``, ``linear``, ``inverse``, ``option``: the URL
is what tells ``BTCUSDT`` spot from perpetual), ``{"op":"subscribe","args":["<channel>.<symbol>",..]}`` with at
most 10 arguments per frame (the spot limit), and ``{"op":"ping"}`` every 20 s as Bybit requires.

Layout: ``framer.py`` (symbols, `BybitFramer`), ``normalizer.py`` (`BybitNormalizer`, the channel handlers and
the book's ``u`` sequence rule), ``live.py`` (`BybitLive`); this module registers the venue.
"""

from __future__ import annotations

from operators.venues.base import Venue
from operators.venues.bybit.framer import BybitFramer
from operators.venues.bybit.live import BybitLive
from operators.venues.bybit.normalizer import BybitNormalizer

__all__ = ["VENUES", "BybitFramer", "BybitLive", "BybitNormalizer"]

# Recovery snapshots pickle normalizers by class path: keep the one they had when this venue was one module.
BybitNormalizer.__module__ = __name__

VENUES = [
    Venue(
        "bybit",
        ("BYBIT",),
        BybitFramer,
        BybitNormalizer,
        "Bybit v5 spot, linear, inverse and option",
        live=BybitLive(
            ws_url="wss://stream.bybit.com/v5/public",
            rest_url="https://api.bybit.com",
            channels=(
                r"orderbook\.(1|25|50|100|200|500|1000)",
                "publicTrade",
                "tickers",
                r"kline\.(1|3|5|15|30|60|120|240|360|720|D|W|M)",
                "allLiquidation",
            ),
            default_channels=("orderbook.200", "publicTrade", "tickers", "kline.1", "allLiquidation"),
            default_instruments=("BTC.USDT", "ETH.USDT", "BTC.USDT-PERP", "ETH.USDT-PERP"),
            instrument_lists=tuple(
                f"/v5/market/instruments-info?category={category}&status=Trading&limit=1000"
                for category in ("spot", "linear", "inverse")
            ),
            max_subscriptions=200,
            ping_interval_s=20.0,
        ),
    )
]
