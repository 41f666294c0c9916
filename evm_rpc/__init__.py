"""A local Ethereum JSON-RPC server answering from recorded mainnet data, for tests, demos and development.

    python -m evm_rpc --port 8545                     # serve data/ethereum, head = highest recorded block

From code, like the servers in ``embedded/`` (own process group, 127.0.0.1, readiness check, clean stop):

    with RecordedRpcServer(tmp_path, head=17173049) as node:
        node.url                     # http://127.0.0.1:PORT
        node.set_head(17173050)      # "mine" the next recorded block
        node.fork(17173050)          # switch to a fork: block 17173050 replaced, one block on top
        node.inject("rate_limit", count=3)

What it serves and how the 2023 ethereum-etl exports are re-encoded: ``evm_rpc.recordings``,
``evm_rpc.etl_exports``; methods and control endpoints: ``evm_rpc.app``; fault kinds: ``evm_rpc.faults``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests

from embedded.process import ManagedProcess, free_port, port_open, wait_until
from evm_rpc.faults import FaultKind

__all__ = ["RecordedRpcServer"]

REPO = Path(__file__).resolve().parents[1]


class RecordedRpcServer:
    """``python -m evm_rpc`` as a child process on 127.0.0.1, with the control endpoints as methods."""

    def __init__(self, workdir: Path, port: int | None = None, head: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "evm_rpc", "--port", str(self.port)]
        if head is not None:
            argv += ["--head", str(head)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = ManagedProcess("evm_rpc", argv, workdir / f"evm-rpc-{self.port}.log", env=env, cwd=REPO)
        self._session = requests.Session()

    def _ready(self) -> bool:
        self.process.check_alive()
        if not port_open("127.0.0.1", self.port):
            return False
        answer = self._session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2)
        return bool(answer.ok)

    def start(self, timeout: float = 60.0) -> Self:
        self.process.start()
        wait_until(self._ready, timeout, f"JSON-RPC server on {self.url}")
        return self

    def stop(self) -> None:
        self.process.stop()
        self._session.close()

    def _control(self, path: str, body: dict[str, Any] | None = None, method: str = "POST") -> Any:
        response = self._session.request(method, f"{self.url}/control/{path}", json=body, timeout=10)
        if not response.ok:
            raise RuntimeError(f"control {path} failed: HTTP {response.status_code} {response.text}")
        return response.json()

    def set_head(self, number: int) -> None:
        """Move the head: blocks up to ``number`` exist, those above do not (yet)."""
        self._control("head", {"number": number})

    def fork(self, number: int, keep_transactions: int | None = None, extend: int = 1) -> list[str]:
        """Switch to a fork replacing blocks ``number``..head, ``extend`` blocks on top; returns the new hashes."""
        answer = self._control("fork", {"number": number, "keep_transactions": keep_transactions, "extend": extend})
        return list(answer["hashes"])

    def inject(
        self,
        kind: FaultKind,
        count: int = 1,
        method: str | None = None,
        delay_s: float = 30.0,
        retry_after_s: int = 0,
    ) -> None:
        """Make the next ``count`` requests (calling ``method``, if given) fail as ``kind``."""
        fault = {"kind": kind, "count": count, "method": method, "delay_s": delay_s, "retry_after_s": retry_after_s}
        self._control("faults", fault)

    def clear_faults(self) -> None:
        self._control("faults", method="DELETE")

    def set_calls(self, calls: list[dict[str, str]]) -> None:
        """``eth_call`` answers: ``[{"to", "data", "result"}]``."""
        self._control("calls", {"calls": calls})

    def requests(self) -> list[dict[str, Any]]:
        """Every JSON-RPC call answered so far, in order: ``{"method", "params"}``."""
        return list(self._control("requests", method="GET")["requests"])

    def faults_served(self) -> dict[str, int]:
        return dict(self._control("requests", method="GET")["faults_served"])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
