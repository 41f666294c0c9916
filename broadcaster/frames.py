"""Server frames of the websocket protocol, encoded once as JSON text (orjson).

A data frame is encoded once per record by the Kafka feed and the same string is sent to every matching
client; control frames (ack, error, welcome) are encoded per request.
"""

from __future__ import annotations

from typing import Any

import orjson

from broadcaster.protocol import ErrorCode, RequestId

__all__ = ["PROTOCOL_VERSION", "ack_frame", "error_frame", "record_frame", "welcome_frame"]

PROTOCOL_VERSION = 1


def _dumps(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def record_frame(
    kind: str, channel: str, key: str, partition: int, offset: int | None, prev: int | None, record: dict[str, Any]
) -> str:
    """A ``data`` frame (one Kafka record) or a ``snapshot`` frame (the broadcaster's current book)."""
    return _dumps(
        {
            "type": kind,
            "channel": channel,
            "key": key,
            "partition": partition,
            "offset": offset,
            "prev": prev,
            "data": record,
        }
    )


def ack_frame(request_id: RequestId, op: str, **fields: Any) -> str:
    """The answer to a request that was carried out."""
    return _dumps({"type": "ack", "id": request_id, "op": op, **fields})


def error_frame(code: ErrorCode, message: str, request_id: RequestId | None = None) -> str:
    """The answer to a request that was refused (``id`` is null when the frame had no usable id)."""
    return _dumps({"type": "error", "id": request_id, "code": code.value, "message": message})


def welcome_frame(replica: str, channels: list[str], limits: dict[str, Any]) -> str:
    """The first frame of every connection: protocol version, channels and this connection's limits."""
    return _dumps(
        {"type": "welcome", "protocol": PROTOCOL_VERSION, "replica": replica, "channels": channels, "limits": limits}
    )
