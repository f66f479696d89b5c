"""``strongroom verify [--deep]`` through the CLI against the S3 servers: a region's damaged chunks named with
every snapshot that needs them (a flipped bit only by --deep, a deleted chunk by both), the other regions
sound, the restore falling back; whole snapshots verified as well."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom import layout
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack
from tests.integration.helpers import Chunky, CliResult, chunked_database, fingerprints

DB = "verified"
NORTH = REGIONS[2]


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def chunky(stack: Stack, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
           ) -> Chunky:
    return chunked_database(stack, tmp_path_factory.mktemp("verify"), DB, monkeypatch_module)


@pytest.fixture(scope="module")
def snapshots(chunky: Chunky) -> tuple[str, str]:
    """Two chunked snapshots of an unchanged database: they share every chunk but the dump's header."""
    return chunky.snapshot(), chunky.snapshot()


def verify(chunky: Chunky, *args: str) -> tuple[CliResult, dict]:
    result = chunky.cli("verify", "--database", DB, "--json", *args)
    return result, json.loads(result.stdout)


def problems(report: dict) -> dict[tuple[str, str], dict]:
    return {(p["region"], p["name"]): p for r in report["regions"] for p in r["problems"]}


def flip_last_bit(chunky: Chunky, key: str, region: str = PRIMARY) -> bytes:
    original = chunky.stack.read(key, region)
    chunky.stack.write(key, original[:-1] + bytes([original[-1] ^ 1]), region)  # same length
    return original


def test_sound_regions_verify_deep(chunky: Chunky, snapshots: tuple[str, str]) -> None:
    result, report = verify(chunky, "--deep")
    assert result.code == 0, result.stderr
    assert report["ok"] and [r["region"] for r in report["regions"]] == REGIONS
    manifest = chunky.manifest(snapshots[0])
    distinct = len({c.name for c in manifest.chunks})
    for region in report["regions"]:
        assert region["snapshots"] == 2 and region["objects"] == 2, region  # the two snapshots' globals
        # every distinct chunk counted (and read) once though both snapshots name nearly all of them
        assert distinct <= region["chunks"] <= distinct + 2, (region, distinct)
        assert region["read_bytes"] >= sum(c.stored for c in {c.name: c for c in manifest.chunks}.values())
    text = chunky.cli("verify", "--database", DB)
    assert text.code == 0 and "3 region(s) sound" in text.stdout, text.stdout + text.stderr


def test_a_damaged_and_a_deleted_chunk_are_named_with_every_snapshot_needing_them(
        chunky: Chunky, snapshots: tuple[str, str]) -> None:
    first, second = chunky.manifest(snapshots[0]), chunky.manifest(snapshots[1])
    shared = [c for c in first.chunks if c in set(second.chunks)]
    damaged, deleted = shared[len(shared) // 3], shared[2 * len(shared) // 3]
    damaged_key = layout.chunk_key(DB, first.chunk_key_id, damaged.name)
    deleted_key = layout.chunk_key(DB, first.chunk_key_id, deleted.name)
    client = chunky.stack.client_for(PRIMARY)
    original = flip_last_bit(chunky, damaged_key)
    kept = chunky.stack.read(deleted_key)
    client.delete_object(Bucket=BUCKETS[PRIMARY], Key=deleted_key)
    try:
        deep, report = verify(chunky, "--deep")
        assert deep.code == 1 and len(deep.error_lines) == 1, deep.stderr
        assert deep.error_lines[0].startswith("strongroom: error: verify (deep): 1 of 3 region(s) failed")
        found = problems(report)
        assert set(found) == {(PRIMARY, damaged.name), (PRIMARY, deleted.name)}, found
        assert found[(PRIMARY, deleted.name)]["why"] == "missing"
        assert "authentication" in found[(PRIMARY, damaged.name)]["why"]
        for problem in found.values():
            assert problem["snapshots"] == list(snapshots) and problem["kind"] == "chunk"
        assert [r["ok"] for r in report["regions"]] == [False, True, True]

        text = chunky.cli("verify", "--database", DB, "--deep", "--region", PRIMARY)
        assert text.code == 1
        lines = {line for line in text.stdout.splitlines() if line.startswith(f"{PRIMARY}: {DB}: chunk")}
        assert lines == {
            f"{PRIMARY}: {DB}: chunk {deleted.name} missing; needed by 2 snapshot(s): {', '.join(snapshots)}",
            f"{PRIMARY}: {DB}: chunk {damaged.name} {found[(PRIMARY, damaged.name)]['why']}; needed by 2 "
            f"snapshot(s): {', '.join(snapshots)}",
        }, text.stdout

        shallow, report = verify(chunky)  # lengths only: the flipped bit goes unseen
        assert shallow.code == 1, shallow.stderr
        assert set(problems(report)) == {(PRIMARY, deleted.name)}
        assert all(r["read_bytes"] == 0 for r in report["regions"])

        for region in REGIONS[1:]:
            clean, _ = verify(chunky, "--deep", "--region", region)
            assert clean.code == 0, clean.stderr

        target = "verified_fallback"
        restored = chunky.restore(snapshots[1], target, None)  # the primary fails, the next region serves
        assert restored.code == 0, restored.stderr
        assert PRIMARY in restored.stderr and deleted.name in restored.stderr, restored.stderr
        assert fingerprints(chunky.stack.pg.connect_kwargs(target)) == fingerprints(
            chunky.stack.pg.connect_kwargs(DB))
    finally:
        chunky.stack.write(damaged_key, original)
        chunky.stack.write(deleted_key, kept)
    assert verify(chunky, "--deep")[0].code == 0


def test_whole_snapshots_verify_and_a_damaged_dump_fails_only_deep(
        chunky: Chunky, snapshots: tuple[str, str], tmp_path: Path) -> None:
    whole = tmp_path / "whole.yaml"
    doc = json.loads(chunky.config.read_text())
    doc["snapshot"]["format"] = "whole"
    whole.write_text(json.dumps(doc))
    result = chunky.cli("snapshot", "--database", DB, config=whole)
    assert result.code == 0, result.stderr
    newest = chunky.cli("list", "--database", DB, "--json")
    sid = json.loads(newest.stdout)[-1]["snapshot_id"]
    manifest = chunky.manifest(sid, NORTH)
    assert not manifest.chunked
    clean, report = verify(chunky, "--deep", "--region", NORTH)
    assert clean.code == 0, clean.stderr
    assert report["regions"][0]["snapshots"] == 3 and report["regions"][0]["objects"] == 4  # + dump, globals
    original = flip_last_bit(chunky, manifest.dump.key, NORTH)
    try:
        assert verify(chunky, "--region", NORTH)[0].code == 0  # same length: only a read can tell
        deep, report = verify(chunky, "--deep", "--region", NORTH)
        assert deep.code == 1
        assert list(problems(report)) == [(NORTH, manifest.dump.key)]
        assert problems(report)[(NORTH, manifest.dump.key)]["snapshots"] == [sid]
    finally:
        chunky.stack.write(manifest.dump.key, original, NORTH)
