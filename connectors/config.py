"""All configuration, from environment variables, validated once at start-up with clear errors.

Every setting is documented in the README's configuration table; the field names below are the environment
variable names in lower case.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["FIRST_OFFSET", "ConfigError", "Settings", "load_settings", "settings"]

#: Where a consumer reads a partition "from the beginning": offset 0, with ``auto.offset.reset=earliest`` (in
#: `Settings.kafka_consumer_config`) for a log whose start retention has deleted. Not ``OFFSET_BEGINNING``: Tansu
#: answers that lookup with the batch stored first in time, and when producers race on a partition that can be a
#: batch above offset 0, so the records below it would be skipped.
FIRST_OFFSET = 0


class ConfigError(RuntimeError):
    """Configuration that cannot work, with every problem listed."""


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(cls: type[SettingsT], what: str = "configuration", **overrides: Any) -> SettingsT:
    """``cls`` from the environment (``overrides`` taking precedence); ConfigError names every invalid variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or what}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid {what}: {problems}") from None


class Settings(BaseSettings):
    """Pipeline configuration (environment variables, case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # -- Kafka -----------------------------------------------------------------------------------------------
    kafka_brokers: str = Field("127.0.0.1:9092", description="Comma-separated bootstrap servers.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: str | None = Field(None, description="SASL password (keep it in a Secret).")
    kafka_ssl_ca_location: str | None = Field(
        None, description="CA certificate file that signed the brokers' certificates."
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent Schema Registry URL; unset = registry-free Avro single-object encoding."
    )
    topic_partitions: str = Field(
        "default=4,raw=8", description="Partitions per topic when the pipeline creates topics: name=count,..."
    )
    topic_replication: int = Field(1, ge=1, description="Replication factor of topics the pipeline creates.")
    kafka_max_message_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1_000_000,
        description="Largest record produced (a Coinbase level-2 snapshot frame is ~6 MB); set on created topics.",
    )
    raw_topic: str = Field("raw", description="Topic of raw venue frames (collectors and replay write it).")
    dead_letter_topic: str = Field("dead_letter", description="Topic of rejected inputs, each with its reason.")
    consumer_batch_size: int = Field(1000, ge=1, description="Most records a Kafka input hands a flow at once.")
    kafka_delivery_timeout_ms: int = Field(
        300_000,
        ge=100,
        description="How long a producer retries a record (librdkafka message.timeout.ms) before the flow stops "
        "with the error, to restart from its last snapshot.",
    )
    kafka_fetch_wait_max_ms: int = Field(
        10,
        ge=0,
        le=10_000,
        description="Longest a broker may hold a flow's or the broadcaster's fetch waiting for data (librdkafka "
        "fetch.wait.max.ms): low keeps latency low on brokers that hold fetches open (Tansu).",
    )
    kafka_stop_at_end: bool = Field(
        False, description="Flows stop when they reach the end of their input topics (backfills, tests)."
    )

    # -- replay ----------------------------------------------------------------------------------------------
    replay_captures: str | None = Field(None, description="Comma-separated capture files (globs) for flows.replay.")
    replay_venue: str | None = Field(None, description="Venue of hftbacktest captures (cryptofeed ones name it).")

    # -- observability ---------------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="text locally; json = one object per line.")

    # -- normalize -------------------------------------------------------------------------------------------
    book_snapshot_interval_s: float = Field(
        60.0,
        ge=0,
        description="Re-publish full books every N seconds of event time (0 = venue snapshots only).",
    )

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers(cls, value: str) -> str:
        brokers = [b.strip() for b in value.split(",") if b.strip()]
        if not brokers:
            raise ValueError("KAFKA_BROKERS is empty")
        for broker in brokers:
            host, _, port = broker.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"KAFKA_BROKERS entry {broker!r} is not host:port")
        return ",".join(brokers)

    @field_validator("topic_partitions")
    @classmethod
    def _partitions(cls, value: str) -> str:
        for item in value.split(","):
            name, sep, count = item.strip().partition("=")
            if not sep or not name or not count.isdigit() or int(count) < 1:
                raise ValueError(f"TOPIC_PARTITIONS entry {item!r} is not name=positive-count")
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"SCHEMA_REGISTRY_URL {value!r} must start with http:// or https://")
        return value or None

    @property
    def brokers(self) -> list[str]:
        return self.kafka_brokers.split(",")

    def partitions_for(self, topic: str) -> int:
        table = dict(item.strip().split("=") for item in self.topic_partitions.split(","))
        return int(table.get(topic, table.get("default", "4")))

    def kafka_consumer_config(self) -> dict[str, str]:
        """librdkafka settings of the flows' Kafka inputs."""
        return {
            **self.kafka_client_config(),
            "fetch.wait.max.ms": str(self.kafka_fetch_wait_max_ms),
            "auto.offset.reset": "earliest",
        }

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by producers, consumers and the admin client."""
        config: dict[str, str] = {
            "bootstrap.servers": self.kafka_brokers,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password
        if self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config


@cache
def settings() -> Settings:
    """The process's settings; raises ConfigError listing every invalid variable."""
    return load_settings(Settings)
