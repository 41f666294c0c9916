"""What the live collector needs to subscribe to Deribit (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators.venues.live import LiveSpec, Subscription, batched, compact_json

__all__ = ["DeribitLive"]

_HEARTBEAT_REQUEST = '{"jsonrpc":"2.0","id":1,"method":"public/set_heartbeat","params":{"interval":30}}'
_HEARTBEAT_ANSWER = '{"jsonrpc":"2.0","id":2,"method":"public/test","params":{}}'


@dataclass(frozen=True)
class DeribitLive(LiveSpec):
    """Deribit JSON-RPC subscriptions (see the package docstring)."""

    def applies(self, channel: str, sub: Subscription) -> bool:
        return not channel.startswith("perpetual.") or sub.market == "perp"

    def subscribe_frames(self, subs: Sequence[Subscription]) -> list[str]:
        channels = []
        for sub in subs:
            if sub.channel.startswith("chart.trades."):
                channels.append(f"chart.trades.{sub.venue_symbol}.{sub.channel.removeprefix('chart.trades.')}")
            else:
                kind, dot, rest = sub.channel.partition(".")
                channels.append(f"{kind}.{sub.venue_symbol}{dot}{rest}")
        subscribe = [
            compact_json({"jsonrpc": "2.0", "id": 3 + n, "method": "public/subscribe", "params": {"channels": chunk}})
            for n, chunk in enumerate(batched(channels, 100))
        ]
        return [_HEARTBEAT_REQUEST, *subscribe]

    def reply(self, text: str) -> str | None:
        if '"method":"heartbeat"' in text and '"test_request"' in text:
            return _HEARTBEAT_ANSWER
        return None
