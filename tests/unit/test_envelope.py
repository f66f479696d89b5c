"""The envelope's verbs: a stream, a blob and the object container each round trip, chunked any way, and refuse
what is damaged (the stream's own damage cases are in ``test_crypto.py``)."""

from __future__ import annotations

import base64
import functools
import io
import json
import random
import struct

import pytest
import zstandard

from strongroom import envelope
from strongroom.errors import IntegrityError, KeyringError
from strongroom.keyring import Keyring

KEY = bytes(range(32))
IDENTITY = envelope.object_identity("dump", "shop", "20261126T140000Z-1a2b3c")
KEYRING = Keyring.from_extra({"active": "k2", "keys": {"k1": base64.b64encode(bytes(32)).decode(),
                                                       "k2": base64.b64encode(bytes(range(32))).decode()}})
CONTENT = envelope.object_identity("content", "media", "c0ffee")


@functools.cache
def plaintext(n: int) -> bytes:
    """Compressible, but not trivially: a few MiB of it spans several 1 MiB segments after zstd."""
    rng = random.Random(n)
    words = [rng.randbytes(rng.randint(1, 6)) for _ in range(4000)]
    return b"".join(rng.choices(words, k=n))[:n]  # every word has at least one byte


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def seal(plain: bytes) -> tuple[bytes, envelope.SealStats]:
    parts: list[bytes] = []
    stats = envelope.seal_stream(io.BytesIO(plain), parts.append, data_key=KEY, identity=IDENTITY, level=1)
    assert all(parts), "the sink never gets an empty block"
    return b"".join(parts), stats


@pytest.mark.parametrize("size", [0, 1, 5000, 3 * 2**20 + 17])
def test_a_sealed_stream_unseals_in_chunks_of_any_size(size: int) -> None:
    plain = plaintext(size)
    stored, stats = seal(plain)
    assert (stats.plain_size, stats.stored_size) == (size, len(stored))
    assert stats.stored_size == envelope.HEADER_SIZE + stats.compressed_size + envelope.TAG_SIZE * max(
        1, -(-stats.compressed_size // envelope.SEGMENT_SIZE))
    for chunk in (1, 7, envelope.SEGMENT_SIZE + 1, 5 * 2**20) if size < 10_000 else (4099, 5 * 2**20):
        pieces = list(envelope.unseal_stream(chunked(stored, chunk), KEY, IDENTITY, "here"))
        assert b"".join(pieces) == plain


def test_unsealing_holds_one_segment_at_a_time() -> None:
    """One download range of the whole object yields a piece per segment, not the whole plaintext."""
    plain = plaintext(3 * 2**20 + 17)
    stored, stats = seal(plain)
    assert stats.compressed_size > 2 * envelope.SEGMENT_SIZE
    pieces = list(envelope.unseal_stream([stored], KEY, IDENTITY, "here"))
    assert b"".join(pieces) == plain
    assert len(pieces) >= 3 and max(map(len, pieces)) < len(plain) / 2


def _restream(packed: bytes) -> bytes:
    """A valid stream (authentic segments) around any zstd bytes: damage below the encryption."""
    return envelope.encrypt_bytes(KEY, IDENTITY, packed)


def test_an_incomplete_or_extended_zstd_frame_is_an_integrity_error() -> None:
    sealed, _ = envelope.seal_blob(KEY, IDENTITY, b"CREATE ROLE app;\n" * 50)
    packed = envelope.decrypt_bytes(KEY, IDENTITY, sealed)
    for damaged, message in (
        (packed[:-3], "here: compressed stream is incomplete or has trailing data"),
        (packed + b"\x00", "here: compressed stream is incomplete or has trailing data"),
        (packed + packed, "here: compressed stream is incomplete or has trailing data"),
        (b"not zstd at all", "here: decompression failed"),
    ):
        with pytest.raises(IntegrityError, match=message):
            envelope.unseal_blob(KEY, IDENTITY, _restream(damaged), "here")


def test_a_blob_round_trips_and_records_its_content_size() -> None:
    plain = b"CREATE ROLE app;\n" * 50
    sealed, stats = envelope.seal_blob(KEY, IDENTITY, plain)
    assert (stats.plain_size, stats.stored_size) == (len(plain), len(sealed))
    assert envelope.unseal_blob(KEY, IDENTITY, sealed, "here") == plain
    packed = envelope.decrypt_bytes(KEY, IDENTITY, sealed)
    assert len(packed) == stats.compressed_size
    assert zstandard.get_frame_parameters(packed).content_size == len(plain)  # what older readers need
    with pytest.raises(IntegrityError, match="failed authentication"):
        envelope.unseal_blob(KEY, envelope.object_identity("globals", "shop", "other"), sealed, "here")


@pytest.mark.parametrize("size", [0, 100, 3 * 2**20 + 5])
def test_the_object_container_round_trips_streamed_and_chunked(size: int) -> None:
    plain = plaintext(size)
    parts: list[bytes] = []
    sealer = envelope.ObjectSealer(KEYRING, CONTENT, parts.append)
    for piece in chunked(plain, 100_000):
        sealer.write(piece)
    sealer.close()
    blob = b"".join(parts)
    assert blob.startswith(envelope.OBJECT_MAGIC)
    (length,) = struct.unpack_from(">I", blob, 8)
    header = json.loads(blob[12 : 12 + length])
    assert set(header) == {"key_id", "wrapped_key"} and header["key_id"] == "k2"
    assert blob[12 + length :].startswith(envelope.MAGIC)
    assert envelope.unseal_object(blob, KEYRING, CONTENT, "here") == plain
    for chunk in (1, 11, 12 + length, 2**20) if size < 10_000 else (12 + length, 2**20):
        assert b"".join(envelope.unseal_object_stream(chunked(blob, chunk), KEYRING, CONTENT, "here")) == plain
    assert envelope.unseal_object(envelope.seal_object(plain, KEYRING, CONTENT), KEYRING, CONTENT, "here") == plain


def test_the_object_container_refuses_what_is_not_its_own() -> None:
    blob = envelope.seal_object(b"a content", KEYRING, CONTENT)
    (length,) = struct.unpack_from(">I", blob, 8)
    header = json.loads(blob[12 : 12 + length])

    def with_header(doc: object) -> bytes:
        raw = json.dumps(doc).encode()
        return blob[:8] + struct.pack(">I", len(raw)) + raw + blob[12 + length :]

    for damaged, message in (
        (b"", "here is not a Strongroom sealed object"),
        (blob[:10], "here is not a Strongroom sealed object"),
        (b"X" + blob[1:], "here is not a Strongroom sealed object"),
        (blob[: 12 + length - 1], "here: malformed header"),
        (with_header({"key_id": "k2"}), "here: malformed header"),
        (with_header(dict(header, key_id="k1")), "does not open under key id 'k1'"),
        (blob[:-1], "failed authentication"),
        (blob + b"\x00", "failed authentication"),
    ):
        with pytest.raises(IntegrityError, match=message):
            envelope.unseal_object(damaged, KEYRING, CONTENT, "here")
    with pytest.raises(IntegrityError, match="does not open"):  # another object's identity
        envelope.unseal_object(blob, KEYRING, envelope.object_identity("content", "media", "other"), "here")
    with pytest.raises(KeyringError):
        envelope.unseal_object(with_header(dict(header, key_id="k9")), KEYRING, CONTENT, "here")
