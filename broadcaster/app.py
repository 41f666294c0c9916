"""The FastAPI application: websocket endpoint, health, readiness, metrics, the live page.

``uvicorn broadcaster.app:create_app --factory`` or ``python -m broadcaster`` (which also sets the websocket
frame limit from the settings). The Kafka feed starts with the application and stops with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from broadcaster.feed import KafkaFeed, replica_id
from broadcaster.hub import Hub
from broadcaster.metrics import BroadcasterMetrics
from broadcaster.session import serve_websocket
from broadcaster.settings import BroadcasterSettings, load_settings
from connectors.config import Settings
from connectors.config import settings as kafka_settings

__all__ = ["STATIC_DIR", "create_app"]

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"


def create_app(settings: BroadcasterSettings | None = None, kafka: Settings | None = None) -> FastAPI:
    """A broadcaster application; settings default to the environment's."""
    config = settings or load_settings()
    kafka_config = kafka or kafka_settings()
    replica = replica_id()
    metrics = BroadcasterMetrics()
    hub = Hub(config.topics, config.broadcaster_max_subscriptions, metrics)
    feed = KafkaFeed(kafka_config, config, metrics, hub.dispatch, replica)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        feed.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await asyncio.to_thread(feed.stop)

    app = FastAPI(title="marketpipe broadcaster", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.hub = hub
    app.state.feed = feed
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/protocol", response_class=PlainTextResponse)
    async def protocol() -> PlainTextResponse:
        """The protocol description (PROTOCOL.md)."""
        return PlainTextResponse((PACKAGE_DIR / "PROTOCOL.md").read_text(), media_type="text/markdown")

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the process and its Kafka consumer thread are alive."""
        status = feed.status()
        body = {"status": "ok" if status.running else "failed", "replica": replica, "error": status.error}
        return JSONResponse(body, status_code=200 if status.running else 503)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """200 once every partition is assigned and read up to where it was at start-up."""
        status = feed.status()
        metrics.ready.set(1 if status.ready else 0)
        body = {
            "ready": status.ready,
            "replica": replica,
            "partitions": status.partitions,
            "partitions_behind": status.behind,
            "missing_topics": list(status.missing_topics),
            "error": status.error,
        }
        return JSONResponse(body, status_code=200 if status.ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.ready.set(1 if feed.status().ready else 0)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/instruments")
    async def instruments() -> dict[str, dict[str, list[str]]]:
        """Keys seen since start-up, per channel (what the page offers)."""
        return {"channels": hub.instruments()}

    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await serve_websocket(ws, hub, config, replica)

    return app
