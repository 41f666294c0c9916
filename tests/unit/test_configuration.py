"""One configuration check across components, and the README's table generated from the same fields."""

from __future__ import annotations

from pathlib import Path

from connectors.configuration import check_all, markdown_table, variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_documents_every_setting_in_one_generated_table() -> None:
    text = README.read_text()
    assert markdown_table() in text, "regenerate the table: python -m connectors.configuration --markdown"
    names = variables()
    assert len(names) == len(set(names)) > 80
    assert {"KAFKA_BROKERS", "DATABASE_URL", "ARCHIVE_URL", "COLLECTOR_CONFIG", "EVM_RPC_URL", "BROADCASTER_PORT"} <= (
        set(names)
    )


def test_the_defaults_are_a_working_configuration() -> None:
    assert check_all({}) == []


def test_every_invalid_setting_is_named_once_across_components(tmp_path: Path) -> None:
    problems = check_all(
        {
            "KAFKA_BROKERS": "kafka-without-port",
            "ARCHIVE_URL": "nosuchfs://bucket/prefix",
            "EVM_RPC_URL": "ftp://node",
            "BROADCASTER_PORT": "eighty",
            "DATABASE_URL": "postgresql://user@db/market",
        }
    )
    named = [problem.split(":", 1)[0] for problem in problems]
    assert sorted(named) == ["ARCHIVE_URL", "BROADCASTER_PORT", "EVM_RPC_URL", "KAFKA_BROKERS"], problems
    assert any("'kafka-without-port' is not host:port" in problem for problem in problems)


def test_an_unknown_venue_or_missing_collector_file_is_reported() -> None:
    (unknown,) = check_all({"COLLECTOR_VENUES": "binance,nosuchvenue"})
    assert "unknown venue 'nosuchvenue'" in unknown and "known: binance" in unknown
    (missing,) = check_all({"COLLECTOR_CONFIG": "/nonexistent/collector.toml"})
    assert missing.startswith("COLLECTOR_CONFIG") and "does not exist" in missing
