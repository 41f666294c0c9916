"""A Bytewax source that follows an Ethereum chain over JSON-RPC, reorg-safe and resumable.

One partition per chain. Each step polls ``eth_blockNumber``, fetches the next confirmed blocks (those at least
``EVM_CONFIRMATIONS`` below the head) in one batch of ``eth_getBlockByNumber(n, true)``, then their logs in one batch
of ``eth_getLogs({blockHash})``, and emits every block's records (block, transactions, logs), keyed for Kafka.

* Reorgs: a block whose ``parentHash`` is not the last completed block's hash starts a walk back through the
  remembered window (`ChainWindow`) to the common ancestor. The replaced blocks' records are re-sent with
  ``removed=true`` (tip first), then the new branch is collected as usual.
* Resume: the recovery state is the window of completed blocks; a restarted flow continues with the block after
  the last one it completed. A block's records are emitted in the same step that marks it completed, so a block
  is never half-emitted in the state's view. Kafka output stays at-least-once (`connectors.avro_sink`): blocks
  completed after the last snapshot are collected and produced again after a crash, with the same hashes.
* Failures: an unreachable or rate-limiting node (after the client's retries), a block the node does not serve
  yet, or logs that do not match the block (wrong hash, logs missing although the bloom says there are some) make
  the step emit nothing and try again after the poll interval. Nothing is skipped. A request the node can never
  accept and a reorg deeper than the window stop the flow with the reason.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.evm.rpc import JsonRpcClient, RpcCall, RpcError, RpcUnavailable
from connectors.evm.settings import EvmSettings
from connectors.metrics import count_outputs
from operators.evm.chain_records import (
    FLOW,
    BlockHeader,
    KeyedOutput,
    MalformedBlock,
    block_outputs,
    header_of,
    quantity,
)
from operators.evm.reorg import ChainWindow

__all__ = ["ChainFollower", "ChainSource", "IncompleteBlock"]

LOG = logging.getLogger(__name__)

#: Recovery state: the window's ``ethereum_blocks`` records, oldest first.
ChainState = list[dict[str, Any]]


class IncompleteBlock(RuntimeError):
    """What the node answered for a block does not add up (yet); the block is fetched again later."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _check_logs(header: BlockHeader, logs: Any) -> list[dict[str, Any]]:
    if not isinstance(logs, list):
        raise IncompleteBlock(f"eth_getLogs for block {header.number} answered {type(logs).__name__}, not a list")
    for log in logs:
        if not isinstance(log, dict) or log.get("blockHash") != header.hash:
            raise IncompleteBlock(f"eth_getLogs for block {header.number} ({header.hash}) returned another block's log")
    if not logs and not header.bloom_empty:
        raise IncompleteBlock(f"block {header.number} has a logs bloom but eth_getLogs returned no logs")
    return logs


