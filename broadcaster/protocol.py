"""The client side of the websocket protocol (broadcaster/PROTOCOL.md): requests, their validation, errors.

Every request is one JSON object in a text frame with an ``op`` and the client's ``id``. Anything else is
answered by an `ProtocolError` turned into an error frame (a code from `ErrorCode` and a message); the
connection stays open.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import ConfigDict, Field, StrictInt, StrictStr, StringConstraints, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as validated_dataclass

__all__ = [
    "WILDCARD",
    "ErrorCode",
    "ListSubscriptions",
    "Pattern",
    "Ping",
    "ProtocolError",
    "Request",
    "RequestId",
    "Subscribe",
    "Unsubscribe",
    "parse_request",
    "request_id_of",
]

#: Matches every exchange or every symbol.
WILDCARD = "*"


class ErrorCode(StrEnum):
    """Codes of error frames; PROTOCOL.md explains each."""

    MALFORMED_JSON = "malformed_json"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_CHANNEL = "unknown_channel"
    ALREADY_SUBSCRIBED = "already_subscribed"
    NOT_SUBSCRIBED = "not_subscribed"
    SUBSCRIPTION_LIMIT = "subscription_limit"
    RATE_LIMITED = "rate_limited"
    FRAME_TOO_LARGE = "frame_too_large"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    INTERNAL_ERROR = "internal_error"


RequestId = StrictInt | Annotated[StrictStr, StringConstraints(min_length=1, max_length=64)]
_Name = Annotated[StrictStr, StringConstraints(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._/-]{0,99})$")]
_STRICT = ConfigDict(extra="forbid")


class ProtocolError(Exception):
    """A request the broadcaster refuses; becomes an error frame for request ``request_id``."""

    def __init__(self, code: ErrorCode, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Pattern:
    """What a subscription matches: one channel, an exchange (or ``*``) and a symbol (or ``*``)."""

    channel: str
    exchange: str
    symbol: str

    def as_dict(self) -> dict[str, str]:
        return {"channel": self.channel, "exchange": self.exchange, "symbol": self.symbol}


@validated_dataclass(frozen=True, config=_STRICT)
class Subscribe:
    """Start receiving the records of ``channel`` for ``exchange``/``symbol`` (either may be ``*``)."""

    id: RequestId
    op: Literal["subscribe"]
    channel: StrictStr
    exchange: _Name
    symbol: _Name

    @property
    def pattern(self) -> Pattern:
        return Pattern(self.channel, self.exchange, self.symbol)


@validated_dataclass(frozen=True, config=_STRICT)
class Unsubscribe:
    """Stop a subscription made with exactly the same channel, exchange and symbol."""

    id: RequestId
    op: Literal["unsubscribe"]
    channel: StrictStr
    exchange: _Name
    symbol: _Name

    @property
    def pattern(self) -> Pattern:
        return Pattern(self.channel, self.exchange, self.symbol)


@validated_dataclass(frozen=True, config=_STRICT)
class ListSubscriptions:
    """Ask for the connection's current subscriptions."""

    id: RequestId
    op: Literal["list"]


@validated_dataclass(frozen=True, config=_STRICT)
class Ping:
    """Application-level liveness check; answered by an ack."""

    id: RequestId
    op: Literal["ping"]


Request = Subscribe | Unsubscribe | ListSubscriptions | Ping
_REQUEST: TypeAdapter[Request] = TypeAdapter(Annotated[Request, Field(discriminator="op")])
_ID: TypeAdapter[RequestId] = TypeAdapter(RequestId)


def _request_id(body: dict[str, Any]) -> RequestId | None:
    try:
        return _ID.validate_python(body.get("id"))
    except ValidationError:
        return None


def _describe(exc: ValidationError) -> str:
    """The first validation problem, short and naming the field (pydantic's own text is long)."""
    err = exc.errors()[0]
    location = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
    # Discriminated unions put the op value first in the location; keep only the field name.
    field = location.split(".")[-1] if location else ""
    if err["type"] == "missing":
        return f"field {field!r} is required"
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown field {field!r}"
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return "'op' must be one of subscribe, unsubscribe, list, ping"
    if err["type"] == "string_pattern_mismatch":
        return f"{field!r} must be '*' or 1-100 characters of letters, digits, '.', '_', '/', '-'"
    return f"{field!r}: {err['msg']}" if field else err["msg"]


def request_id_of(frame: str) -> RequestId | None:
    """The ``id`` of a frame that is refused before validation (rate limit), when it has a usable one."""
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return _request_id(body) if isinstance(body, dict) else None


def parse_request(frame: str | bytes, channels: Collection[str]) -> Request:
    """Validate one client frame; raises ProtocolError with the code the client should see."""
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(ErrorCode.MALFORMED_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(ErrorCode.MALFORMED_JSON, "frame must be a JSON object")
    request_id = _request_id(body)
    if "id" not in body:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "field 'id' is required")
    if request_id is None:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "'id' must be an integer or a string of 1-64 characters")
    try:
        request = _REQUEST.validate_python(body)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, _describe(exc), request_id) from None
    if isinstance(request, Subscribe | Unsubscribe) and request.channel not in channels:
        raise ProtocolError(
            ErrorCode.UNKNOWN_CHANNEL,
            f"unknown channel {request.channel!r}; channels: {', '.join(sorted(channels))}",
            request_id,
        )
    return request
