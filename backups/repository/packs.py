"""Pack objects: many sealed chunks in one store object, with an encrypted trailer listing them.

A pack is `header || chunk... || trailer || trailer length (u32, big-endian)`; the trailer is
nonce || AES-256-GCM(entries) where an entry is chunk id (32) || offset (u64) || length (u32).
The trailer is what lets an index be rebuilt from the packs alone (read the last 4 bytes, then
the trailer); its tag binds the pack's key, so a trailer copied into another pack fails.
"""

from __future__ import annotations

import os
import secrets
import struct

from cryptography.exceptions import InvalidTag

from .format import HEADER_SIZE, KIND_PACK, NONCE_SIZE, DamagedObject, Keys, check_header, header

ENTRY = struct.Struct(">32sQI")
TRAILER_LENGTH = struct.Struct(">I")
PACK_TARGET = 16 << 20


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def new_pack_id() -> str:
    return secrets.token_hex(16)


class PackWriter:
    """Collects sealed chunks for one pack; `finish` gives its bytes. Not thread-safe (callers lock)."""

    def __init__(self) -> None:
        self.pack_id = new_pack_id()
        self.parts: list[bytes] = [header(KIND_PACK)]
        self.size = HEADER_SIZE
        self.entries: list[tuple[bytes, int, int]] = []

    def add(self, chunk_id: bytes, sealed: bytes) -> None:
        self.entries.append((chunk_id, self.size, len(sealed)))
        self.parts.append(sealed)
        self.size += len(sealed)

    def finish(self, keys: Keys) -> bytes:
        key = pack_key(self.pack_id)
        head = header(KIND_PACK)
        nonce = os.urandom(NONCE_SIZE)
        plain = b"".join(ENTRY.pack(*entry) for entry in self.entries)
        trailer = nonce + keys.data.encrypt(nonce, plain, keys.object_aad(head, key))
        return b"".join([*self.parts, trailer, TRAILER_LENGTH.pack(len(trailer))])


def read_trailer(keys: Keys, key: str, data_or_tail: bytes, size: int) -> list[tuple[bytes, int, int]]:
    """The (chunk id, offset, length) entries of a pack, from its bytes (or at least its tail)."""
    if len(data_or_tail) < TRAILER_LENGTH.size:
        raise DamagedObject(f"{key}: too short for a pack", key=key)
    (length,) = TRAILER_LENGTH.unpack(data_or_tail[-TRAILER_LENGTH.size :])
    if length + TRAILER_LENGTH.size + HEADER_SIZE > size or length + TRAILER_LENGTH.size > len(data_or_tail):
        raise DamagedObject(f"{key}: its trailer length ({length}) does not fit the pack", key=key)
    trailer = data_or_tail[-TRAILER_LENGTH.size - length : -TRAILER_LENGTH.size]
    try:
        plain = keys.data.decrypt(trailer[:NONCE_SIZE], trailer[NONCE_SIZE:], keys.object_aad(header(KIND_PACK), key))
    except InvalidTag:
        raise DamagedObject(f"{key}: its trailer fails its authentication tag (damaged)", key=key) from None
    if len(plain) % ENTRY.size:
        raise DamagedObject(f"{key}: its trailer is not a whole number of entries", key=key)
    return [ENTRY.unpack_from(plain, at) for at in range(0, len(plain), ENTRY.size)]


def check_pack_header(key: str, data: bytes) -> None:
    check_header(data, KIND_PACK, key)
