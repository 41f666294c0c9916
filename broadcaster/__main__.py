"""``python -m broadcaster``: run the broadcaster on uvicorn with the configured address and frame limit."""

from __future__ import annotations

import sys

import uvicorn

from broadcaster.app import create_app
from broadcaster.settings import load_settings
from connectors.config import ConfigError
from connectors.config import settings as kafka_settings
from connectors.logs import configure_logging

__all__ = ["main"]

#: Frames larger than this are refused by the websocket layer itself (close 1009), before the application
#: sees them; frames up to it but over BROADCASTER_MAX_FRAME_BYTES get a ``frame_too_large`` error frame.
TRANSPORT_FRAME_LIMIT = 1_048_576


def main() -> None:
    configure_logging("broadcaster")
    try:
        config = load_settings()
        kafka = kafka_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    uvicorn.run(
        create_app(config, kafka),
        host=config.broadcaster_host,
        port=config.broadcaster_port,
        ws_max_size=max(TRANSPORT_FRAME_LIMIT, config.broadcaster_max_frame_bytes),
        ws_ping_interval=config.broadcaster_ping_interval_s,
        ws_ping_timeout=config.broadcaster_ping_interval_s,
        ws_per_message_deflate=config.broadcaster_per_message_deflate,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(config.broadcaster_close_timeout_s) + 1,
    )


if __name__ == "__main__":
    main()
