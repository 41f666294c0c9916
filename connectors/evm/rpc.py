"""A JSON-RPC 2.0 client for Ethereum nodes: batch requests, retries with backoff, clear errors.

Retried, with exponential backoff and jitter (tenacity), honouring ``Retry-After``: timeouts, connection errors,
HTTP 429 and 5xx, and the rate-limit errors nodes and providers answer inside a 200 response (``-32005``, ``429``).
When the attempts run out, `RpcUnavailable` says what failed and how often. Any other error the node answers is an
`RpcError` with its code, message and method; ``fatal`` tells a request the node will never accept (unknown method,
invalid params) from one that may work later (``-32000`` "header not found" behind a load balancer).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

__all__ = ["JsonRpcClient", "RetryPolicy", "RpcCall", "RpcError", "RpcUnavailable"]

LOG = logging.getLogger(__name__)

#: JSON-RPC error codes that mean "slow down": retried like HTTP 429.
RATE_LIMIT_CODES = frozenset({-32005, 429})
#: Codes for a request the node will never accept: retrying cannot help.
FATAL_CODES = frozenset({-32700, -32600, -32601, -32602})
RETRIED_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RpcError(RuntimeError):
    """An error object the node answered for one request."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.method = method
        self.code = code
        self.message = message
        self.data = data

    @property
    def fatal(self) -> bool:
        """True when the node will never accept this request (parse error, unknown method, invalid params)."""
        return self.code in FATAL_CODES


class RpcUnavailable(RuntimeError):
    """The node could not be reached or kept refusing (rate limits, timeouts) after every attempt."""


class _Transient(Exception):
    """A failure worth another attempt; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One JSON-RPC request: method and positional params."""

    method: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts per request, backoff bounds and the per-request timeout, in seconds."""

    attempts: int = 5
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 10.0


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class JsonRpcClient:
    """JSON-RPC over HTTP(S) with one pooled session; not thread-safe (one per Bytewax partition)."""

    def __init__(self, url: str, policy: RetryPolicy | None = None) -> None:
        self.url = url
        self.policy = policy or RetryPolicy()
        self._session = requests.Session()
        self._session.headers["Content-Type"] = "application/json"
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        """One request; returns its result or raises RpcError / RpcUnavailable."""
        (outcome,) = self.batch_settled([RpcCall(method, params)])
        if isinstance(outcome, RpcError):
            raise outcome
        return outcome

    def batch(self, calls: Sequence[RpcCall]) -> list[Any]:
        """Results in the order of ``calls``; raises the first RpcError any of them got."""
        outcomes = self.batch_settled(calls)
        for outcome in outcomes:
            if isinstance(outcome, RpcError):
                raise outcome
        return outcomes

    def batch_settled(self, calls: Sequence[RpcCall]) -> list[Any]:
        """Per call, its result or its RpcError (one HTTP request); raises RpcUnavailable when retries run out."""
        if not calls:
            return []
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return retrying(self._post, calls)
        except _Transient as exc:
            names = ",".join(sorted({c.method for c in calls}))
            raise RpcUnavailable(
                f"{self.url}: {len(calls)} call(s) of {names} failed after {self.policy.attempts} attempts: {exc}"
            ) from exc

    def close(self) -> None:
        self._session.close()

    def _wait(self, state: RetryCallState) -> float:
        exponential = min(self.policy.backoff_max_s, self.policy.backoff_initial_s * 2 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = exc.retry_after if isinstance(exc, _Transient) else None
        return min(self.policy.backoff_max_s, max(exponential, hint or 0.0))

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        LOG.warning("JSON-RPC attempt %d failed (%s); retrying", state.attempt_number, exc)

    def _post(self, calls: Sequence[RpcCall]) -> list[Any]:
        ids = [next(self._ids) for _ in calls]
        body = [
            {"jsonrpc": "2.0", "id": i, "method": c.method, "params": list(c.params)}
            for i, c in zip(ids, calls, strict=True)
        ]
        timeout = (min(self.policy.timeout_s, 5.0), self.policy.timeout_s)
        try:
            response = self._session.post(self.url, data=orjson.dumps(body), timeout=timeout)
        except requests.Timeout as exc:
            raise _Transient(f"timed out after {self.policy.timeout_s}s") from exc
        except requests.ConnectionError as exc:
            raise _Transient(f"connection failed: {exc}") from exc
        if response.status_code in RETRIED_HTTP_STATUS:
            raise _Transient(f"HTTP {response.status_code}", _retry_after(response))
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = None
        if response.status_code != 200 and not (isinstance(payload, dict) and "error" in payload):
            message = f"HTTP {response.status_code}: {response.content[:200]!r}"
            return [RpcError(c.method, response.status_code, message) for c in calls]
        if payload is None:
            raise _Transient(f"response is not JSON: {response.content[:200]!r}")
        if isinstance(payload, dict):  # one error for the whole batch (e.g. a provider's rate limit)
            payload = [payload | {"id": i} for i in ids] if "error" in payload else [payload]
        if not isinstance(payload, list):
            raise _Transient(f"unexpected JSON-RPC response: {str(payload)[:200]}")
        by_id = {item.get("id"): item for item in payload if isinstance(item, dict)}
        outcomes: list[Any] = []
        for request_id, call in zip(ids, calls, strict=True):
            item = by_id.get(request_id)
            if item is None:
                raise _Transient(f"response has no answer for {call.method} (id {request_id})")
            outcomes.append(self._outcome(call, item))
        return outcomes

    @staticmethod
    def _outcome(call: RpcCall, item: dict[str, Any]) -> Any:
        error = item.get("error")
        if error is None:
            return item.get("result")
        if not isinstance(error, dict):
            return RpcError(call.method, 0, str(error))
        code = error.get("code")
        message = str(error.get("message", ""))
        if code in RATE_LIMIT_CODES:
            raise _Transient(f"{call.method}: rate limited ({code}: {message})")
        return RpcError(call.method, code if isinstance(code, int) else 0, message, error.get("data"))
