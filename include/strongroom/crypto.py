"""Envelope encryption: a chunked AES-256-GCM stream (the STREAM construction), key wrapping, manifest MACs.

The format is specified in ``docs/encryption-format.md`` precisely enough to decrypt with another
implementation; ``tests/unit/test_crypto_vectors.py`` pins it with fixed vectors.

Stream layout::

    header  = MAGIC(8) | version(1) | segment_size(u32 BE) | salt(32) | nonce_prefix(7)       (52 bytes)
    subkey  = HKDF-SHA256(ikm=data_key, salt=salt, info=STREAM_INFO | 0x00 | associated_data, 32 bytes)
    segment = AES-256-GCM(subkey, nonce_prefix | u32 BE index | last flag, plaintext, aad=header)

Every segment but the last carries exactly ``segment_size`` plaintext bytes; the last (flag 0x01) carries
0..segment_size bytes. Truncation, reordering, tampering and a wrong key or wrong identity all fail
authentication and raise :class:`IntegrityError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import IntegrityError

MAGIC = b"SRSTRM\x00\x01"
VERSION = 1
SEGMENT_SIZE = 1 << 20  # plaintext bytes per segment: AES256_GCM_HKDF_1MB, as in Tink
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 1 + 4 + SALT_SIZE + NONCE_PREFIX_SIZE
MAX_SEGMENTS = 2**32
STREAM_INFO = b"strongroom stream v1"
WRAP_INFO = b"strongroom key-wrap v1"
MAC_INFO = b"strongroom manifest-mac v1"
DATA_KEY_SIZE = 32
_HEADER = struct.Struct(f">8sBI{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")


def new_data_key() -> bytes:
    """A fresh random 256-bit data key (one per snapshot)."""
    return os.urandom(DATA_KEY_SIZE)


def object_identity(kind: str, *parts: str) -> bytes:
    """Associated data binding a ciphertext to what it is, e.g. ``("dump", "shop", snapshot_id)``."""
    return "\x00".join(("strongroom/v1", kind, *parts)).encode("utf-8")


def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 to 32 bytes: one key per purpose from one keyring key."""
    return _hkdf(ikm, info, salt)


def _hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_SEGMENTS:
        raise IntegrityError("stream has more segments than the format allows")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


