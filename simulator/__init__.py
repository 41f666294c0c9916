"""A local exchange simulator: serves a recorded capture over real websockets and HTTP.

    python -m simulator --capture data/cex/cryptofeed/BINANCE.jsonl.zst --port 9001 --speed 5

or from code, like the servers in ``embedded/`` (its own process, so it can be killed mid-stream)::

    with Simulator(Path("data/cex/cryptofeed/OKX.jsonl.zst"), workdir) as sim:
        ...  # COLLECTOR_ENDPOINTS=okx=<sim.url>

``recording`` reads captures, ``server`` serves them (see its docstring for the matching rules), ``shipped``
names what each capture in ``data/cex/cryptofeed`` subscribed, and ``python -m simulator.fleet`` serves them all
with a collector configuration to match.
"""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from embedded.process import ManagedProcess, free_port, port_open, wait_until

__all__ = ["Simulator"]

_REPO = Path(__file__).resolve().parents[1]


class Simulator:
    """``python -m simulator`` as a child process on 127.0.0.1; ``url`` is its origin (``http://127.0.0.1:N``)."""

    def __init__(
        self,
        capture: Path,
        workdir: Path,
        port: int | None = None,
        speed: float = 1.0,
        venue: str | None = None,
    ) -> None:
        self.capture = capture
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "simulator", "--capture", str(capture), "--port", str(self.port)]
        argv += ["--speed", str(speed)] + (["--venue", venue] if venue else [])
        self.process = ManagedProcess("simulator", argv, workdir / f"simulator-{self.port}.log", cwd=_REPO)

    def _ready(self) -> bool:
        self.process.check_alive()
        return port_open("127.0.0.1", self.port)

    def start(self, timeout: float = 30.0) -> Self:
        """Start (or restart, on the same port) and wait until it accepts connections."""
        self.process.start()
        wait_until(self._ready, timeout, f"simulator of {self.capture.name} on port {self.port}")
        return self

    def info(self) -> dict[str, Any]:
        """What ``GET /__simulator__`` says: recorded connections, sessions playing and played per connection."""
        with urllib.request.urlopen(f"{self.url}/__simulator__", timeout=10) as response:
            info: dict[str, Any] = orjson.loads(response.read())
        return info

    def stop(self) -> None:
        self.process.stop(timeout=10.0, sig=signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: every connection drops at once, mid-stream, as when a venue's server dies."""
        self.process.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
