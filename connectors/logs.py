"""Logging for every process: one JSON object per line in production, readable text locally.

``LOG_FORMAT=json`` (the Kubernetes manifests set it) or ``text`` (default); ``LOG_LEVEL`` as usual.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import orjson

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...extra fields, "exc"}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str | None = None, fmt: str | None = None) -> None:
    """Set up the root logger once per process (idempotent)."""
    root = logging.getLogger()
    if getattr(root, "_marketpipe_service", None) == service:
        return
    handler = logging.StreamHandler(sys.stderr)
    if (fmt or os.environ.get("LOG_FORMAT", "text")).lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "INFO")).upper())
    root._marketpipe_service = service  # type: ignore[attr-defined]
