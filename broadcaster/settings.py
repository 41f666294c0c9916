"""Broadcaster configuration from environment variables (``BROADCASTER_*``), validated once at start-up.

Kafka connection settings (``KAFKA_BROKERS``, SASL, TLS, ``SCHEMA_REGISTRY_URL``) are the pipeline's own, read
by `connectors.config.Settings`; this class holds only what the websocket service adds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.config import load_settings as load_env_settings
from schemas import CEX_TOPICS, CHAIN_TOPICS

__all__ = ["BroadcasterSettings", "load_settings"]

ConsumerMode = Literal["assign", "unique_group"]
SlowClientPolicy = Literal["disconnect", "conflate"]


class BroadcasterSettings(BaseSettings):
    """Websocket fan-out service settings (environment variables, case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    broadcaster_host: str = Field("127.0.0.1", description="Address the HTTP/websocket server binds to.")
    broadcaster_port: int = Field(8080, ge=1, le=65535, description="Port of the HTTP/websocket server.")
    broadcaster_topics: str = Field(
        ",".join((*CEX_TOPICS, *CHAIN_TOPICS)),
        description="Comma-separated standardized topics served as channels (topics absent from the cluster "
        "are picked up when they appear).",
    )
    broadcaster_consumer_mode: ConsumerMode = Field(
        "assign",
        description="How every replica reads every partition: 'assign' (no consumer group, all partitions "
        "assigned, new partitions picked up) or 'unique_group' (a consumer group of its own per replica).",
    )
    broadcaster_group_prefix: str = Field(
        "marketpipe-broadcaster", min_length=1, description="Prefix of the per-replica consumer group id."
    )
    broadcaster_session_timeout_ms: int = Field(
        10_000, ge=1000, le=300_000, description="Consumer-group session timeout (unique_group mode only)."
    )
    broadcaster_book_lookback_s: float = Field(
        180.0,
        ge=0,
        description="On start, read the lob topic from this many seconds back so books are built before clients "
        "subscribe (longer than the flow's BOOK_SNAPSHOT_INTERVAL_S); 0 = from the end.",
    )
    broadcaster_batch_size: int = Field(1000, ge=1, le=100_000, description="Records per Kafka poll.")
    broadcaster_api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated API keys; empty = no authentication. Clients pass one as ?api_key=, "
        "'Authorization: Bearer <key>' or 'X-API-Key'.",
    )
    broadcaster_allowed_origins: str = Field(
        "",
        description="Comma-separated browser origins allowed besides the page's own origin; '*' = any. "
        "Connections without an Origin header (non-browser clients) are always allowed.",
    )
    broadcaster_max_subscriptions: int = Field(100, ge=1, description="Subscriptions per connection.")
    broadcaster_requests_per_second: float = Field(
        10.0, gt=0, description="Requests per second per connection (token bucket, burst of the same size)."
    )
    broadcaster_max_frame_bytes: int = Field(
        4096, ge=256, le=1_048_576, description="Largest client request frame accepted."
    )
    broadcaster_queue_length: int = Field(
        10_000, ge=10, description="Frames queued per connection before the slow-client policy applies."
    )
    broadcaster_slow_client_policy: SlowClientPolicy = Field(
        "disconnect",
        description="'disconnect': close a client whose queue is full (code 4008); 'conflate': replace its "
        "queued lob and ticker frames by the latest state, disconnecting only if other frames fill the queue.",
    )
    broadcaster_message_bytes: int = Field(
        65_536,
        ge=1024,
        description="Frames are joined with newlines into websocket messages of about this size at most.",
    )
    broadcaster_max_connections: int = Field(
        10_000, ge=1, description="Connections per replica; more are refused with close code 1013."
    )
    broadcaster_ping_interval_s: float = Field(
        20.0,
        gt=0,
        description="Websocket keepalive: ping every N seconds, close a client that does not answer within N.",
    )
    broadcaster_per_message_deflate: bool = Field(
        False,
        description="Offer permessage-deflate compression; it costs CPU per client and message, so it is off.",
    )
    broadcaster_close_timeout_s: float = Field(
        10.0, gt=0, description="How long a close frame may wait behind a stalled client's socket buffer."
    )

    @field_validator("broadcaster_topics")
    @classmethod
    def _topics(cls, value: str) -> str:
        topics = [t.strip() for t in value.split(",") if t.strip()]
        if not topics:
            raise ValueError("BROADCASTER_TOPICS is empty")
        return ",".join(dict.fromkeys(topics))

    @field_validator("broadcaster_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"BROADCASTER_ALLOWED_ORIGINS entry {origin!r} is not '*' or an http(s) origin")
        return ",".join(origins)

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> BroadcasterSettings:
        # One Kafka batch is fanned out at once: a smaller queue would cut off every client of a busy channel.
        if self.broadcaster_queue_length < self.broadcaster_batch_size:
            raise ValueError(
                f"BROADCASTER_QUEUE_LENGTH ({self.broadcaster_queue_length}) must be at least "
                f"BROADCASTER_BATCH_SIZE ({self.broadcaster_batch_size})"
            )
        return self

    @property
    def topics(self) -> list[str]:
        return self.broadcaster_topics.split(",")

    @property
    def api_keys(self) -> frozenset[str]:
        secret = self.broadcaster_api_keys.get_secret_value()
        return frozenset(k.strip() for k in secret.split(",") if k.strip())

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(o for o in self.broadcaster_allowed_origins.split(",") if o)


def load_settings() -> BroadcasterSettings:
    """Settings from the environment; raises ConfigError naming every invalid variable."""
    return load_env_settings(BroadcasterSettings, "broadcaster configuration")
