"""A capture file as the simulator serves it: recorded connections to play and REST responses to answer.

A recorded connection is matched to a client by what the client subscribes to, never by frame order or
formatting: the tokens of a subscription are the string and number leaves of the subscribe frames (request ids
aside) and the parts of the URL query (``streams=a@depth/b@trade``), lower-cased. A recorded connection is
*covered* by a client once every one of its tokens is among the client's, so a client may batch its
subscriptions differently, or add pings and heartbeat requests, and still be served the same recording.

REST responses are matched by path and query: a response whose parameters conflict with the request's is never
served; among the rest, the one sharing the most parameters wins. hftbacktest captures record no REST URLs:
their responses (Binance depth snapshots) answer requests nothing else answers, except instrument-list paths.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson

from connectors.capture import detect_venue, read_capture

__all__ = [
    "RecordedConnection",
    "RecordedFrame",
    "RecordedResponse",
    "Recording",
    "frame_tokens",
    "load_recording",
    "query_tokens",
]

#: Keys whose values are request ids, not subscriptions.
_ID_KEYS = frozenset(("id", "reqid", "req_id", "cid", "nonce"))
_SEPARATORS = re.compile(r"[/,]")


def _leaves(value: object, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in _ID_KEYS:
                _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, out)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        out.add(str(value).lower())


def frame_tokens(text: str) -> set[str]:
    """The subscription tokens of a frame a client sent (the frame itself when it is not JSON)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {text.strip().lower()}
    out: set[str] = set()
    _leaves(value, out)
    return out


def query_tokens(target: str) -> set[str]:
    """The subscription tokens of a URL's query (``?streams=a@depth/b@trade`` -> {a@depth, b@trade})."""
    out: set[str] = set()
    for _, value in parse_qsl(urlsplit(target).query):
        out.update(part.lower() for part in _SEPARATORS.split(value) if part)
    return out


def _path(url: str) -> str:
    return urlsplit(url).path.rstrip("/")


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """A frame the venue sent: receipt time (UTC microseconds) and payload (bytes for binary frames)."""

    ts: int
    payload: str | bytes


@dataclass(frozen=True)
class RecordedConnection:
    """One recorded websocket connection."""

    conn: str
    #: URL path, or None when the capture did not record the URL (any path matches).
    path: str | None
    tokens: frozenset[str]
    frames: tuple[RecordedFrame, ...]

    def overlap(self, tokens: set[str]) -> float:
        """Share of this connection's tokens the client sent (1.0 when it has none)."""
        return len(self.tokens & tokens) / len(self.tokens) if self.tokens else 1.0


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """One recorded REST response."""

    path: str
    params: tuple[tuple[str, str], ...]
    text: str


@dataclass(frozen=True)
class Recording:
    """Everything the simulator serves from one capture."""

    venue: str
    connections: tuple[RecordedConnection, ...]
    responses: tuple[RecordedResponse, ...]
    #: Responses recorded without a URL, and the instrument-list paths they must not answer.
    unnamed: tuple[str, ...] = ()
    list_paths: frozenset[str] = frozenset()

    @cached_property
    def _by_path(self) -> dict[str, list[RecordedResponse]]:
        by_path: defaultdict[str, list[RecordedResponse]] = defaultdict(list)
        for response in self.responses:
            by_path[response.path].append(response)
        return dict(by_path)

    def candidates(self, path: str) -> list[RecordedConnection]:
        """Recorded connections a client connecting to ``path`` may be served."""
        wanted = path.rstrip("/")
        return [conn for conn in self.connections if conn.path is None or conn.path == wanted]

    def response(self, target: str) -> str | None:
        """The recorded body answering a GET of ``target`` (path and query), or None."""
        path = _path(target)
        params: Mapping[str, str] = dict(parse_qsl(urlsplit(target).query))
        best: RecordedResponse | None = None
        best_score = -1
        for response in self._by_path.get(path, ()):
            if any(key in params and params[key] != value for key, value in response.params):
                continue
            score = sum(params.get(key) == value for key, value in response.params)
            if score > best_score:
                best, best_score = response, score
        if best is not None:
            return best.text
        if self.unnamed and path not in self.list_paths:
            return self.unnamed[0]
        return None


def _payload(text: str) -> str | bytes:
    """Text frames stay text; frames recorded as binary (undecodable as UTF-8) go back as bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _tokens(url: str | None, sends: Iterable[str]) -> frozenset[str]:
    tokens = query_tokens(url) if url else set()
    for text in sends:
        tokens |= frame_tokens(text)
    return frozenset(tokens)


def load_recording(path: str | Path, venue: str | None = None) -> Recording:
    """Read a capture (cryptofeed or hftbacktest; ``venue`` names the venue of the latter)."""
    header, events = read_capture(path)
    spec = detect_venue(header, venue)
    urls: dict[str, str | None] = {}
    sends: defaultdict[str, list[str]] = defaultdict(list)
    frames: defaultdict[str, list[RecordedFrame]] = defaultdict(list)
    responses: list[RecordedResponse] = []
    unnamed: list[str] = []
    for event in events:
        if event.kind == "http" and event.data is not None:
            if event.url is None:
                unnamed.append(event.data)
            else:
                params = tuple(parse_qsl(urlsplit(event.url).query))
                responses.append(RecordedResponse(_path(event.url), params, event.data))
        elif event.conn is None:
            continue
        elif event.kind == "connect":
            urls[event.conn] = event.url or None
        elif event.kind == "send" and event.data is not None:
            sends[event.conn].append(event.data)
        elif event.kind == "recv" and event.data is not None:
            frames[event.conn].append(RecordedFrame(event.ts, _payload(event.data)))
    connections = tuple(
        RecordedConnection(conn, _path(url) if url else None, _tokens(url, sends[conn]), tuple(frames[conn]))
        for conn, url in urls.items()
    )
    live = spec.live
    list_paths = frozenset(_path(p) for p in live.instrument_lists) if live is not None else frozenset()
    return Recording(spec.name, connections, tuple(responses), tuple(unnamed), list_paths)
