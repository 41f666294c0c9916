"""Configuration of the object-storage archives (``flows.archive_raw``, ``flows.archive_parquet``).

Environment variables, validated once at start-up; the field names are the variable names in lower case. Kafka
settings come from `connectors.config.Settings`. S3 credentials follow botocore's usual chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, instance roles, ...) unless given here.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Literal

import fsspec
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.config import load_settings

__all__ = ["ArchiveSettings", "archive_settings"]

MIB = 1024 * 1024


class ArchiveSettings(BaseSettings):
    """Where and how the archive flows write files."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    archive_url: str = Field(
        "var/archive",
        description="fsspec URL of the archive root: a local directory (default) or s3://bucket/prefix.",
    )
    archive_raw_compression: Literal["zstd", "gzip"] = Field(
        "zstd", description="Compression of the raw JSON Lines files (.jsonl.zst or .jsonl.gz)."
    )
    archive_rotate_rows: int = Field(1_000_000, ge=1, description="Close a file when it holds this many records.")
    archive_rotate_bytes: int = Field(
        256 * MIB, ge=1, description="Close a file when its records' Kafka values add up to this many bytes."
    )
    archive_rotate_seconds: float = Field(
        900.0,
        gt=0,
        description="Close a file this many seconds (wall clock) after its first record, even on a quiet partition.",
    )
    archive_row_group_rows: int = Field(100_000, ge=1, description="Parquet rows per row group (at most).")
    archive_row_group_bytes: int = Field(
        128 * MIB, ge=1, description="Parquet row group size bound, counted in Kafka value bytes."
    )
    archive_max_open_files: int = Field(
        32,
        ge=1,
        description="Open files (in-memory buffers) per worker; opening one more closes the oldest first.",
    )
    archive_parquet_topics: str = Field(
        "",
        description="Comma-separated topics for archive_parquet; empty = every standardized topic that exists.",
    )
    archive_s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (MinIO, Ceph, R2, ...); unset = AWS S3."
    )
    archive_s3_region: str | None = Field(None, description="S3 region; unset = botocore's default chain.")
    archive_s3_access_key_id: str | None = Field(None, description="S3 access key; unset = AWS_* variables.")
    archive_s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    archive_storage_options: str = Field(
        "{}", description="JSON object of extra fsspec storage options, merged over the S3 settings above."
    )

    @field_validator("archive_url")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("ARCHIVE_URL is empty")
        protocol = value.split("://", 1)[0] if "://" in value else "file"
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            raise ValueError(f"ARCHIVE_URL {value!r}: no filesystem for {protocol!r}: {exc}") from None
        return value.rstrip("/")

    @field_validator("archive_s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"ARCHIVE_S3_ENDPOINT_URL {value!r} must start with http:// or https://")
        return value or None

    @field_validator("archive_storage_options")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"ARCHIVE_STORAGE_OPTIONS is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ValueError("ARCHIVE_STORAGE_OPTIONS must be a JSON object")
        return value or "{}"

    @property
    def parquet_topics(self) -> list[str]:
        return [t.strip() for t in self.archive_parquet_topics.split(",") if t.strip()]

    def storage_options(self) -> dict[str, Any]:
        """fsspec options for ``archive_url`` (only S3 takes the S3 settings)."""
        options: dict[str, Any] = {}
        if self.archive_url.startswith(("s3://", "s3a://")):
            client_kwargs: dict[str, Any] = {}
            if self.archive_s3_endpoint_url:
                client_kwargs["endpoint_url"] = self.archive_s3_endpoint_url
            if self.archive_s3_region:
                client_kwargs["region_name"] = self.archive_s3_region
            if client_kwargs:
                options["client_kwargs"] = client_kwargs
            if self.archive_s3_access_key_id:
                options["key"] = self.archive_s3_access_key_id
            if self.archive_s3_secret_access_key:
                options["secret"] = self.archive_s3_secret_access_key.get_secret_value()
        options.update(json.loads(self.archive_storage_options))
        return options


@cache
def archive_settings() -> ArchiveSettings:
    """The process's archive settings; raises ConfigError listing every invalid variable."""
    return load_settings(ArchiveSettings, "archive configuration")
