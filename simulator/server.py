"""The simulated venue: real websockets and real HTTP on one port, answering from a `Recording`.

A websocket client is served like the venue served the recorded client: the server waits for its
subscriptions (the URL query and the frames it sends) until they cover a recorded connection at the same path,
then plays that connection's frames from the first, at the recorded pace divided by ``speed`` (0 = as fast as
possible). When no recorded connection is covered within ``match_timeout_s`` of the client's last frame, the
one sharing most of its subscriptions is played (logged), or, sharing none, the connection is closed with
code 1008 and the reason. After the last frame the connection stays open and silent, as a quiet venue would;
every new connection starts its recording from the beginning.

Plain HTTP GETs (no websocket upgrade) are answered at once with the recorded REST response
(``application/json``), or 404 with a JSON error naming the request. A recorded book snapshot may thus be newer
than the stream a client has seen so far; Binance's procedure copes (diffs the snapshot covers are dropped).

``GET /__simulator__`` describes what is served: the recorded connections; per connection the sessions playing
it, the sessions that played it to the end, the frames sent and the frames received after the match; and the
REST requests answered, per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from simulator.recording import RecordedConnection, Recording, frame_tokens, query_tokens

__all__ = ["SimulatorServer"]

LOG = logging.getLogger(__name__)
INFO_PATH = "/__simulator__"


def _json_response(connection: ServerConnection, status: int, body: str) -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Connection"] = "close"
    return response


class SimulatorServer:
    """Serves one recording on ``host:port`` until cancelled."""

    def __init__(
        self, recording: Recording, host: str, port: int, speed: float = 1.0, match_timeout_s: float = 2.0
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        self.recording = recording
        self.host = host
        self.port = port
        self.speed = speed
        self.match_timeout_s = match_timeout_s
        #: Recorded connection -> sessions playing it now (a reconnecting client may overlap its old session).
        self._playing: dict[str, int] = {}
        #: Recorded connection -> sessions that played it to the end.
        self._played: dict[str, int] = {}
        #: Recorded connection -> frames sent, and frames received after the match (pings), over all sessions.
        self._sent: dict[str, int] = {}
        self._received: dict[str, int] = {}
        #: Request target -> REST responses served.
        self._requests: dict[str, int] = {}

    async def serve_forever(self) -> None:
        async with serve(self._handle, self.host, self.port, process_request=self._http) as server:
            self._announce(server)
            await server.serve_forever()

    def _announce(self, server: Server) -> None:
        LOG.info(
            "serving %s (%d connections, %d REST responses) on http://%s:%d at speed %s",
            self.recording.venue,
            len(self.recording.connections),
            len(self.recording.responses) + len(self.recording.unnamed),
            self.host,
            self.port,
            self.speed,
        )

    # -- HTTP ------------------------------------------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if urlsplit(request.path).path == INFO_PATH:
            return _json_response(connection, http.HTTPStatus.OK, orjson.dumps(self._info()).decode())
        body = self.recording.response(request.path)
        if body is None:
            LOG.info("GET %s: not in the recording", request.path)
            error = {"code": 404, "msg": f"{request.path} is not in the {self.recording.venue} recording"}
            return _json_response(connection, http.HTTPStatus.NOT_FOUND, orjson.dumps(error).decode())
        LOG.info("GET %s: %d bytes", request.path, len(body))
        self._requests[request.path] = self._requests.get(request.path, 0) + 1
        return _json_response(connection, http.HTTPStatus.OK, body)

    def _info(self) -> dict[str, object]:
        return {
            "venue": self.recording.venue,
            "speed": self.speed,
            "connections": [
                {"conn": c.conn, "path": c.path, "frames": len(c.frames), "subscriptions": sorted(c.tokens)}
                for c in self.recording.connections
            ],
            "playing": dict(self._playing),
            "played": dict(self._played),
            "sent": dict(self._sent),
            "received": dict(self._received),
            "requests": dict(self._requests),
        }

    # -- websockets ------------------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        target = ws.request.path if ws.request is not None else "/"
        path = urlsplit(target).path
        candidates = self.recording.candidates(path)
        if not candidates:
            await ws.close(1008, f"no recorded connection at {path or '/'}")
            return
        tokens = query_tokens(target)
        chosen = await self._match(ws, candidates, tokens)
        if chosen is None:
            await ws.close(1008, "the subscription matches no recorded connection")
            return
        reader = asyncio.create_task(self._drain(ws, chosen.conn))
        self._playing[chosen.conn] = self._playing.get(chosen.conn, 0) + 1
        try:
            await self._play(ws, chosen)
            await ws.wait_closed()
        except ConnectionClosed:
            LOG.info("%s: client went away during playback", chosen.conn)
        finally:
            self._playing[chosen.conn] -= 1
            reader.cancel()

    async def _match(
        self, ws: ServerConnection, candidates: list[RecordedConnection], tokens: set[str]
    ) -> RecordedConnection | None:
        """The recorded connection the client's subscriptions cover (see the module docstring)."""
        while True:
            covered = [conn for conn in candidates if conn.tokens <= tokens]
            if covered:
                return min(covered, key=lambda conn: (self._playing.get(conn.conn, 0) > 0, -len(conn.tokens)))
            try:
                message = await asyncio.wait_for(ws.recv(), self.match_timeout_s)
            except TimeoutError:
                best = max(candidates, key=lambda conn: conn.overlap(tokens))
                if best.overlap(tokens) == 0:
                    return None
                LOG.warning("%s: partial match (%.0f%% of its subscriptions)", best.conn, 100 * best.overlap(tokens))
                return best
            except ConnectionClosed:
                return None
            tokens |= frame_tokens(message if isinstance(message, str) else message.decode("utf-8", "replace"))

    async def _play(self, ws: ServerConnection, recorded: RecordedConnection) -> None:
        LOG.info("%s: playing %d frames", recorded.conn, len(recorded.frames))
        if not recorded.frames:
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = recorded.frames[0].ts
        for frame in recorded.frames:
            if self.speed > 0:
                delay = start + (frame.ts - first) / 1_000_000 / self.speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.send(frame.payload)
            self._sent[recorded.conn] = self._sent.get(recorded.conn, 0) + 1
        self._played[recorded.conn] = self._played.get(recorded.conn, 0) + 1
        LOG.info("%s: playback done", recorded.conn)

    async def _drain(self, ws: ServerConnection, conn: str) -> None:
        """Read what the client sends after the match (pings), so its control frames keep flowing."""
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                self._received[conn] = self._received.get(conn, 0) + 1
