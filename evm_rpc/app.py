"""The local JSON-RPC server's HTTP app (Starlette): Ethereum JSON-RPC on ``POST /``, test control on ``/control``.

Methods: ``eth_chainId``, ``net_version``, ``eth_blockNumber``, ``eth_getBlockByNumber``, ``eth_getBlockByHash``,
``eth_getLogs`` (by ``blockHash`` or block range, with address and topic filters), ``eth_getTransactionReceipt``,
``eth_call`` (only for calls given through ``/control/calls`` or ``--calls``: no EVM runs here), any other method
recorded under ``data/ethereum/rpc`` for exactly its recorded params, and batches of all of these.

Control (JSON bodies): ``POST /control/head {"number"}`` moves the head; ``POST /control/fork {"number",
"keep_transactions", "extend"}`` switches to a fork; ``POST /control/faults {"kind", "count", "method", "delay_s",
"retry_after_s"}`` arms a fault (`evm_rpc.faults`), ``DELETE /control/faults`` disarms all; ``POST /control/calls
{"calls": [{"to", "data", "result"}]}`` sets ``eth_call`` answers; ``GET /control/requests`` lists every JSON-RPC
call answered and the faults served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evm_rpc.chain import RpcFailure, ServedChain
from evm_rpc.faults import Fault, FaultQueue
from evm_rpc.recordings import Recording

__all__ = ["RecordedNode", "create_app"]

CHAIN_ID = "0x1"  # every recording is Ethereum mainnet


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _params(params: Any, low: int, high: int) -> list[Any]:
    if not isinstance(params, list) or not low <= len(params) <= high:
        raise RpcFailure(-32602, f"expected {low}..{high} params, got {params!r}")
    return params


class RecordedNode:
    """JSON-RPC dispatch over a `ServedChain`, with faults, eth_call answers and a request log."""

    def __init__(self, chain: ServedChain, verbatim: Sequence[Recording] = ()) -> None:
        self.chain = chain
        self.faults = FaultQueue()
        self.calls: dict[tuple[str, str], str] = {}
        self.requests: list[dict[str, Any]] = []
        self._verbatim = {(r.method, orjson.dumps(list(r.params))): r.result for r in verbatim}
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda p: CHAIN_ID,
            "net_version": lambda p: str(int(CHAIN_ID, 16)),
            "eth_blockNumber": lambda p: hex(self.chain.head),
            "eth_getBlockByNumber": self._block_by_number,
            "eth_getBlockByHash": self._block_by_hash,
            "eth_getLogs": self._logs,
            "eth_getTransactionReceipt": self._receipt,
            "eth_call": self._call,
        }

    def _block_by_number(self, params: list[Any]) -> Any:
        ref, full = _params(params, 2, 2)
        return self.chain.block_by_number(ref, bool(full))

    def _block_by_hash(self, params: list[Any]) -> Any:
        block_hash, full = _params(params, 2, 2)
        if not isinstance(block_hash, str):
            raise RpcFailure(-32602, f"invalid block hash {block_hash!r}")
        return self.chain.block_by_hash(block_hash, bool(full))

    def _logs(self, params: list[Any]) -> Any:
        (criteria,) = _params(params, 1, 1)
        if not isinstance(criteria, dict):
            raise RpcFailure(-32602, "eth_getLogs takes one filter object")
        return self.chain.logs(criteria)

    def _receipt(self, params: list[Any]) -> Any:
        (tx_hash,) = _params(params, 1, 1)
        if not isinstance(tx_hash, str):
            raise RpcFailure(-32602, f"invalid transaction hash {tx_hash!r}")
        return self.chain.receipt(tx_hash)

    def _call(self, params: list[Any]) -> Any:
        call = _params(params, 1, 3)[0]
        if not isinstance(call, dict) or not isinstance(call.get("to"), str):
            raise RpcFailure(-32602, "eth_call takes a call object with 'to'")
        data = str(call.get("data") or call.get("input") or "0x").lower()
        result = self.calls.get((call["to"].lower(), data))
        if result is None:
            raise RpcFailure(-32000, f"execution reverted (no eth_call answer given for {call['to']} {data})")
        return result

    def answer(self, item: Any) -> dict[str, Any]:
        """The response object for one JSON-RPC request object."""
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return _error(item.get("id") if isinstance(item, dict) else None, -32600, "invalid request")
        method, params, request_id = item["method"], item.get("params", []), item.get("id")
        self.requests.append({"method": method, "params": params})
        handler = self._methods.get(method)
        try:
            if handler is not None:
                result = handler(params)
            else:
                key = (method, orjson.dumps(params))
                if key not in self._verbatim:
                    raise RpcFailure(-32601, f"method {method} is not served (or not recorded with these params)")
                result = self._verbatim[key]
        except RpcFailure as exc:
            return _error(request_id, exc.code, exc.message)
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    async def rpc(self, request: Request) -> Response:
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json(_error(None, -32700, "parse error"))
        items = payload if isinstance(payload, list) else [payload]
        methods = [str(i.get("method")) for i in items if isinstance(i, dict)]
        fault = self.faults.take(methods)
        if fault is not None:
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay_s)
            elif fault.kind == "http_429":
                return _json(_error(None, 429, "too many requests"), 429, {"Retry-After": str(fault.retry_after_s)})
            elif fault.kind == "http_503":
                return Response("no healthy upstream", status_code=503)
            else:
                limited = [
                    _error(i.get("id") if isinstance(i, dict) else None, -32005, "limit exceeded") for i in items
                ]
                return _json(limited if isinstance(payload, list) else limited[0])
        answers = [self.answer(item) for item in items]
        return _json(answers if isinstance(payload, list) else answers[0])

    async def set_head(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.chain.head = int(body["number"])
        return _json({"head": self.chain.head})

    async def fork(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        try:
            hashes = self.chain.fork(int(body["number"]), body.get("keep_transactions"), int(body.get("extend", 1)))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"hashes": hashes, "head": self.chain.head})

    async def arm_fault(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
            return _json({"faults": "cleared"})
        try:
            self.faults.arm(Fault(**orjson.loads(await request.body())))
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"armed": True})

    async def set_calls(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        for call in body["calls"]:
            self.calls[(call["to"].lower(), call["data"].lower())] = call["result"]
        return _json({"calls": len(self.calls)})

    async def request_log(self, request: Request) -> Response:
        return _json({"requests": self.requests, "faults_served": self.faults.served})


def create_app(node: RecordedNode) -> Starlette:
    """The Starlette app serving ``node``."""
    return Starlette(
        routes=[
            Route("/", node.rpc, methods=["POST"]),
            Route("/control/head", node.set_head, methods=["POST"]),
            Route("/control/fork", node.fork, methods=["POST"]),
            Route("/control/faults", node.arm_fault, methods=["POST", "DELETE"]),
            Route("/control/calls", node.set_calls, methods=["POST"]),
            Route("/control/requests", node.request_log, methods=["GET"]),
        ]
    )
