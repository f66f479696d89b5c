"""The envelope: the one module that seals and unseals stored bytes (zstd, then AES-256-GCM).

Every flow that stores or reads encrypted bytes calls a verb here:

* a snapshot's dump: :func:`seal_stream` (from a reader into a sink, with sizes, SHA-256 and progress) and
  :func:`unseal_stream` (chunk by chunk, one segment at a time, in bounded memory);
* a snapshot's globals: :func:`seal_blob` and :func:`unseal_blob`, the one-shot forms;
* object-storage contents, point indexes and journals: the *object container* (:class:`ObjectSealer`,
  :func:`seal_object`, :func:`unseal_object_stream`, :func:`unseal_object`), which carries its own wrapped
  data key in a small header.

It is the only module that constructs an AES-GCM cipher or a zstd compressor or decompressor
(``tests/unit/test_boundaries.py`` fails when another one does). The format primitives underneath live here
too: the chunked AES-256-GCM stream (the STREAM construction), HKDF, key wrapping, the manifest MAC and the
object identities. They used to be ``crypto.py``; that module is gone rather than kept for the parts that
build no cipher (HKDF, MAC, identities), because those are labelled parts of the same versioned format and
the key wrap needs AES-GCM anyway: one module is the one place to read the format, and the one the
specification names. The format is specified in ``docs/encryption-format.md`` precisely enough to decrypt
with another implementation; ``tests/unit/test_crypto_vectors.py`` pins it with fixed vectors.

Stream layout::

    header  = MAGIC(8) | version(1) | segment_size(u32 BE) | salt(32) | nonce_prefix(7)       (52 bytes)
    subkey  = HKDF-SHA256(ikm=data_key, salt=salt, info=STREAM_INFO | 0x00 | associated_data, 32 bytes)
    segment = AES-256-GCM(subkey, nonce_prefix | u32 BE index | last flag, plaintext, aad=header)

Every segment but the last carries exactly ``segment_size`` plaintext bytes; the last (flag 0x01) carries
0..segment_size bytes. Truncation, reordering, tampering and a wrong key or wrong identity all fail
authentication and raise :class:`IntegrityError`.

Object container layout::

    OBJECT_MAGIC(8) | u32 BE header length | header JSON {"key_id", "wrapped_key"} | stream of zstd(plain)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import IntegrityError
from strongroom.keyring import Keyring
from strongroom.progress import Progress

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
CHUNK_NAME_INFO = b"strongroom chunk-name v1"
CHUNK_SEED_INFO = b"strongroom chunker-seed v1"
DATA_KEY_SIZE = 32
WRAP_NONCE_SIZE = 12
_HEADER = struct.Struct(f">8sBI{SALT_SIZE}s{NONCE_PREFIX_SIZE}s")

OBJECT_MAGIC = b"SROBJ\x00\x01\n"
_OBJECT_LENGTH = struct.Struct(">I")
OBJECT_LEVEL = 3  # zstd level of the object container
READ_SIZE = 1 << 20  # bytes read from a source at a time by seal_stream


def new_data_key() -> bytes:
    """A fresh random 256-bit data key (one per snapshot, one per sealed object)."""
    return os.urandom(DATA_KEY_SIZE)


def object_identity(kind: str, *parts: str) -> bytes:
    """Associated data binding a ciphertext to what it is, e.g. ``("dump", "shop", snapshot_id)``."""
    return "\x00".join(("strongroom/v1", kind, *parts)).encode("utf-8")


def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 to 32 bytes: one key per purpose from one keyring key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


# ---- the stream (STREAM construction) ----------------------------------------------------------------------


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
        self._aead = AESGCM(hkdf(data_key, STREAM_INFO + b"\x00" + associated_data, salt))
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
        self._aead = AESGCM(hkdf(self._data_key, STREAM_INFO + b"\x00" + self._ad, _salt))
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
    """The stream of ``plaintext`` in one call (no compression: :func:`seal_blob` compresses first)."""
    enc = StreamEncryptor(data_key, associated_data)
    return enc.update(plaintext) + enc.finalize()


def decrypt_bytes(data_key: bytes, associated_data: bytes, ciphertext: bytes) -> bytes:
    dec = StreamDecryptor(data_key, associated_data)
    return dec.update(ciphertext) + dec.finalize()


# ---- key wrap and MAC ----------------------------------------------------------------------------------------


def _wrap_aad(key_id: str, context: bytes) -> bytes:
    return WRAP_INFO + b"\x00" + key_id.encode("utf-8") + b"\x00" + context


def wrap_key(kek: bytes, key_id: str, data_key: bytes, context: bytes, *, nonce: bytes | None = None) -> str:
    """Wrap a data key under a keyring key: base64(nonce(12) | AES-256-GCM ciphertext and tag)."""
    nonce = nonce if nonce is not None else os.urandom(WRAP_NONCE_SIZE)
    sealed = AESGCM(hkdf(kek, WRAP_INFO)).encrypt(nonce, data_key, _wrap_aad(key_id, context))
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap_key(kek: bytes, key_id: str, wrapped: str, context: bytes) -> bytes:
    """The data key :func:`wrap_key` wrapped. Callers holding a keyring use ``Manifest.data_key`` (a
    snapshot) or the object container's header (:func:`unseal_object_stream`), not this."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
        key = AESGCM(hkdf(kek, WRAP_INFO)).decrypt(raw[:12], raw[12:], _wrap_aad(key_id, context))
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"wrapped data key does not open under key id {key_id!r} (tampered manifest or wrong key)"
        ) from None
    if len(key) != DATA_KEY_SIZE:
        raise IntegrityError("wrapped data key has the wrong length")
    return key


