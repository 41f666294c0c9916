"""What the live collector needs to subscribe to Bybit (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators.venues.bybit.framer import _guess_category
from operators.venues.live import LiveSpec, Subscription, batched, compact_json

__all__ = ["BybitLive"]


@dataclass(frozen=True)
class BybitLive(LiveSpec):
    """Bybit v5 public subscriptions (see the package docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return channel != "allLiquidation" or sub.market in ("perp", "future")

    def connection_key(self, sub: Subscription) -> str:
        if "." not in sub.symbol:
            return _guess_category(sub.venue_symbol)
        market = sub.market
        if market == "spot" or market == "option":
            return market
        quote = sub.symbol.partition(".")[2].partition("-")[0]
        return "inverse" if quote == "USD" else "linear"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        return f"{self.ws_url}/{key}"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        topics = [f"{sub.channel}.{sub.venue_symbol}" for sub in subs]
        return [compact_json({"op": "subscribe", "args": args}) for args in batched(topics, 10)]

    def ping_frame(self) -> str | None:
        return '{"op":"ping"}'
