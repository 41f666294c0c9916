"""What the live collector needs to subscribe to Bitfinex (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from operators.venues.bitfinex.framer import SEQ_ALL
from operators.venues.live import LiveSpec, Subscription, compact_json

__all__ = ["BitfinexLive"]

#: Info event codes asking clients to reconnect: server restart, end of maintenance.
_RECONNECT_CODES = ('"code":20051', '"code":20061')


@dataclass(frozen=True)
class BitfinexLive(LiveSpec):
    """Bitfinex v2 subscriptions (see the package docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return channel != "status-deriv" or sub.market == "perp"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        frames = [compact_json({"event": "conf", "flags": SEQ_ALL})]
        for sub in subs:
            name, _, argument = sub.channel.partition("-")
            request: dict[str, Any] = {"event": "subscribe", "channel": name}
            if name == "book":
                prec, freq, length = argument.split("-")
                request.update(symbol=sub.venue_symbol, prec=prec, freq=freq, len=length)
            elif name == "candles":
                request["key"] = f"trade:{argument}:{sub.venue_symbol}"
            elif name == "status":
                request["key"] = f"deriv:{sub.venue_symbol}"
            else:
                request["symbol"] = sub.venue_symbol
            frames.append(compact_json(request))
        return frames

    def asks_reconnect(self, text: str) -> bool:
        return text.startswith('{"event":"info"') and any(code in text for code in _RECONNECT_CODES)