def mac(kek: bytes, payload: bytes) -> str:
    """HMAC-SHA256 of ``payload`` under a key derived from a keyring key, as lowercase hex."""
    return hmac.new(hkdf(kek, MAC_INFO), payload, hashlib.sha256).hexdigest()


def verify_mac(kek: bytes, payload: bytes, expected: str) -> bool:
    # compare_digest raises TypeError on non-ASCII str; a MAC is lowercase hex, so anything else is a mismatch
    return expected.isascii() and hmac.compare_digest(mac(kek, payload), expected)


# ---- chunks of a deduplicated snapshot: names and the chunker's seed -------------------------------------


def chunk_name(chunk_key: bytes, plain: bytes | memoryview) -> str:
    """A chunk's name: HMAC-SHA256 of its plaintext under a key derived from the chunk key, lowercase hex.
    Only a holder of the chunk key can compute or confirm it, so stored names reveal nothing of the content."""
    return hmac.new(hkdf(chunk_key, CHUNK_NAME_INFO), plain, hashlib.sha256).hexdigest()


class ChunkNamer:
    """:func:`chunk_name` with the derived key computed once (a snapshot names thousands of chunks)."""

    def __init__(self, chunk_key: bytes) -> None:
        self._key = hkdf(chunk_key, CHUNK_NAME_INFO)

    def name(self, plain: bytes | memoryview) -> str:
        return hmac.new(self._key, plain, hashlib.sha256).hexdigest()

    def matches(self, plain: bytes | memoryview, name: str) -> bool:
        return name.isascii() and hmac.compare_digest(self.name(plain), name)


def chunker_seed(chunk_key: bytes) -> int:
    """The content-defined chunker's seed (FastCDC's gear table is XORed with it), derived from the chunk
    key so that chunk boundaries, and so chunk sizes, depend on a secret: the first 8 bytes of
    HKDF(chunk key, CHUNK_SEED_INFO) as a big-endian integer, shifted right by one bit (the chunker takes
    63 bits) and with its lowest bit set (never 0, which would mean the public table)."""
    return (int.from_bytes(hkdf(chunk_key, CHUNK_SEED_INFO)[:8], "big") >> 1) | 1


# ---- sealing: zstd inside the stream ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SealStats:
    """What sealing stored: plain bytes in, zstd bytes (the stream's plaintext), stored bytes and their SHA-256."""

    plain_size: int
    compressed_size: int
    stored_size: int
    sha256: str


class _Sealer:
    """zstd (one frame) into a stream, incrementally; ``sink`` gets the stream's bytes, never an empty block."""

    def __init__(self, data_key: bytes, identity: bytes, sink: Callable[[bytes], None], *, level: int,
                 threads: int, salt: bytes | None = None, nonce_prefix: bytes | None = None) -> None:
        self._compressor = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()
        self._encryptor = StreamEncryptor(data_key, identity, salt=salt, nonce_prefix=nonce_prefix)
        self._sink = sink
        self.compressed = 0

    def write(self, data: bytes) -> None:
        packed = self._compressor.compress(data)
        if packed:
            self.compressed += len(packed)
            self._emit(self._encryptor.update(packed))

    def close(self) -> None:
        packed = self._compressor.flush()  # ends the frame
        self.compressed += len(packed)
        self._emit(self._encryptor.update(packed))
        self._emit(self._encryptor.finalize())

    def _emit(self, block: bytes) -> None:
        if block:
            self._sink(block)


