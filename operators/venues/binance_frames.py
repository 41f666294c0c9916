"""Typed shapes of the busiest Binance frames (spot and futures), for one-pass decoding.

Best bid/offer, trades and diff-book updates are nearly every frame a Binance feed sends. Decoding them with
these shapes turns Binance's decimal strings into floats inside msgspec's C decoder, instead of a generic JSON
decode followed by a Python ``float()`` per field and per book level. The results are plain dicts holding the
keys the normalizer reads, so the normalizer code is the same for typed and generic frames.

A frame that does not fit its shape (a raw-stream frame, a new field type, anything odd) is decoded generically
instead, and the normalizer decides what it is worth exactly as before.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, NotRequired, TypedDict

import msgspec

from schemas.raw import RawEnvelope

__all__ = ["DIFF_DEPTH", "typed_decoder"]

Levels = list[tuple[float, float]]


class _DepthUpdate(TypedDict):
    e: str
    E: int
    s: str
    U: int
    u: int
    b: Levels
    a: Levels
    pu: NotRequired[int]  # futures: the previous update's u


class _Trade(TypedDict):
    e: str
    E: int
    s: str
    t: int
    p: float
    q: float
    T: int
    m: bool


class _AggTrade(TypedDict):
    e: str
    E: int
    s: str
    a: int
    p: float
    q: float
    T: int
    m: bool


class _BookTicker(TypedDict):
    u: int
    s: str
    b: float
    B: float
    a: float
    A: float
    e: NotRequired[str]  # futures name the event and stamp it
    E: NotRequired[int]


class _DepthStream(TypedDict):
    stream: str
    data: _DepthUpdate


class _TradeStream(TypedDict):
    stream: str
    data: _Trade


class _AggTradeStream(TypedDict):
    stream: str
    data: _AggTrade


class _BookTickerStream(TypedDict):
    stream: str
    data: _BookTicker


#: Channel names of diff-book streams (``depth``, ``depth@100ms``, ...).
DIFF_DEPTH = re.compile(r"depth(@\d+ms)?")
_COMBINED_PREFIX = '{"stream":'


def _stream_shape(channel: str) -> Any:
    if channel == "bookTicker":
        return _BookTickerStream
    if channel == "trade":
        return _TradeStream
    if channel == "aggTrade":
        return _AggTradeStream
    if DIFF_DEPTH.fullmatch(channel):
        return _DepthStream
    return None


@lru_cache(maxsize=64)
def _combined_decoder(channel: str) -> msgspec.json.Decoder[Any] | None:
    shape = _stream_shape(channel)
    return None if shape is None else msgspec.json.Decoder(shape, strict=False)


def typed_decoder(env: RawEnvelope) -> msgspec.json.Decoder[Any] | None:
    """The typed decoder for a combined-stream frame of ``env``'s channel; None when the generic decode applies."""
    if not env.frame.startswith(_COMBINED_PREFIX):
        return None
    return _combined_decoder(env.channel)
