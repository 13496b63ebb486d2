"""HPACK Huffman coding (RFC 7541 §5.2) with repeated long values coded once: a client's token, request after request.

hpack, the pure-Python HPACK codec under `h2`, decodes Huffman strings one bit-state at
a time and encodes them one bit-field at a time: some 0.3 ms to decode a typical
800-byte bearer token and 0.07 ms to encode it again for the upstream, more than the
rest of the request. Clients mark `authorization` never-indexed (RFC 7541 §7.1.3), so
the same encoded bytes arrive with every request and the dynamic table never spares
the work. Both directions keep the result for long strings in a bounded dict (cleared
when full): a flood of distinct values costs what it cost before.
"""

from __future__ import annotations

import hpack.hpack
from hpack.huffman import HuffmanEncoder
from hpack.huffman_table import decode_huffman

MIN_BYTES = 64  # shorter strings decode faster than a dict can hash them
MAX_BYTES = 16384
MAX_ENTRIES = 1024
_decoded: dict[bytes, bytes] = {}
_encoded: dict[bytes, bytes] = {}


def cached_decode_huffman(huffman_string: bytes | bytearray | memoryview | None) -> bytes:
    encoded = huffman_string
    if encoded is None or not MIN_BYTES <= len(encoded) <= MAX_BYTES:
        return decode_huffman(encoded)
    key = bytes(encoded)
    value = _decoded.get(key)
    if value is None:
        value = decode_huffman(key)  # raises on invalid input: nothing is kept for it
        if len(_decoded) >= MAX_ENTRIES:
            _decoded.clear()
        _decoded[key] = value
    return value


class CachedHuffmanEncoder(HuffmanEncoder):
    def encode(self, bytes_to_encode: bytes | None) -> bytes:
        if bytes_to_encode is None or not MIN_BYTES <= len(bytes_to_encode) <= MAX_BYTES:
            return super().encode(bytes_to_encode)
        value = _encoded.get(bytes_to_encode)
        if value is None:
            value = super().encode(bytes_to_encode)
            if len(_encoded) >= MAX_ENTRIES:
                _encoded.clear()
            _encoded[bytes_to_encode] = value
        return value


def install() -> None:
    """Route hpack's coders through the caches (before any connection is made: its Encoder
    takes the class at construction, its decoder looks the function up at each call)."""
    setattr(hpack.hpack, "decode_huffman", cached_decode_huffman)  # noqa: B010 - hpack does not export it
    setattr(hpack.hpack, "HuffmanEncoder", CachedHuffmanEncoder)  # noqa: B010