def seal_stream(
    source: IO[bytes],
    sink: Callable[[bytes], None],
    *,
    data_key: bytes,
    identity: bytes,
    level: int = 3,
    threads: int = 0,
    label: str = "snapshot",
    total: int | None = None,
) -> SealStats:
    """Compress (``threads`` workers, 0 for one per core) and encrypt ``source`` into ``sink``; returns the
    sizes and the SHA-256 of what was stored. Memory is bounded: a read, zstd's window and one segment.

    Progress (bytes read of ``total``, an estimate of the plain size) is logged as it goes."""
    digest = hashlib.sha256()
    stored = 0

    def store(block: bytes) -> None:
        nonlocal stored
        digest.update(block)
        sink(block)
        stored += len(block)

    sealer = _Sealer(data_key, identity, store, level=level, threads=threads or -1)
    plain = 0
    progress = Progress(label, total, estimated=True)
    while block := source.read(READ_SIZE):
        plain += len(block)
        sealer.write(block)
        progress.update(plain)
    sealer.close()
    return SealStats(plain, sealer.compressed, stored, digest.hexdigest())


def seal_blob(data_key: bytes, identity: bytes, plain: bytes, *, level: int = 3) -> tuple[bytes, SealStats]:
    """Seal a small ``plain`` in one call; returns the stored bytes and what :func:`seal_stream` reports.

    The zstd frame is compressed in one shot, so it records its content size (a streamed frame does not):
    releases before the envelope decompressed globals in one shot, which needs that size."""
    packed = zstandard.ZstdCompressor(level=level).compress(plain)
    sealed = encrypt_bytes(data_key, identity, packed)
    return sealed, SealStats(len(plain), len(packed), len(sealed), hashlib.sha256(sealed).hexdigest())


class StreamUnsealer:
    """Decrypts and decompresses a stream given piece by piece (:func:`unseal_stream` is its iterator form):
    each segment is authenticated before its plaintext is returned, the end of the stream and of its zstd
    frame by :meth:`finalize`. ``where`` names the object in errors (:class:`IntegrityError`)."""

    def __init__(self, data_key: bytes, identity: bytes, where: str) -> None:
        self._decryptor = StreamDecryptor(data_key, identity)
        self._inflater = zstandard.ZstdDecompressor().decompressobj()
        self.where = where

    def _inflate(self, packed: bytes) -> bytes:
        if not packed:
            return b""
        try:
            return bytes(self._inflater.decompress(packed))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{self.where}: decompression failed: {exc}") from None

    def update(self, data: bytes | memoryview) -> bytes:
        """The plaintext of the segments ``data`` completes (one segment at a time: a whole download range
        would inflate to many times its size in memory at once, so pass at most a few segments)."""
        return self._inflate(self._decryptor.update(data))

    def finalize(self) -> bytes:
        """The rest of the plaintext, once the stream's end and its zstd frame's end are authenticated."""
        out = self._inflate(self._decryptor.finalize())
        if not self._inflater.eof or self._inflater.unused_data:
            raise IntegrityError(f"{self.where}: compressed stream is incomplete or has trailing data")
        return out


def unseal_stream(chunks: Iterable[bytes], data_key: bytes, identity: bytes, where: str) -> Iterator[bytes]:
    """Decrypt and decompress a stream as it arrives, one segment at a time (:class:`StreamUnsealer`).

    Each segment is authenticated before its plaintext is yielded, the end of the stream and of its zstd frame
    before the last piece: a consumer that writes as it goes must discard its output on an exception."""
    unsealer = StreamUnsealer(data_key, identity, where)
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), SEGMENT_SIZE):
            out = unsealer.update(view[start : start + SEGMENT_SIZE])
            if out:
                yield out
        view.release()
    out = unsealer.finalize()
    if out:
        yield out


def unseal_blob(data_key: bytes, identity: bytes, sealed: bytes, where: str) -> bytes:
    """The one-shot form of :func:`unseal_stream`."""
    return b"".join(unseal_stream([sealed], data_key, identity, where))


# ---- the object container: a sealed object that carries its own wrapped data key -----------------------------


