"""What the live collector needs to subscribe to OKX (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators.venues.live import LiveSpec, Subscription, batched, compact_json

__all__ = ["OkxLive"]

_DERIVATIVE_ONLY = frozenset(("funding-rate", "open-interest", "mark-price"))


@dataclass(frozen=True)
class OkxLive(LiveSpec):
    """OKX v5 subscriptions (see the package docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        if channel == "funding-rate":
            return sub.market == "perp"
        return channel not in _DERIVATIVE_ONLY or sub.market != "spot"

    def connection_key(self, sub: Subscription) -> str:
        return "business" if sub.channel.startswith("candle") or sub.channel == "trades-all" else "public"

    def connection_url(self, key: str, subs: Sequence[Subscription]) -> str:
        return f"{self.ws_url}/{key}"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        args = [{"channel": sub.channel, "instId": sub.venue_symbol} for sub in subs]
        return [compact_json({"op": "subscribe", "args": chunk}) for chunk in batched(args, 50)]

    def ping_frame(self) -> str | None:
        return "ping"