class ChainFollower(StatefulSourcePartition[KeyedOutput, ChainState]):
    """Follows one chain's head; see the module docstring."""

    def __init__(self, client: JsonRpcClient, settings: EvmSettings, resume_state: ChainState | None) -> None:
        self._client = client
        self._settings = settings
        self._window = ChainWindow(settings.evm_reorg_window, resume_state or [])
        self._awake: datetime | None = None
        tip = self._window.tip
        if tip is not None:
            LOG.info("resuming %s after block %d (%s)", settings.evm_chain, tip["block_number"], tip["block_hash"])

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> ChainState:
        return self._window.snapshot()

    def close(self) -> None:
        self._client.close()

    def next_batch(self) -> list[KeyedOutput]:
        end = self._settings.evm_end_block
        tip = self._window.tip
        if end is not None and tip is not None and tip["block_number"] >= end:
            LOG.info("completed block %d, the configured end block", tip["block_number"])
            raise StopIteration
        try:
            outputs = self._step()
        except RpcError as exc:
            if exc.fatal:
                raise
            return self._wait(f"the node refused a request: {exc}")
        except (RpcUnavailable, MalformedBlock, IncompleteBlock) as exc:
            return self._wait(str(exc))
        count_outputs(FLOW, [output for _, output in outputs])
        return outputs

    def _wait(self, reason: str | None = None) -> list[KeyedOutput]:
        if reason:
            LOG.warning("%s; trying again in %.1fs", reason, self._settings.evm_poll_interval_s)
        self._awake = datetime.now(UTC) + timedelta(seconds=self._settings.evm_poll_interval_s)
        return []

    def _first_number(self, target: int) -> int:
        tip = self._window.tip
        if tip is not None:
            return int(tip["block_number"]) + 1
        start = self._settings.evm_start_block
        return start if start is not None else max(target, 0)

    def _head(self) -> int:
        answer = self._client.call("eth_blockNumber")
        try:
            return quantity(answer)
        except ValueError as exc:
            raise IncompleteBlock(f"eth_blockNumber answered {answer!r}") from exc

    def _step(self) -> list[KeyedOutput]:
        head = self._head()
        target = head - self._settings.evm_confirmations
        if self._settings.evm_end_block is not None:
            target = min(target, self._settings.evm_end_block)
        first = self._first_number(target)
        if first > target:
            return self._wait()
        last = min(target, first + self._settings.evm_batch_size - 1)
        calls = [RpcCall("eth_getBlockByNumber", (hex(n), True)) for n in range(first, last + 1)]
        blocks = self._client.batch(calls)
        receipt_ts = _now_us()
        if blocks[0] is None:
            return self._wait(f"the node has no block {first} yet (head {head})")
        if not self._window.continues(header_of(blocks[0])):
            return self._retract_replaced()
        chain: list[tuple[dict[str, Any], BlockHeader]] = []
        for block in blocks:
            if block is None:
                break
            header = header_of(block)
            previous = chain[-1][1] if chain else None
            if previous is not None and (header.parent_hash, header.number) != (previous.hash, previous.number + 1):
                break  # the node switched branches mid-batch: keep the consistent prefix
            chain.append((block, header))
        logs = self._client.batch([RpcCall("eth_getLogs", ({"blockHash": h.hash},)) for _, h in chain])
        outputs: list[KeyedOutput] = []
        completed: list[dict[str, Any]] = []
        for (block, header), block_logs in zip(chain, logs, strict=True):
            records = block_outputs(block, _check_logs(header, block_logs), self._settings.evm_chain, receipt_ts)
            outputs.extend(records)
            completed.append(records[0][1][1])
        for record in completed:
            self._window.append(record)
        self._awake = None  # catching up: the next batch right away
        return outputs

    def _retract_replaced(self) -> list[KeyedOutput]:
        numbers = self._window.numbers
        answers = self._client.batch([RpcCall("eth_getBlockByNumber", (hex(n), False)) for n in numbers])
        headers = [header_of(answer) for answer in answers if answer is not None]
        ancestor = self._window.fork_point({h.number: h.hash for h in headers})
        replaced = self._window.above(ancestor)
        if not replaced:
            return self._wait(f"block {ancestor + 1} does not continue block {ancestor}, which is still canonical")
        outputs = self._retractions(replaced)  # before the window changes: a failure here leaves the state as it was
        self._window.rollback(ancestor)
        LOG.warning(
            "reorg on %s: blocks %s replaced, common ancestor %d; re-sent them with removed=true",
            self._settings.evm_chain,
            ", ".join(f"{b['block_number']} ({b['block_hash']})" for b in replaced),
            ancestor,
        )
        self._awake = None
        return outputs

    def _retractions(self, replaced: list[dict[str, Any]]) -> list[KeyedOutput]:
        calls: list[RpcCall] = []
        for record in replaced:
            calls.append(RpcCall("eth_getBlockByHash", (record["block_hash"], True)))
            calls.append(RpcCall("eth_getLogs", ({"blockHash": record["block_hash"]},)))
        answers = self._client.batch_settled(calls)
        receipt_ts = _now_us()
        outputs: list[KeyedOutput] = []
        for i, record in enumerate(replaced):
            block, logs = answers[2 * i], answers[2 * i + 1]
            try:
                if isinstance(block, RpcError) or isinstance(logs, RpcError) or block is None:
                    raise IncompleteBlock("the node no longer serves it")
                header = header_of(block)
                records = block_outputs(block, _check_logs(header, logs), self._settings.evm_chain, receipt_ts, True)
            except (IncompleteBlock, MalformedBlock) as exc:
                LOG.warning(
                    "replaced block %d (%s): %s; only its block record is retracted, sinks must drop every record "
                    "with this block_hash",
                    record["block_number"],
                    record["block_hash"],
                    exc,
                )
                retracted = {**record, "removed": True, "receipt_timestamp": receipt_ts}
                records = [(str(record["block_number"]), ("ethereum_blocks", retracted))]
            outputs.extend(reversed(records))
        return outputs


class ChainSource(FixedPartitionedSource[KeyedOutput, ChainState]):
    """The chain-following source: one partition named after the chain (``EVM_CHAIN``)."""

    def __init__(self, settings: EvmSettings) -> None:
        self._settings = settings

    def list_parts(self) -> list[str]:
        return [self._settings.evm_chain]

    def build_part(self, step_id: str, for_part: str, resume_state: ChainState | None) -> ChainFollower:
        client = JsonRpcClient(self._settings.evm_rpc_url, self._settings.retry_policy())
        return ChainFollower(client, self._settings, resume_state)
