"""The repository's bytes: object headers, key derivation, chunk and object encryption.

Everything that fixes how a repository looks on the store lives here, so the format
(docs/backup-format.md) can be read in one file: the 8-byte header every object starts with,
the sub-keys derived from the repository key, a chunk's id and sealed form, and the sealed
form of the small JSON objects (indexes, snapshots, locks).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"HMBK"
VERSION = 1
HEADER = struct.Struct(">4sHBB")  # magic, format version, kind, reserved (0)
HEADER_SIZE = HEADER.size  # 8

KIND_CONFIG = 1
KIND_PACK = 2
KIND_INDEX = 3
KIND_SNAPSHOT = 4
KIND_LOCK = 5
KIND_NAMES = {
    KIND_CONFIG: "config",
    KIND_PACK: "pack",
    KIND_INDEX: "index",
    KIND_SNAPSHOT: "snapshot",
    KIND_LOCK: "lock",
}

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
ID_SIZE = 32  # chunk ids: keyed BLAKE2b-256
COMPRESSION_LEVEL = 3
RAW, ZSTD = 0, 1  # first plaintext byte of a sealed chunk


class RepositoryError(RuntimeError):
    """The repository cannot do what was asked; the message says which object and why."""


class FormatError(RepositoryError):
    """An object is not in a format this code reads (another program's, a newer version)."""


class WrongKey(RepositoryError):
    """The key given does not open this repository."""


class DamagedObject(RepositoryError):
    """An object's bytes fail their check (authentication tag, chunk id, size, header)."""

    def __init__(self, message: str, *, key: str = "", chunk: str = "", path: str = ""):
        super().__init__(message)
        self.key, self.chunk, self.path = key, chunk, path


def header(kind: int) -> bytes:
    return HEADER.pack(MAGIC, VERSION, kind, 0)


def check_header(data: bytes, kind: int, where: str) -> None:
    """Refuse an object that is not ours, of another kind or of a format version we do not read."""
    if len(data) < HEADER_SIZE:
        raise DamagedObject(f"{where}: {len(data)} bytes, shorter than an object header", key=where)
    magic, version, found, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DamagedObject(f"{where}: not a Hivemind backup object (magic {magic!r})", key=where)
    if version != VERSION:
        raise FormatError(f"{where}: format version {version}, this code reads version {VERSION}")
    if found != kind:
        raise DamagedObject(
            f"{where}: a {KIND_NAMES.get(found, found)} object where a {KIND_NAMES[kind]} was expected", key=where
        )


class Keys:
    """The sub-keys of one repository, derived from its 32-byte repository key with HKDF-SHA256.

    Separate keys for separate jobs: the chunk-id key makes ids a MAC of the plaintext (equal data
    in two repositories gets unrelated ids), the data key encrypts, the check key proves the key
    right without decrypting anything, the chunker seed makes chunk boundaries key-dependent (so
    chunk sizes do not fingerprint known files). The repository id is in every derivation's info,
    so the same key used for two repositories yields unrelated sub-keys.
    """

    def __init__(self, key: bytes, repository_id: bytes):
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            raise ValueError(f"a repository key is {KEY_SIZE} random bytes, got {type(key).__name__}")
        self.repository_id = repository_id
        self.chunk_id = derive(key, b"chunk-id", repository_id)
        self.data = AESGCM(derive(key, b"data", repository_id))
        self.check = derive(key, b"key-check", repository_id)
        # pyfastcdc XORs the seed into its gear table; 62 bits keep its `seed << 1` in 64
        self.chunker_seed = (int.from_bytes(derive(key, b"chunker-seed", repository_id)[:8], "big") >> 2) or 1

    def id_of(self, plaintext: bytes | memoryview) -> bytes:
        return hashlib.blake2b(plaintext, digest_size=ID_SIZE, key=self.chunk_id).digest()

    def check_value(self, config_body: bytes) -> str:
        return hmac.new(self.check, config_body, hashlib.sha256).hexdigest()

    # chunks ------------------------------------------------------------------------------

    def chunk_aad(self, chunk_id: bytes) -> bytes:
        return b"hivemind-chunk\0" + self.repository_id + chunk_id

    def seal_chunk(self, chunk_id: bytes, plaintext: bytes, compressor: zstandard.ZstdCompressor) -> bytes:
        """nonce || AES-256-GCM(flag || body): body zstd-compressed when that makes it smaller."""
        compressed = compressor.compress(plaintext)
        body = (bytes([ZSTD]) + compressed) if len(compressed) < len(plaintext) else (bytes([RAW]) + plaintext)
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self.data.encrypt(nonce, body, self.chunk_aad(chunk_id))

    def open_chunk(self, chunk_id: bytes, sealed: bytes, where: str) -> bytes:
        """The chunk's plaintext, after its tag and then its id are checked; DamagedObject if not."""
        try:
            body = self.data.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], self.chunk_aad(chunk_id))
        except InvalidTag:
            message = f"{where}: chunk {chunk_id.hex()} fails its authentication tag (damaged)"
            raise DamagedObject(message, key=where, chunk=chunk_id.hex()) from None
        if body[:1] == bytes([ZSTD]):
            try:
                plaintext = zstandard.ZstdDecompressor().decompress(body[1:])
            except zstandard.ZstdError as exc:
                raise DamagedObject(f"{where}: chunk {chunk_id.hex()} does not decompress: {exc}", key=where) from None
        elif body[:1] == bytes([RAW]):
            plaintext = body[1:]
        else:
            raise FormatError(f"{where}: chunk {chunk_id.hex()} has an unknown encoding {body[:1]!r}")
        if not hmac.compare_digest(self.id_of(plaintext), chunk_id):
            raise DamagedObject(
                f"{where}: chunk {chunk_id.hex()} decrypts to data of another id", key=where, chunk=chunk_id.hex()
            )
        return plaintext

    # small objects (index, snapshot, lock, pack trailer) ------------------------------------

    def seal_object(self, kind: int, name: str, document: dict) -> bytes:
        """header || nonce || AES-256-GCM(zstd(JSON)), the header and the object's key authenticated."""
        head = header(kind)
        body = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress(json.dumps(document).encode())
        nonce = os.urandom(NONCE_SIZE)
        return head + nonce + self.data.encrypt(nonce, body, self.object_aad(head, name))

    def open_object(self, kind: int, name: str, data: bytes) -> dict:
        check_header(data, kind, name)
        head = data[:HEADER_SIZE]
        nonce = data[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        try:
            body = self.data.decrypt(nonce, data[HEADER_SIZE + NONCE_SIZE :], self.object_aad(head, name))
        except InvalidTag:
            raise DamagedObject(f"{name}: fails its authentication tag (damaged, or moved)", key=name) from None
        return json.loads(zstandard.ZstdDecompressor().decompress(body))

    def object_aad(self, head: bytes, name: str) -> bytes:
        return b"hivemind-object\0" + self.repository_id + head + name.encode()


def derive(key: bytes, purpose: bytes, repository_id: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=b"hivemind-backup-v1", info=purpose + b"\0" + repository_id
    ).derive(bytes(key))
