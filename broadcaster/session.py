"""One websocket connection: admission checks, the request loop, and the writer of queued frames.

The reader answers requests (acks and errors go through the same outbox as records, so an unsubscribe's ack
is the last frame of that subscription); the writer drains the outbox into websocket messages of frames joined
by newlines. When the hub closes the outbox (slow client), the writer is interrupted even if it is stuck
behind a stalled socket, and the connection is closed with the outbox's code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket

from broadcaster.access import RequestRateLimiter, api_key_valid, offered_api_key, origin_allowed
from broadcaster.frames import ack_frame, error_frame, welcome_frame
from broadcaster.hub import Client, Hub
from broadcaster.outbox import Outbox
from broadcaster.protocol import (
    ErrorCode,
    ListSubscriptions,
    Ping,
    ProtocolError,
    Subscribe,
    parse_request,
    request_id_of,
)
from broadcaster.settings import BroadcasterSettings

__all__ = ["CLOSE_FORBIDDEN_ORIGIN", "CLOSE_TRY_AGAIN_LATER", "CLOSE_UNAUTHORIZED", "serve_websocket"]

log = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN_ORIGIN = 4003
CLOSE_TRY_AGAIN_LATER = 1013


def _refusal(websocket: WebSocket, hub: Hub, settings: BroadcasterSettings) -> tuple[int, ErrorCode, str] | None:
    """Why this connection may not open (close code, error code, message), or None."""
    headers = websocket.headers
    if not origin_allowed(headers.get("origin"), headers.get("host"), settings.allowed_origins):
        return CLOSE_FORBIDDEN_ORIGIN, ErrorCode.FORBIDDEN_ORIGIN, f"origin {headers.get('origin')} is not allowed"
    if not api_key_valid(offered_api_key(websocket.query_params, headers), settings.api_keys):
        return CLOSE_UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "a valid API key is required"
    if len(hub.clients) >= settings.broadcaster_max_connections:
        return CLOSE_TRY_AGAIN_LATER, ErrorCode.TOO_MANY_CONNECTIONS, "too many connections, try again later"
    return None


async def serve_websocket(websocket: WebSocket, hub: Hub, settings: BroadcasterSettings, replica: str) -> None:
    """Serve one connection until the client leaves, breaks the rules, or falls too far behind."""
    await websocket.accept()
    refusal = _refusal(websocket, hub, settings)
    if refusal is not None:
        close_code, code, message = refusal
        hub.metrics.rejected_connections.labels(code.value).inc()
        await _close(websocket, close_code, message, settings.broadcaster_close_timeout_s, error_frame(code, message))
        return
    outbox = Outbox(settings.broadcaster_queue_length, settings.broadcaster_slow_client_policy == "conflate")
    client = hub.connect(outbox)
    limits = {
        "max_subscriptions": settings.broadcaster_max_subscriptions,
        "requests_per_second": settings.broadcaster_requests_per_second,
        "max_frame_bytes": settings.broadcaster_max_frame_bytes,
        "queue_length": settings.broadcaster_queue_length,
        "slow_client_policy": settings.broadcaster_slow_client_policy,
    }
    outbox.put_control(welcome_frame(replica, hub.channels, limits))
    reader = asyncio.create_task(_read(websocket, hub, client, settings))
    writer = asyncio.create_task(_write(websocket, hub, client, settings.broadcaster_message_bytes))

    def interrupt_writer() -> None:
        writer.cancel()

    outbox.on_close = interrupt_writer
    try:
        await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.remove(client)
        for task in (reader, writer):
            task.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)
    if outbox.close_code is not None:
        await _close(websocket, outbox.close_code, outbox.close_reason, settings.broadcaster_close_timeout_s)


async def _close(websocket: WebSocket, code: int, reason: str, timeout: float, last_frame: str | None = None) -> None:
    """Send an optional last frame and a close frame; give up after ``timeout`` (a peer that stopped reading)."""

    async def close() -> None:
        if last_frame is not None:
            await websocket.send_text(last_frame)
        await websocket.close(code, reason)

    with contextlib.suppress(Exception):  # the peer may be gone already: nothing left to tell it
        await asyncio.wait_for(close(), timeout)


async def _read(websocket: WebSocket, hub: Hub, client: Client, settings: BroadcasterSettings) -> None:
    limiter = RequestRateLimiter(settings.broadcaster_requests_per_second)
    max_bytes = settings.broadcaster_max_frame_bytes
    while not client.outbox.closing:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text: str | None = message.get("text")
        try:
            if text is None:
                size = len(message.get("bytes") or b"")
            else:
                size = len(text) if len(text) * 4 <= max_bytes else len(text.encode())
            if size > max_bytes:
                raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"frame of {size} bytes exceeds {max_bytes} bytes")
            if not limiter.allow():
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {settings.broadcaster_requests_per_second:g} requests per second; request ignored",
                    request_id_of(text) if text is not None else None,
                )
            if text is None:
                raise ProtocolError(ErrorCode.INVALID_REQUEST, "binary frames are not accepted; send JSON as text")
            _handle(hub, client, text)
        except ProtocolError as exc:
            hub.metrics.requests.labels(exc.code.value).inc()
            hub.reply(client, error_frame(exc.code, exc.message, exc.request_id))
        except Exception:  # a bug must cost one request, not the connection
            log.exception("request failed: %.200s", text)
            hub.metrics.requests.labels(ErrorCode.INTERNAL_ERROR.value).inc()
            hub.reply(client, error_frame(ErrorCode.INTERNAL_ERROR, "the request could not be processed"))


def _handle(hub: Hub, client: Client, text: str) -> None:
    request = parse_request(text, hub.channels)
    if isinstance(request, Subscribe):
        hub.subscribe(client, request)
    elif isinstance(request, ListSubscriptions):
        patterns = [pattern.as_dict() for pattern in client.patterns]
        hub.reply(client, ack_frame(request.id, "list", subscriptions=patterns))
    elif isinstance(request, Ping):
        hub.reply(client, ack_frame(request.id, "ping"))
    else:
        hub.unsubscribe(client, request)
    hub.metrics.requests.labels(request.op).inc()


async def _write(websocket: WebSocket, hub: Hub, client: Client, message_chars: int) -> None:
    outbox = client.outbox
    frames_out, messages_out = hub.metrics.frames_out, hub.metrics.messages_out
    while True:
        await outbox.wait()
        if outbox.closing:
            return
        frames, pending = outbox.take(message_chars)
        if pending:
            # Latest states first: they stand for records dispatched before anything still queued behind them.
            frames = hub.latest_frames(client, pending) + frames
        if frames:
            await websocket.send_text("\n".join(frames))
            frames_out.inc(len(frames))
            messages_out.inc()
