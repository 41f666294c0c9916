"""An embedded S3 endpoint: moto's server mode (``moto[server]``), the same setup s3fs tests itself against."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from embedded.process import ManagedProcess, free_port, wait_until

__all__ = ["MotoS3"]

#: moto accepts any credentials; these make botocore and s3fs sign requests without a real account.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoS3:
    """moto's S3 on ``endpoint_url`` (http://127.0.0.1:port)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            workdir / f"moto-{self.port}.log",
        )

    def _ready(self) -> bool:
        self.process.check_alive()
        with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)

    def start(self, timeout: float = 30.0) -> Self:
        self.process.start()
        wait_until(self._ready, timeout, f"moto S3 on {self.endpoint_url}")
        return self

    def stop(self) -> None:
        self.process.stop(timeout=5.0)

    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this endpoint."""
        return {
            "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    def create_bucket(self, name: str) -> None:
        import s3fs

        s3fs.S3FileSystem(**self.storage_options()).mkdir(name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
