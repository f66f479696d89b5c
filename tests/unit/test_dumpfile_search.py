"""The chunked byte search that finds data blocks in a dump: a match is found wherever it falls, also
across the boundary between two reads, never before the start position, and searches one after the other
through the same scanner find what separate searches find."""

import io
import random

import pytest

from strongroom import dumpfile


class _File(io.BytesIO):
    def fileno(self) -> int:  # the scanner only reads and seeks; fileno is never called
        raise AssertionError("unused")


def find(blob: bytes, pattern: bytes, start: int) -> int:
    return dumpfile._Scanner(_File(blob), longest=len(pattern)).find(pattern, start)


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
            assert find(blob, pattern, start) == blob.find(pattern, start)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_find_returns_minus_one_without_a_match_and_the_first_of_several(monkeypatch, chunk):
    monkeypatch.setattr(dumpfile, "CHUNK", chunk)
    assert find(b"abcabcab", b"abd", 0) == -1
    assert find(b"", b"a", 0) == -1
    assert find(b"xxabyyabzz", b"ab", 0) == 2
    assert find(b"xxabyyabzz", b"ab", 3) == 6


@pytest.mark.parametrize("chunk", [1, 3, 16, 4096])
def test_successive_searches_through_one_scanner_find_every_block_in_order(monkeypatch, chunk):
    monkeypatch.setattr(dumpfile, "CHUNK", chunk)
    rng = random.Random(chunk)
    sep = b"\x00\x00\x00\x00\x00"
    blob = b"".join(rng.randbytes(rng.randrange(0, 30)).replace(b"\x00", b"\x02") + sep + bytes([1, 0, i])
                    for i in range(1, 40))
    scanner = dumpfile._Scanner(_File(blob), longest=len(sep) + 3)
    at = 0
    for i in range(1, 40):
        pattern = sep + bytes([1, 0, i])
        expected = blob.find(pattern, at)
        assert expected >= 0
        assert scanner.find(pattern, at) == expected
        at = expected + len(sep)
    assert scanner.find(sep + bytes([1, 0, 40]), at) == -1
    assert scanner.find(sep, 0) == blob.find(sep)  # a search behind the window reads again from there
