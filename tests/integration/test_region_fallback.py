"""The primary, else the next region that answers (``strongroom.regions``), against real S3 servers: the
primary's connection points at a port nobody listens on, the other regions are moto servers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import free_port
from strongroom import drill, restore
from strongroom.config import Config, load_config
from strongroom.errors import NoRegionError, NotFoundError, StorageError
from strongroom.regions import first_answer
from strongroom.snapshot import snapshot_database
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, env_name, region_entries, write_config
from tests.integration.helpers import run_cli

WEST, NORTH = REGIONS[1], REGIONS[2]
DEAD_CONN = "s3_fallback_dead"
PROBE = "fallback-probe/only-in-north"
FAST = {"part_size": "5MiB", "upload_concurrency": 2, "connect_timeout": "1s", "read_timeout": "2s",
        "max_attempts": 1}


@pytest.fixture(scope="module")
def shop_snapshot(stack: Stack, config, conns) -> dict:
    stack.servers[NORTH].client(NORTH).put_object(Bucket=BUCKETS[NORTH], Key=PROBE, Body=b"north")
    return snapshot_database(config, "shop", conns)


@pytest.fixture()
def dead_primary(stack: Stack, shop_snapshot: dict, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, str]]]:
    """A configuration whose primary (its bucket as before) is reached through a connection that answers
    nothing: connection refused, at once."""
    dead = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                       "extra": {"region_name": PRIMARY, "endpoint_url": f"http://127.0.0.1:{free_port()}"}})
    env = {env_name(DEAD_CONN): dead}
    monkeypatch.setenv(env_name(DEAD_CONN), dead)
    entries = region_entries()
    entries[0]["aws_conn_id"] = DEAD_CONN
    yield write_config(tmp_path / "dead-primary.yaml", regions=entries, transfer=FAST), env


def test_the_next_region_that_answers_serves_and_each_passed_over_is_named(
    dead_primary, conns, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(dead_primary[0])
    with caplog.at_level(logging.INFO, logger="strongroom.regions"):
        answer = first_answer(config, "the probe", lambda r: conns.store(r, config.transfer).get_bytes(PROBE))
    assert (answer.region.name, answer.value) == (NORTH, b"north")
    assert [s.region for s in answer.skipped] == [PRIMARY, WEST]
    assert answer.skipped[0].retryable and "127.0.0.1" in answer.skipped[0].reason  # unreachable: may come back
    assert not answer.skipped[1].retryable and "does not exist" in answer.skipped[1].reason
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"the probe: served by region {NORTH} after passing over {PRIMARY}: ")
    assert f"; {WEST}: " in warning and "\n" not in warning


def test_when_no_region_answers_one_error_names_every_region_tried(dead_primary, conns) -> None:
    config = load_config(dead_primary[0])
    with pytest.raises(NoRegionError) as caught:
        first_answer(config, "a key nobody wrote",
                     lambda r: conns.store(r, config.transfer).get_bytes("fallback-probe/nowhere"))
    message = str(caught.value)
    assert message.startswith(f"no region could serve a key nobody wrote: {PRIMARY}: ")
    assert f"; {WEST}: " in message and f"; {NORTH}: " in message and "\n" not in message
    assert caught.value.retryable  # the primary was unreachable, not empty: a retry may find it


def test_a_named_region_is_the_only_one_asked(dead_primary, conns) -> None:
    config = load_config(dead_primary[0])
    with pytest.raises(NotFoundError, match="does not exist"):
        first_answer(config, "the probe", lambda r: conns.store(r, config.transfer).get_bytes(PROBE), region=WEST)
    with pytest.raises(StorageError):
        first_answer(config, "the probe", lambda r: conns.store(r, config.transfer).get_bytes(PROBE), region=PRIMARY)


def test_readers_fall_back_and_a_restore_test_never_does(dead_primary, conns, shop_snapshot: dict) -> None:
    config: Config = load_config(dead_primary[0])
    manifest, found_in = restore.locate_snapshot(config, conns, "shop", snapshot_id=shop_snapshot["snapshot_id"],
                                                 at=None, region=None)
    assert (manifest.snapshot_id, found_in) == (shop_snapshot["snapshot_id"], WEST)

    listed = run_cli("--config", str(dead_primary[0]), "list", "--database", "shop", env=dead_primary[1])
    assert listed.code == 0, listed.stderr
    assert shop_snapshot["snapshot_id"] in listed.stdout and f"(listed from region {WEST})" in listed.stdout
    assert f"listed from region {WEST} after passing over {PRIMARY}: " in listed.stderr

    # the restore test of the primary fails on the primary: it tests that region, or nothing
    result = drill.check_snapshot(config, conns, "shop", shop_snapshot["snapshot_id"], config.region(PRIMARY),
                                  record=False)
    assert not result.success and result.region == PRIMARY
    assert result.error and result.error.startswith("StorageError: ") and WEST not in result.error
