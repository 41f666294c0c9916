"""Run the local JSON-RPC server: ``python -m evm_rpc --port 8545 [--head N] [--data DIR] [--calls FILE]``.

Listens on 127.0.0.1 unless ``--host`` says otherwise. ``--calls`` is a JSON file ``[{"to", "data", "result"}]``
of ``eth_call`` answers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn

from evm_rpc.app import RecordedNode, create_app
from evm_rpc.chain import ServedChain
from evm_rpc.recordings import load_chain_data

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "ethereum"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m evm_rpc", description="JSON-RPC from recorded mainnet data.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--head", type=int, default=None, help="head block number (default: the highest recorded)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with rpc/ and blocks_*/")
    parser.add_argument("--calls", type=Path, default=None, help="JSON file of eth_call answers")
    args = parser.parse_args()
    data = load_chain_data(args.data)
    node = RecordedNode(ServedChain(data, args.head), data.verbatim)
    if args.calls is not None:
        for call in json.loads(args.calls.read_text()):
            node.calls[(call["to"].lower(), call["data"].lower())] = call["result"]
    # Requests held by a "timeout" fault must not hold up a shutdown.
    uvicorn.run(create_app(node), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
