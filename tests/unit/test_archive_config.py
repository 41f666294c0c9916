"""Archive settings (connectors.archive_config): defaults, validation with the variable named, S3 options."""

from __future__ import annotations

import pytest

from connectors.archive_config import ArchiveSettings, archive_settings
from connectors.config import ConfigError


def test_defaults_archive_zstd_json_lines_and_analytics_sized_parquet_into_a_local_directory() -> None:
    config = ArchiveSettings()
    assert config.archive_url == "var/archive" and config.archive_raw_compression == "zstd"
    assert config.storage_options() == {}
    assert config.archive_row_group_rows >= 10_000 and config.archive_max_open_files >= 1


def test_s3_settings_become_s3fs_options_and_extra_options_are_merged() -> None:
    config = ArchiveSettings(
        archive_url="s3://bucket/prefix/",
        archive_s3_endpoint_url="http://127.0.0.1:9000",
        archive_s3_region="eu-west-1",
        archive_s3_access_key_id="id",
        archive_s3_secret_access_key="s3cr3t-value",
        archive_storage_options='{"anon": false}',
    )
    assert config.archive_url == "s3://bucket/prefix"
    assert config.storage_options() == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"},
        "key": "id",
        "secret": "s3cr3t-value",
        "anon": False,
    }
    assert "s3cr3t-value" not in repr(config)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ARCHIVE_URL", "nosuchfs://x", "ARCHIVE_URL"),
        ("ARCHIVE_RAW_COMPRESSION", "lz4", "ARCHIVE_RAW_COMPRESSION"),
        ("ARCHIVE_ROTATE_ROWS", "0", "ARCHIVE_ROTATE_ROWS"),
        ("ARCHIVE_ROTATE_SECONDS", "-1", "ARCHIVE_ROTATE_SECONDS"),
        ("ARCHIVE_S3_ENDPOINT_URL", "minio:9000", "ARCHIVE_S3_ENDPOINT_URL"),
        ("ARCHIVE_STORAGE_OPTIONS", "[1]", "ARCHIVE_STORAGE_OPTIONS"),
    ],
)
def test_an_invalid_variable_stops_start_up_with_its_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    archive_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match=message):
            archive_settings()
    finally:
        archive_settings.cache_clear()
