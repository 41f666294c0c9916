"""What to collect: venues, their instruments and channels, and endpoint overrides, from a TOML or JSON file.

    # collector.toml
    [venues.binance]
    instruments = ["BTC.USDT", "ETH.USDT"]   # normalized (BTC.USDT, BTC.USDT-PERP) or venue symbols (BTCUSDT)
    channels = ["depth@100ms", "aggTrade"]   # the venue's channel names
    endpoint = "http://127.0.0.1:9001"       # optional: another origin for websockets and REST (the simulator)

    [venues.coinbase]                        # instruments and channels default to the venue's

JSON holds the same: ``{"venues": {"binance": {"instruments": ["BTC.USDT"]}, "coinbase": {}}}``. Without a file,
``COLLECTOR_VENUES`` (default: every venue) are collected with their defaults. ``COLLECTOR_ENDPOINTS`` overrides
the file's endpoints. Everything is validated before any connection opens, and every problem is reported.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connectors.collector.settings import CollectorSettings, endpoint_origin
from connectors.config import ConfigError
from operators.venues import VENUES
from operators.venues.live import LiveSpec

__all__ = [
    "CollectorConfig",
    "CollectorConfigError",
    "VenueConfig",
    "VenueSelection",
    "live_specs",
    "load_selections",
    "parse_config",
    "with_origin",
]

_WS_SCHEMES = {"http": "ws", "https": "wss"}
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


class CollectorConfigError(ConfigError):
    """A collector configuration that cannot work, with every problem listed."""


def live_specs() -> dict[str, LiveSpec]:
    """Venue id -> live declaration, for every venue the collector can connect to."""
    return {name: venue.live for name, venue in VENUES.items() if venue.live is not None}


def _names(values: list[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    names = [value.strip() for value in values]
    if any(not name for name in names):
        raise ValueError(f"{what} must not be empty strings")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} are listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return names


class VenueConfig(BaseModel):
    """One venue's section of the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instruments: list[str] | None = Field(
        None, min_length=1, description="Normalized or venue symbols; default: the venue's top instruments."
    )
    channels: list[str] | None = Field(
        None, min_length=1, description="The venue's channel names; default: book, trades, ticker and more."
    )
    endpoint: str | None = Field(None, description="Origin replacing the venue's (scheme://host:port).")

    @field_validator("instruments")
    @classmethod
    def _instruments(cls, value: list[str] | None) -> list[str] | None:
        return _names(value, "instruments")

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[str] | None) -> list[str] | None:
        return _names(value, "channels")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return endpoint_origin(value) if value is not None else None


class CollectorConfig(BaseModel):
    """The whole file: venue id -> section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    venues: dict[str, VenueConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_venues_and_channels(self) -> CollectorConfig:
        specs = live_specs()
        problems = []
        for name, section in self.venues.items():
            spec = specs.get(name)
            if spec is None:
                problems.append(f"unknown venue {name!r}; known: {', '.join(sorted(specs))}")
                continue
            for channel in section.channels or ():
                if not spec.accepts_channel(channel):
                    problems.append(f"{name}: unknown channel {channel!r}; {name} channels: {', '.join(spec.channels)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _problems(exc: ValidationError) -> str:
    out = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {message}" if where else message)
    return "; ".join(out)


def parse_config(data: Any, source: str) -> CollectorConfig:
    """Validate decoded configuration ``data``; CollectorConfigError lists every problem, naming ``source``."""
    try:
        return CollectorConfig.model_validate(data)
    except ValidationError as exc:
        raise CollectorConfigError(f"invalid collector configuration in {source}: {_problems(exc)}") from None


def _read_file(path: Path) -> CollectorConfig:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else orjson.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, orjson.JSONDecodeError) as exc:
        raise CollectorConfigError(f"cannot read collector configuration {path}: {exc}") from None
    return parse_config(data, str(path))


def with_origin(url: str, origin: str, websocket: bool) -> str:
    """``url`` with its scheme, host and port taken from ``origin`` (schemes mapped to ws/wss or http/https)."""
    new = urlsplit(origin)
    scheme = (_WS_SCHEMES if websocket else _HTTP_SCHEMES).get(new.scheme, new.scheme)
    old = urlsplit(url)
    return urlunsplit((scheme, new.netloc, old.path, old.query, ""))


@dataclass(frozen=True)
class VenueSelection:
    """One venue to collect: defaults applied, its endpoint override in place."""

    name: str
    spec: LiveSpec
    instruments: tuple[str, ...]
    channels: tuple[str, ...]


def _selection(name: str, spec: LiveSpec, section: VenueConfig, endpoint: str | None) -> VenueSelection:
    if endpoint is not None:
        spec = dataclasses.replace(
            spec, ws_url=with_origin(spec.ws_url, endpoint, True), rest_url=with_origin(spec.rest_url, endpoint, False)
        )
    return VenueSelection(
        name,
        spec,
        tuple(section.instruments or spec.default_instruments),
        tuple(section.channels or spec.default_channels),
    )


def load_selections(settings: CollectorSettings) -> list[VenueSelection]:
    """The venues to collect, from the file or the venue list, with endpoint overrides applied."""
    specs = live_specs()
    if settings.collector_config is not None:
        config = _read_file(settings.collector_config)
    else:
        names = settings.venue_ids or sorted(specs)
        config = parse_config({"venues": {name: {} for name in names}}, "COLLECTOR_VENUES")
    overrides: Mapping[str, str] = settings.endpoints
    unknown = sorted(set(overrides) - set(config.venues))
    if unknown:
        raise CollectorConfigError(
            f"COLLECTOR_ENDPOINTS names venues that are not collected: {', '.join(unknown)}; "
            f"collected: {', '.join(config.venues)}"
        )
    return [
        _selection(name, specs[name], section, overrides.get(name, section.endpoint))
        for name, section in config.venues.items()
    ]
