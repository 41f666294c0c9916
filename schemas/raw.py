"""The ``raw`` topic contract: a JSON envelope around one original venue frame.

Key: ``"<exchange>:<symbol>"`` with the normalized symbol, so every message of one instrument lands in one
partition, in order, and spot and perpetual instruments sharing a venue symbol (Bybit ``BTCUSDT``) never mix.

Value: a JSON object

=============  =====================================================================================
field          meaning
=============  =====================================================================================
exchange       venue id (``binance``, ``coinbase``, ...)
symbol         normalized symbol (``BTC.USDT``, ``BTC.USDT-PERP``)
venue_symbol   the venue's own symbol
channel        the venue channel the frame belongs to (``depth@100ms``, ``l2_data``, ``book-1000``, ...)
kind           ``ws`` websocket frame, ``rest`` REST response (book snapshots), ``control`` collector event
receipt_ts     receipt time, UTC microseconds (integer)
conn           collector connection id the frame arrived on (null for ``rest``)
url            request URL for ``rest``
frame          the original frame text, byte for byte (base64 when ``binary`` is true)
binary         true when the venue sent a binary frame
=============  =====================================================================================

``control`` envelopes carry collector knowledge the normalizer cannot see for itself: ``channel`` is
``reconnect`` (the connection carrying this instrument was re-established, so any book must be rebuilt) or
``sequence_gap`` (a connection-wide sequence, as on Coinbase and Bitfinex, skipped a number); ``frame`` is a
JSON object with the details.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["CONTROL", "REST", "WS", "EnvelopeError", "Kind", "RawEnvelope", "instrument_key"]

WS: Literal["ws"] = "ws"
REST: Literal["rest"] = "rest"
CONTROL: Literal["control"] = "control"
Kind = Literal["ws", "rest", "control"]


class EnvelopeError(ValueError):
    """Bytes on the raw topic that are not a valid envelope."""


def instrument_key(exchange: str, symbol: str) -> str:
    """The Kafka key of an instrument on every topic."""
    return f"{exchange}:{symbol}"


class RawEnvelope(msgspec.Struct, frozen=True, gc=False):
    """One frame as it travels through the raw topic.

    A msgspec struct: decoding one from JSON, and pickling it between Bytewax workers (routed by key), run in
    C. It holds only strings and numbers, so the garbage collector need not track it (``gc=False``).
    """

    exchange: str
    symbol: str
    venue_symbol: str
    channel: str
    kind: Kind
    receipt_ts: int
    frame: str
    conn: str | None = None
    url: str | None = None
    binary: bool = False

    @property
    def key(self) -> str:
        return instrument_key(self.exchange, self.symbol)

    def to_json(self) -> bytes:
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> RawEnvelope:
        """Parse and validate (types, required fields, kind); raises EnvelopeError with the reason.

        Fields a newer collector adds are ignored, so old normalizers keep reading new envelopes.
        """
        try:
            return _DECODER.decode(data)
        except msgspec.ValidationError as exc:
            raise EnvelopeError(f"raw envelope is invalid: {exc}") from None
        except msgspec.DecodeError as exc:
            raise EnvelopeError(f"raw value is not JSON: {exc}") from None


_DECODER = msgspec.json.Decoder(RawEnvelope)
_ENCODER = msgspec.json.Encoder()
