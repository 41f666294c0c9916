"""OKX framing and symbols: frames attributed by ``arg.instId`` (see the package docstring)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import orjson

from operators.symbols import Instrument, future, option, perp, spot, yymmdd_to_date
from operators.venues.base import Framer
from schemas.raw import RawEnvelope

__all__ = ["OkxFramer", "symbol_from_info", "symbol_from_inst_id"]

_ARG = re.compile(r'\{"arg":\{"channel":"([^"]+)","instId":"([^"]+)"\}')


def symbol_from_inst_id(inst_id: str) -> str:
    """``BTC-USDT``, ``UNI-USD-SWAP``, ``BTC-USD-220527``, ``BTC-USD-220527-30000-C`` -> normalized symbol."""
    base, _, rest = inst_id.partition("-")
    quote, _, tail = rest.partition("-")
    return _symbol(base, quote, tail.split("-") if tail else [])


def symbol_from_info(info: dict[str, Any]) -> str:
    """One entry of ``/api/v5/public/instruments``: base and quote from ``baseCcy``/``quoteCcy`` or ``uly``."""
    if info["instType"] in ("SPOT", "MARGIN"):
        base, quote = info["baseCcy"], info["quoteCcy"]
    else:
        base, _, quote = (info.get("uly") or info["instFamily"]).partition("-")
    return _symbol(base, quote, info["instId"].split("-")[2:])


def _symbol(base: str, quote: str, tail: list[str]) -> str:
    """``tail``: the instId after base and quote (``[]``, ``[SWAP]``, ``[YYMMDD]``, ``[YYMMDD, strike, C|P]``)."""
    if not base or not quote:
        raise ValueError(f"OKX instrument without base or quote: {base!r}-{quote!r}")
    if not tail:
        return spot(base, quote)
    if tail == ["SWAP"]:
        return perp(base, quote)
    if len(tail) == 1:
        return future(base, quote, yymmdd_to_date(tail[0]))
    if len(tail) == 3 and tail[2] in ("C", "P"):
        return option(base, quote, yymmdd_to_date(tail[0]), tail[1], tail[2])
    raise ValueError(f"not an OKX instrument id: {base}-{quote}-{'-'.join(tail)}")


class OkxFramer(Framer):
    """Attributes OKX frames to instruments by ``arg.instId`` (or each data item's ``instId``)."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self.table: dict[str, Instrument] = {}

    def instrument(self, inst_id: str) -> Instrument:
        inst = self.table.get(inst_id)
        if inst is None:
            try:
                symbol = symbol_from_inst_id(inst_id)
            except (KeyError, ValueError):  # KeyError: a DDMMMYY-looking date with no such month
                symbol = inst_id
            inst = self.table[inst_id] = Instrument(self.exchange, symbol, inst_id)
        return inst

    def known_instruments(self) -> list[Instrument]:
        return list(self.table.values())

    def learn(self, items: Any) -> None:
        for info in items if isinstance(items, list) else ():
            try:
                symbol = symbol_from_info(info)
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            self.table[info["instId"]] = Instrument(self.exchange, symbol, info["instId"])

    def on_recv(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        match = _ARG.match(text)
        if match is not None:
            return [self.envelope(self.instrument(match[2]), match[1], conn, text, ts)]
        return self._slow_path(conn, text, ts)

    def on_http(self, url: str | None, text: str, ts: int) -> list[RawEnvelope]:
        if url and "/api/v5/public/instruments" in url:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                self.learn(orjson.loads(text).get("data"))  # an error reply has no data list
        return []

    def _slow_path(self, conn: str, text: str, ts: int) -> list[RawEnvelope]:
        if text.startswith('{"event"'):
            return []
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return []  # "pong"
        arg = msg.get("arg") if isinstance(msg, dict) and "event" not in msg else None
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            return []
        channel = arg["channel"]
        if channel == "instruments":
            self.learn(msg.get("data"))
            return []
        names = [arg["instId"]] if isinstance(arg.get("instId"), str) else _item_inst_ids(msg.get("data"))
        return [self.envelope(self.instrument(name), channel, conn, text, ts) for name in names]


def _item_inst_ids(data: Any) -> list[str]:
    """Distinct data-item ``instId`` values, in order: channels subscribed by ``instType`` name them there."""
    rows = data if isinstance(data, list) else ()
    return list(dict.fromkeys(d["instId"] for d in rows if isinstance(d, dict) and isinstance(d.get("instId"), str)))
