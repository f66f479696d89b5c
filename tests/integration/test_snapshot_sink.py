"""The snapshot pipeline (``strongroom.snapshot.stream_dump``) streams into any sink: the landing region's
upload in ``take_snapshot``, a file or nothing in the benchmark, which so measures the code the product runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import zstandard

from strongroom import envelope, postgres, snapshot
from strongroom.postgres import PgSettings
from tests.conftest import Stack


def _settings(stack: Stack) -> PgSettings:
    return PgSettings(dbname="shop", host="127.0.0.1", port=stack.pg.port, user="postgres",
                      password=stack.pg.password)


def test_stream_dump_writes_the_sealed_dump_into_a_file(stack: Stack, config, tmp_path: Path) -> None:
    settings, key, path = _settings(stack), envelope.new_data_key(), tmp_path / "dump.srenc"
    with path.open("wb") as sink, postgres.snapshot_session(settings) as session:
        stats, counter = snapshot.stream_dump(config, session, settings, "shop", "sink-test", key, sink.write)

    sealed = path.read_bytes()
    assert (len(sealed), hashlib.sha256(sealed).hexdigest()) == (stats.stored_size, stats.sha256)
    decryptor = envelope.StreamDecryptor(key, envelope.object_identity("dump", "shop", "sink-test"))
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(decryptor.update(sealed) + decryptor.finalize())
    assert len(plain) == stats.plain_size and plain.startswith(b"PGDMP")  # pg_dump's custom format
    assert counter.counts == postgres.count_rows(settings)  # the row counter ran beside it, as in a snapshot
    assert counter.inventory["relations"]


def test_a_sink_that_fails_stops_the_dump_with_its_error(stack: Stack, config) -> None:
    class Refused(Exception):
        pass

    def refuse(block: bytes) -> None:
        raise Refused

    settings = _settings(stack)
    with postgres.snapshot_session(settings) as session, pytest.raises(Refused):
        snapshot.stream_dump(config, session, settings, "shop", "sink-test", envelope.new_data_key(), refuse)
