"""The collector's environment settings (field names are the environment variables in lower case).

What to collect lives in a configuration file (`connectors.collector.config`); these settings point at it and
tune connection health. They will join `connectors.config.Settings`; the names are unique for that merge.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.config import load_settings

__all__ = ["CollectorSettings", "collector_settings", "endpoint_origin", "load_collector_settings", "parse_endpoints"]

_SCHEMES = ("http", "https", "ws", "wss")


def endpoint_origin(url: str) -> str:
    """``url`` checked to be an origin (``scheme://host[:port]``, no path); ValueError says what is wrong."""
    problem = f"endpoint {url!r} is not a URL like http://host:port (scheme http, https, ws or wss, no path)"
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"{problem}: {exc}") from None
    if parts.scheme not in _SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(problem)
    if parts.query or parts.fragment or parts.username:
        raise ValueError(problem)
    return f"{parts.scheme}://{parts.netloc}"


def parse_endpoints(text: str | None) -> dict[str, str]:
    """``venue=URL,venue=URL`` -> {venue: origin}; ValueError names the bad entry."""
    endpoints: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        venue, sep, url = item.partition("=")
        if not sep or not venue.strip():
            raise ValueError(f"COLLECTOR_ENDPOINTS entry {item.strip()!r} is not venue=URL")
        endpoints[venue.strip()] = endpoint_origin(url)
    return endpoints


class CollectorSettings(BaseSettings):
    """Collector settings from the environment (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    collector_config: Path | None = Field(
        None,
        description="TOML or JSON file naming the venues, instruments, channels and endpoints to collect; "
        "unset = every venue in COLLECTOR_VENUES with its defaults.",
    )
    collector_venues: str | None = Field(
        None, description="Comma-separated venue ids collected with their defaults when no file is given (unset = all)."
    )
    collector_endpoints: str | None = Field(
        None,
        description="Per-venue endpoint overrides, venue=URL,...: the URL's scheme, host and port replace the venue's "
        "for websockets and REST alike (http maps to ws, https to wss), e.g. binance=http://127.0.0.1:9001.",
    )
    collector_backoff_min_s: float = Field(0.5, gt=0, description="First reconnect delay (seconds), before jitter.")
    collector_backoff_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay (seconds).")
    collector_rotation_interval_s: float | None = Field(
        None,
        gt=0,
        description="Planned reconnect of every connection after this many seconds; unset = each venue's own "
        "(Binance: 23 h, before its forced disconnect at 24 h).",
    )
    collector_open_timeout_s: float = Field(
        10.0, gt=0, description="Timeout (seconds) of a websocket handshake and of one REST request."
    )

    @field_validator("collector_config")
    @classmethod
    def _config_file(cls, value: Path | None) -> Path | None:
        if value is None or not str(value).strip():
            return None
        if value.suffix.lower() not in (".toml", ".json"):
            raise ValueError(f"COLLECTOR_CONFIG {str(value)!r} must be a .toml or .json file")
        if not value.is_file():
            raise ValueError(f"COLLECTOR_CONFIG {str(value)!r} does not exist")
        return value

    @field_validator("collector_endpoints")
    @classmethod
    def _endpoints(cls, value: str | None) -> str | None:
        parse_endpoints(value)
        return value or None

    @model_validator(mode="after")
    def _backoff_range(self) -> Self:
        if self.collector_backoff_max_s < self.collector_backoff_min_s:
            raise ValueError(
                f"COLLECTOR_BACKOFF_MAX_S ({self.collector_backoff_max_s}) is below "
                f"COLLECTOR_BACKOFF_MIN_S ({self.collector_backoff_min_s})"
            )
        return self

    @property
    def endpoints(self) -> dict[str, str]:
        return parse_endpoints(self.collector_endpoints)

    @property
    def venue_ids(self) -> list[str] | None:
        if not self.collector_venues:
            return None
        return [name.strip() for name in self.collector_venues.split(",") if name.strip()]


def load_collector_settings(**overrides: Any) -> CollectorSettings:
    """Settings from the environment, ``overrides`` taking precedence; ConfigError lists every invalid one."""
    return load_settings(CollectorSettings, "collector configuration", **overrides)


@cache
def collector_settings() -> CollectorSettings:
    """The process's collector settings (from the environment, validated once)."""
    return load_collector_settings()
