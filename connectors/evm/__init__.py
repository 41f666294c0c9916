"""Ethereum connectors: settings, the JSON-RPC client, the chain-following Bytewax source, token metadata."""
