"""Ethereum stream logic: JSON-RPC objects to chain records, reorg tracking, event decoding, token scaling.

Pure functions and small classes without I/O; the JSON-RPC client and the Bytewax source live in
``connectors/evm``.
"""