class StreamEncryptor:
    """Encrypts a byte stream incrementally; memory is one segment plus what the caller passes in."""

    def __init__(
        self,
        data_key: bytes,
        associated_data: bytes,
        segment_size: int = SEGMENT_SIZE,
        *,
        salt: bytes | None = None,
        nonce_prefix: bytes | None = None,
    ) -> None:
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError("data key must be 32 bytes")
        if not 1 <= segment_size <= 1 << 30:
            raise ValueError("segment size must be between 1 byte and 1 GiB")
        salt = salt if salt is not None else os.urandom(SALT_SIZE)
        prefix = nonce_prefix if nonce_prefix is not None else os.urandom(NONCE_PREFIX_SIZE)
        if len(salt) != SALT_SIZE or len(prefix) != NONCE_PREFIX_SIZE:
            raise ValueError(f"salt must be {SALT_SIZE} bytes and nonce prefix {NONCE_PREFIX_SIZE} bytes")
        self.header = _HEADER.pack(MAGIC, VERSION, segment_size, salt, prefix)
        self._aead = AESGCM(_hkdf(data_key, STREAM_INFO + b"\x00" + associated_data, salt))
        self._prefix = prefix
        self._segment_size = segment_size
        self._index = 0
        self._buffer = bytearray()
        self._started = False
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the ciphertext of every segment known not to be the last (the header comes first)."""
        if self._finished:
            raise ValueError("stream already finalized")
        head = b"" if self._started else self.header
        self._started = True
        self._buffer += data
        return head + _take_segments(self._buffer, self._segment_size, self._seal)

    def finalize(self) -> bytes:
        if self._finished:
            raise ValueError("stream already finalized")
        self._finished = True
        head = b"" if self._started else self.header
        self._started = True
        last = self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        return head + last

    def _seal(self, chunk: bytes | memoryview, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), chunk, self.header)
        self._index += 1
        return sealed


def _take_segments(buffer: bytearray, size: int, process: Callable[[memoryview, bool], bytes]) -> bytes:
    """Pass each ``size``-byte segment at the front of ``buffer`` that more data follows to ``process`` (as
    not last), remove them from ``buffer`` and return the joined results. At least one byte stays behind:
    only a segment followed by more data is known not to be the last."""
    if len(buffer) <= size:
        return b""
    out: list[bytes] = []
    view = memoryview(buffer)
    offset = 0
    while len(buffer) - offset > size:
        out.append(process(view[offset : offset + size], False))
        offset += size
    view.release()
    del buffer[:offset]
    return b"".join(out)


class StreamDecryptor:
    """Decrypts and authenticates a stream; raises :class:`IntegrityError` on any mismatch."""

    def __init__(self, data_key: bytes, associated_data: bytes) -> None:
        self._data_key = data_key
        self._ad = associated_data
        self._aead: AESGCM | None = None
        self._buffer = bytearray()
        self._header = b""
        self._prefix = b""
        self._segment_ct = 0
        self._index = 0
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._finished:
            raise ValueError("stream already finalized")
        self._buffer += data
        if self._aead is None:
            if len(self._buffer) < HEADER_SIZE:
                return b""
            self._read_header()
        return _take_segments(self._buffer, self._segment_ct, self._open)

    def finalize(self) -> bytes:
        if self._finished:
            raise ValueError("stream already finalized")
        self._finished = True
        if self._aead is None:
            raise IntegrityError("encrypted stream is truncated: incomplete header")
        if len(self._buffer) < TAG_SIZE:
            raise IntegrityError("encrypted stream is truncated: final segment missing")
        plain = self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        return plain

    def _read_header(self) -> None:
        magic, version, segment_size, _salt, prefix = _HEADER.unpack_from(self._buffer)
        if magic != MAGIC:
            raise IntegrityError("not a Strongroom encrypted stream (bad magic)")
        if version != VERSION:
            raise IntegrityError(f"unsupported stream version {version}")
        if not 1 <= segment_size <= 1 << 30:
            raise IntegrityError("invalid segment size in stream header")
        self._header = bytes(self._buffer[:HEADER_SIZE])
        self._prefix = prefix
        self._segment_ct = segment_size + TAG_SIZE
        self._aead = AESGCM(_hkdf(self._data_key, STREAM_INFO + b"\x00" + self._ad, _salt))
        del self._buffer[:HEADER_SIZE]

    def _open(self, chunk: bytes | memoryview, last: bool) -> bytes:
        assert self._aead is not None
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._index, last), chunk, self._header)
        except InvalidTag:
            raise IntegrityError(
                f"encrypted stream failed authentication at segment {self._index} "
                "(tampered, truncated, reordered, or the wrong key)"
            ) from None
        self._index += 1
        return plain


def encrypt_bytes(data_key: bytes, associated_data: bytes, plaintext: bytes) -> bytes:
    enc = StreamEncryptor(data_key, associated_data)
    return enc.update(plaintext) + enc.finalize()


def decrypt_bytes(data_key: bytes, associated_data: bytes, ciphertext: bytes) -> bytes:
    dec = StreamDecryptor(data_key, associated_data)
    return dec.update(ciphertext) + dec.finalize()


def _wrap_aad(key_id: str, context: bytes) -> bytes:
    return WRAP_INFO + b"\x00" + key_id.encode("utf-8") + b"\x00" + context


def wrap_key(kek: bytes, key_id: str, data_key: bytes, context: bytes, *, nonce: bytes | None = None) -> str:
    """Wrap a data key under a keyring key: base64(nonce(12) | AES-256-GCM ciphertext and tag)."""
    nonce = nonce if nonce is not None else os.urandom(12)
    sealed = AESGCM(_hkdf(kek, WRAP_INFO)).encrypt(nonce, data_key, _wrap_aad(key_id, context))
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap_key(kek: bytes, key_id: str, wrapped: str, context: bytes) -> bytes:
    try:
        raw = base64.b64decode(wrapped, validate=True)
        key = AESGCM(_hkdf(kek, WRAP_INFO)).decrypt(raw[:12], raw[12:], _wrap_aad(key_id, context))
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"wrapped data key does not open under key id {key_id!r} (tampered manifest or wrong key)"
        ) from None
    if len(key) != DATA_KEY_SIZE:
        raise IntegrityError("wrapped data key has the wrong length")
    return key


def mac(kek: bytes, payload: bytes) -> str:
    """HMAC-SHA256 of ``payload`` under a key derived from a keyring key, as lowercase hex."""
    return hmac.new(_hkdf(kek, MAC_INFO), payload, hashlib.sha256).hexdigest()


def verify_mac(kek: bytes, payload: bytes, expected: str) -> bool:
    # compare_digest raises TypeError on non-ASCII str; a MAC is lowercase hex, so anything else is a mismatch
    return expected.isascii() and hmac.compare_digest(mac(kek, payload), expected)