class ObjectSealer:
    """Seal an object of any length into ``sink`` in bounded memory (:func:`seal_object` is the one-shot form):
    a fresh data key wrapped under the keyring's active key, bound (with the stream) to ``identity``.

    ``data_key``, ``wrap_nonce``, ``salt`` and ``nonce_prefix`` are for fixed test vectors only: they are
    fresh and random otherwise, and must be."""

    def __init__(self, keyring: Keyring, identity: bytes, sink: Callable[[bytes], None], *,
                 data_key: bytes | None = None, wrap_nonce: bytes | None = None, salt: bytes | None = None,
                 nonce_prefix: bytes | None = None) -> None:
        data_key = data_key if data_key is not None else new_data_key()
        wrapped = wrap_key(keyring.active_key, keyring.active_id, data_key, identity, nonce=wrap_nonce)
        header = json.dumps({"key_id": keyring.active_id, "wrapped_key": wrapped}).encode()
        self._sealer = _Sealer(data_key, identity, sink, level=OBJECT_LEVEL, threads=0, salt=salt,
                               nonce_prefix=nonce_prefix)
        sink(OBJECT_MAGIC + _OBJECT_LENGTH.pack(len(header)) + header)

    def write(self, data: bytes) -> None:
        self._sealer.write(data)

    def close(self) -> None:
        self._sealer.close()


def seal_object(plain: bytes, keyring: Keyring, identity: bytes) -> bytes:
    """``plain`` in the object container, in one call."""
    parts: list[bytes] = []
    sealer = ObjectSealer(keyring, identity, parts.append)
    sealer.write(plain)
    sealer.close()
    return b"".join(parts)


def rewrap_object_head(
    leading: bytes, source: Keyring, target: Keyring, identity: bytes, where: str
) -> tuple[int, bytes]:
    """A container's header with its data key unwrapped under ``source`` and wrapped again under ``target``'s
    active key, for a copy between regions with different keyrings: the stream after it is copied as stored.

    ``leading`` is the start of the stored object, at least its whole header. Returns how many of its bytes
    the old header took and the new header to write in their place. The unwrap authenticates the key and
    ``identity``: a container of another object, or a forged header, fails here (:class:`IntegrityError`,
    or :class:`~strongroom.errors.KeyringError` for a key id ``source`` lacks)."""
    end, key_id, wrapped = _object_header(leading, where)
    data_key = unwrap_key(source.key(key_id), key_id, wrapped, identity)
    rewrapped = wrap_key(target.active_key, target.active_id, data_key, identity)
    new = json.dumps({"key_id": target.active_id, "wrapped_key": rewrapped}).encode()
    return end, OBJECT_MAGIC + _OBJECT_LENGTH.pack(len(new)) + new


def _object_header(buffer: bytes, where: str) -> tuple[int, str, str]:
    """(where the stream begins, key id, wrapped key) of an object container whose header ``buffer`` holds
    whole; :class:`IntegrityError` for anything else."""
    prefix = len(OBJECT_MAGIC) + _OBJECT_LENGTH.size
    if not buffer.startswith(OBJECT_MAGIC) or len(buffer) < prefix:
        raise IntegrityError(f"{where} is not a Strongroom sealed object")
    (length,) = _OBJECT_LENGTH.unpack_from(buffer, len(OBJECT_MAGIC))
    if len(buffer) < prefix + length:
        raise IntegrityError(f"{where}: malformed header (longer than the bytes given)")
    try:
        header = json.loads(buffer[prefix : prefix + length])
        return prefix + length, str(header["key_id"]), str(header["wrapped_key"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{where}: malformed header") from None


def unseal_object_stream(
    chunks: Iterable[bytes], keyring: Keyring, identity: bytes, where: str
) -> Iterator[bytes]:
    """Unseal an object container chunk by chunk, as :func:`unseal_stream` does a stream (same guarantees);
    the data key is unwrapped from its header with the keyring key it names."""
    chunks = iter(chunks)
    prefix = len(OBJECT_MAGIC) + _OBJECT_LENGTH.size
    buffer = b""
    for chunk in chunks:  # read until the header is complete, or is not a container's
        buffer += chunk
        if len(buffer) >= prefix:
            (length,) = _OBJECT_LENGTH.unpack_from(buffer, len(OBJECT_MAGIC))
            if len(buffer) >= prefix + length or not buffer.startswith(OBJECT_MAGIC):
                break
    end, key_id, wrapped = _object_header(buffer, where)
    data_key = unwrap_key(keyring.key(key_id), key_id, wrapped, identity)
    yield from unseal_stream(itertools.chain([buffer[end:]], chunks), data_key, identity, where)


def unseal_object(blob: bytes, keyring: Keyring, identity: bytes, where: str) -> bytes:
    """The one-shot form of :func:`unseal_object_stream`."""
    return b"".join(unseal_object_stream([blob], keyring, identity, where))
