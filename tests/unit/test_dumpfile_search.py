"""The chunked byte search that finds data blocks in a dump: a match is found wherever it falls, also
across the boundary between two reads, and never before the start position."""

import io
import random

import pytest

from strongroom import dumpfile


class _File(io.BytesIO):
    def fileno(self) -> int:  # _find only reads and seeks; fileno is never called
        raise AssertionError("unused")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_find_agrees_with_bytes_find_at_every_position(monkeypatch, chunk):
    monkeypatch.setattr(dumpfile, "CHUNK", chunk)
    rng = random.Random(chunk)
    pattern = b"\x00\x00\x00\x00\x00\x01\x00\x07\x00\x00\x00"
    for at in range(0, 40):
        data = bytearray(rng.randbytes(60).replace(b"\x00", b"\x01"))
        data[at : at + len(pattern)] = pattern
        blob = bytes(data)
        for start in (0, at, at + 1):
            assert dumpfile._find(_File(blob), pattern, start) == blob.find(pattern, start)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_find_returns_minus_one_without_a_match_and_the_first_of_several(monkeypatch, chunk):
    monkeypatch.setattr(dumpfile, "CHUNK", chunk)
    assert dumpfile._find(_File(b"abcabcab"), b"abd", 0) == -1
    assert dumpfile._find(_File(b""), b"a", 0) == -1
    assert dumpfile._find(_File(b"xxabyyabzz"), b"ab", 0) == 2
    assert dumpfile._find(_File(b"xxabyyabzz"), b"ab", 3) == 6
