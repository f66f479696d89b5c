"""Chunk names, the chunker's seed, the cut, and the chunked manifest's format."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime

import pytest

from strongroom import envelope
from strongroom.catalog import ChunkRef, Manifest, StoredObject
from strongroom.chunks import ChunkKey, cut
from strongroom.errors import IntegrityError
from strongroom.keyring import Keyring


def test_the_seed_fits_the_chunker_for_every_key() -> None:
    import pyfastcdc

    for _ in range(200):  # about half of all keys give a first HKDF byte >= 0x80: the top bit must not reach it
        seed = envelope.chunker_seed(os.urandom(32))
        assert 0 < seed < 2**63 and seed & 1
        pyfastcdc.FastCDC(2**20, seed=seed)


def test_names_are_keyed_and_deterministic() -> None:
    key, other = os.urandom(32), os.urandom(32)
    assert envelope.chunk_name(key, b"abc") == envelope.ChunkNamer(key).name(b"abc")
    assert envelope.chunk_name(key, b"abc") != envelope.chunk_name(other, b"abc")
    assert envelope.ChunkNamer(key).matches(b"abc", envelope.chunk_name(key, b"abc"))
    assert not envelope.ChunkNamer(key).matches(b"abd", envelope.chunk_name(key, b"abc"))


def test_the_cut_is_whole_deterministic_and_depends_on_the_key() -> None:
    data = os.urandom(6 * 2**20)
    key = ChunkKey.new()
    pieces = [bytes(p) for p in cut(io.BytesIO(data), key, 256 * 2**10)]
    assert b"".join(pieces) == data and len(pieces) > 5
    assert [bytes(p) for p in cut(io.BytesIO(data), key, 256 * 2**10)] == pieces
    other = [len(p) for p in cut(io.BytesIO(data), ChunkKey.new(), 256 * 2**10)]
    assert other != [len(p) for p in pieces]  # the boundaries are secret: another key cuts elsewhere


def _manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = dict(
        snapshot_id="20261126T140000Z-1a2b3c", database="shop", taken_at=datetime(2026, 11, 26, 14, tzinfo=UTC),
        server_version="15.8", pg_dump_version="15.8", key_id="k1", wrapped_key="x",
        dump=StoredObject("chunks/shop/0123456789abcdef/", 10, 8, 8, ""), tables={"public.t": 1},
        chunk_key_id="0123456789abcdef", chunks=(ChunkRef("a" * 64, 6, 5), ChunkRef("b" * 64, 4, 3)),
    )
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_a_chunked_manifest_round_trips_and_whole_ones_keep_their_shape() -> None:
    keyring = Keyring("k1", {"k1": os.urandom(32)})
    manifest = _manifest()
    raw = manifest.to_json(keyring)
    back = Manifest.from_json(raw, keyring, "test")
    assert back.chunked and back.chunks == manifest.chunks and back.chunk_key_id == manifest.chunk_key_id
    assert b'"format": "strongroom.snapshot/2"' in raw
    whole = _manifest(chunk_key_id="", chunks=()).to_json(keyring)
    assert b'"chunks"' not in whole and b"chunk_key_id" not in whole and b'"format": "strongroom.snapshot/1"' in whole


def test_a_chunk_name_strongroom_does_not_write_is_refused() -> None:
    keyring = Keyring("k1", {"k1": os.urandom(32)})
    raw = _manifest(chunks=(ChunkRef("../../manifests/x", 1, 1),)).to_json(keyring)
    with pytest.raises(IntegrityError, match="names a chunk"):
        Manifest.from_json(raw, keyring, "test")


@pytest.mark.parametrize(("rule", "flagged"), [
    ({"Filter": {"Prefix": ""}, "Expiration": {"Days": 31}}, True),
    ({"Filter": {"Prefix": "chunks/shop/"}, "Expiration": {"Days": 31}}, True),
    ({"Filter": {"Prefix": "databases/"}, "Expiration": {"Days": 31}}, False),
    ({"Filter": {"Prefix": ""}, "Expiration": {"ExpiredObjectDeleteMarker": True}}, False),
])
def test_init_buckets_flags_a_lifecycle_rule_that_expires_chunks(rule: dict[str, object], flagged: bool) -> None:
    from strongroom.buckets import _expires_chunks

    assert _expires_chunks(rule) is flagged
