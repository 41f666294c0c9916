"""Every setting of every component, validated together; the source of the README's configuration table.

    python -m connectors.configuration             # validate this environment; print the effective settings
    python -m connectors.configuration --markdown  # the README's table of every variable

Each component reads its own section at start-up (``connectors.config.settings()``, ``archive_settings()``, ...)
and stops with a `ConfigError` naming every invalid variable; this module checks all sections at once, which is
what a deployment wants before it starts anything (the demo does it first, the Kubernetes image can run it as
an init step).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from broadcaster.settings import BroadcasterSettings
from connectors.archive_config import ArchiveSettings
from connectors.collector.config import load_selections
from connectors.collector.settings import CollectorSettings, load_collector_settings
from connectors.config import ConfigError, Settings, load_settings
from connectors.evm.settings import EvmSettings
from connectors.postgres_config import PostgresLoaderSettings

__all__ = ["SECTIONS", "Section", "check_all", "markdown_table", "variables"]

#: Variables whose values are never printed.
_SECRET_WORDS = ("password", "secret", "api_keys", "database_url")


@dataclass(frozen=True, slots=True)
class Section:
    """One component's settings: its class, who reads it, and the fields it adds to the shared ones."""

    title: str
    settings: type[BaseSettings]
    used_by: str

    def own_fields(self) -> list[str]:
        inherited = set(Settings.model_fields) if self.settings is not Settings else set()
        return [name for name in self.settings.model_fields if name not in inherited]


SECTIONS: tuple[Section, ...] = (
    Section("Kafka, topics, logs", Settings, "every flow, the broadcaster"),
    Section("Exchange collector", CollectorSettings, "flows.collect_cex"),
    Section("Ethereum", EvmSettings, "flows.collect_evm, flows.normalize_evm"),
    Section("Archives", ArchiveSettings, "flows.archive_raw, flows.archive_parquet"),
    Section("Postgres loader", PostgresLoaderSettings, "flows.load_postgres"),
    Section("Broadcaster", BroadcasterSettings, "python -m broadcaster"),
)


def variables() -> list[str]:
    """Every environment variable the project reads, upper case, in table order."""
    return [name.upper() for section in SECTIONS for name in section.own_fields()]


def _section_problems() -> list[str]:
    problems: dict[str, None] = {}  # each variable's problem once, though several sections read it
    for section in SECTIONS:
        try:
            section.settings()
        except ValidationError as exc:
            for error in exc.errors():
                name = ".".join(str(part) for part in error["loc"]).upper() or section.title
                problems[f"{name}: {error['msg']}"] = None
    return list(problems)


def check_all(environ: Mapping[str, str] | None = None) -> list[str]:
    """The problems of every section (empty when all is valid); ``environ`` defaults to the process's.

    Beyond each variable on its own, the collector's venue selection is resolved (the file parsed, every venue
    and endpoint override known), as ``flows.collect_cex`` does at start-up.
    """
    saved = dict(os.environ)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        problems = _section_problems()
        if not any(problem.startswith("COLLECTOR_") for problem in problems):
            try:
                load_selections(load_collector_settings())
            except ConfigError as exc:
                problems.append(str(exc))
        return problems
    finally:
        if environ is not None:
            os.environ.clear()
            os.environ.update(saved)


def _default(section: Section, name: str) -> str:
    field = section.settings.model_fields[name]
    if field.is_required():
        return "required"
    value = field.default
    if value is None or value == "":
        return "unset"
    return f"`{value}`"


def markdown_table() -> str:
    """The README's configuration table: variable, default, read by, meaning."""
    lines = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for section in SECTIONS:
        for name in section.own_fields():
            field = section.settings.model_fields[name]
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{name.upper()}` | {_default(section, name)} | {section.used_by} | {description} |")
    return "\n".join(lines)


def _shown(name: str, value: object) -> str:
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, SecretStr) or any(word in name for word in _SECRET_WORDS):
        return "(set, hidden)"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.configuration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the README's table of every variable")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table())
        return 0
    problems = check_all()
    if problems:
        print("The configuration cannot work:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    for section in SECTIONS:
        values = load_settings(section.settings, section.title)
        print(f"[{section.title}]  ({section.used_by})")
        for name in section.own_fields():
            print(f"  {name.upper():<36} {_shown(name, getattr(values, name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
