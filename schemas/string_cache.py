"""Length-prefixed UTF-8 strings, with the few that repeat on every record (venue, symbol, side) encoded once.

Shared by the compiled Avro writers (`schemas.avro_writer`) and the binary COPY encoders
(`connectors.postgres_copy`); each format brings its own length prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CACHED_STRING_LIMIT", "StringEncoder", "string_encoder"]

#: Strings kept per encoder; longer strings (ids, hashes, payloads) are never cached.
CACHED_STRING_LIMIT = 4096
_CACHED_LENGTH_LIMIT = 64


#: The cache's ``get``, and the function that encodes (and caches) a string.
StringEncoder = tuple[Callable[[Any], bytes | None], Callable[[str], bytes]]


def string_encoder(length_prefix: Callable[[int], bytes]) -> StringEncoder:
    """The cache's ``get`` and the function that encodes, and caches, a string the cache does not hold.

    Compiled encoders inline ``get(value) or encode(value)``, so a hit costs no Python call; an encoded string
    is never empty (it has its prefix), so ``or`` cannot mistake one for a miss.
    """
    cache: dict[str, bytes] = {}

    def encode(value: str) -> bytes:
        data = value.encode()
        encoded = length_prefix(len(data)) + data
        if len(cache) < CACHED_STRING_LIMIT and len(data) <= _CACHED_LENGTH_LIMIT:
            cache[value] = encoded
        return encoded

    return cache.get, encode
