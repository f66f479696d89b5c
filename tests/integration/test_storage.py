"""``storage``: every verb of ObjectStore against the S3 server (moto over HTTP), and against one that is
not there. The rest of the library reaches S3 only through these verbs (tests/unit/test_boundaries.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devstack import free_port
from strongroom.errors import NotFoundError, StorageError
from strongroom.storage import MiB, ObjectStore, RetryPolicy
from tests.conftest import PRIMARY, Stack

SOURCE, TARGET = "sr-storage-source", "sr-storage-target"


@pytest.fixture(scope="module")
def stores(stack: Stack) -> Iterator[tuple[ObjectStore, ObjectStore]]:
    server = stack.servers[PRIMARY]
    for bucket in (SOURCE, TARGET):
        server.create_bucket(bucket, PRIMARY)
    yield (ObjectStore(server.client(PRIMARY), SOURCE, region=PRIMARY),
           ObjectStore(server.client(PRIMARY), TARGET, region=PRIMARY))


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}/"


def test_objects_are_written_read_listed_inspected_and_deleted(stores, prefix: str) -> None:
    store, _ = stores
    store.put_bytes(f"{prefix}a", b"alpha")
    store.put_bytes(f"{prefix}b/c", b"gamma!")
    assert store.get_bytes(f"{prefix}a") == b"alpha"
    assert [(o.key, o.size) for o in store.list_objects(prefix)] == [(f"{prefix}a", 5), (f"{prefix}b/c", 6)]
    info = store.head(f"{prefix}b/c")
    assert info is not None and info.size == 6 and info.last_modified is not None
    assert store.head(f"{prefix}missing") is None
    with pytest.raises(NotFoundError, match="does not exist"):
        store.get_bytes(f"{prefix}missing")
    store.delete(f"{prefix}a")
    assert [o.key for o in store.list_objects(prefix)] == [f"{prefix}b/c"]


def test_versions_are_listed_read_and_deleted_for_good(stores, prefix: str) -> None:
    store, _ = stores
    key = f"{prefix}doc"
    store.put_bytes(key, b"first")
    store.put_bytes(key, b"second")
    store.delete(key)  # a delete marker on a versioned bucket
    versions = list(store.versions(prefix))
    assert sorted((v.delete_marker, v.is_latest) for v in versions) == [(False, False), (False, False), (True, True)]
    assert sorted(v.size for v in versions if not v.delete_marker) == [5, 6]
    [older] = [v for v in versions if v.size == 5]
    assert store.read_version(key, older.version_id) == b"first"
    assert b"".join(store.stream_version(key, older.version_id, chunk=2)) == b"first"
    assert store.delete_versions([(v.key, v.version_id) for v in versions]) == 3
    assert list(store.versions(prefix)) == []


def test_erasing_a_prefix_removes_every_version_and_marker_below_it_only(stores, prefix: str) -> None:
    store, _ = stores
    for name in ("gone/a", "gone/b", "kept/a"):
        store.put_bytes(f"{prefix}{name}", b"v1")
        store.put_bytes(f"{prefix}{name}", b"v2")
    store.delete(f"{prefix}gone/b")
    assert store.erase_prefix(f"{prefix}gone/") == 5
    assert list(store.versions(f"{prefix}gone/")) == []
    assert len(list(store.versions(f"{prefix}kept/"))) == 2


def test_erasing_deletes_a_version_written_before_versioning_was_enabled(stack: Stack) -> None:
    # the null version of an object written while the bucket was unversioned survives a delete without a
    # version id (S3 adds a delete marker above it): an erasure must name it
    bucket = "sr-storage-enabled-later"
    stack.servers[PRIMARY].create_bucket(bucket, PRIMARY)
    client = stack.servers[PRIMARY].client(PRIMARY)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    client.put_object(Bucket=bucket, Key="doc", Body=b"written before versioning")
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket=bucket, Key="doc", Body=b"written after")
    store = ObjectStore(client, bucket, region=PRIMARY)
    assert sorted(v.version_id is None for v in store.versions("")) == [False, True]
    assert store.erase_prefix("") == 2
    assert list(store.versions("")) == []
    client.delete_bucket(Bucket=bucket)  # empty: nothing hidden behind a marker


def test_deleting_more_than_one_batch_of_versions(stores, prefix: str) -> None:
    store, _ = stores
    keys = [(f"{prefix}{i:04d}", None) for i in range(1005)]
    for key, _ in keys:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"x")
    versions = [(v.key, v.version_id) for v in store.versions(prefix)]
    assert len(versions) == 1005
    assert store.delete_versions(versions) == 1005
    assert list(store.versions(prefix)) == []


def test_unfinished_uploads_are_listed_and_aborted(stores, prefix: str) -> None:
    store, _ = stores
    old = store.client.create_multipart_upload(Bucket=store.bucket, Key=f"{prefix}old")["UploadId"]
    [upload] = [u for u in store.uploads(prefix)]
    assert (upload.key, upload.upload_id) == (f"{prefix}old", old)
    cutoff = datetime.now(UTC) + timedelta(minutes=1)
    store.client.create_multipart_upload(Bucket=store.bucket, Key=f"{prefix}other")
    assert store.abort_stale_uploads(f"{prefix}old", cutoff) == 1
    assert [u.key for u in store.uploads(prefix)] == [f"{prefix}other"]
    store.abort_upload(f"{prefix}old", old)  # gone already: counts as aborted
    # none begun before 2000 (moto reports every upload as begun in 2010)
    assert store.abort_stale_uploads(prefix, datetime(2000, 1, 1, tzinfo=UTC)) == 0
    assert [u.key for u in store.uploads(prefix)] == [f"{prefix}other"]


def test_a_data_object_is_written_and_read_in_one_request_and_a_short_one_is_refused(stores, prefix: str) -> None:
    store, _ = stores
    data = os.urandom(3 * MiB + 7)
    store.put_data(f"{prefix}chunk", data)
    assert store.get_data(f"{prefix}chunk", len(data)) == data
    assert store.get_data(f"{prefix}chunk", 0) == b""
    store.put_data(f"{prefix}short", data[:100])
    with pytest.raises(StorageError, match="short read"):
        store.get_data(f"{prefix}short", 200)


def test_a_multipart_upload_and_a_ranged_parallel_read_round_trip(stores, prefix: str) -> None:
    store, _ = stores
    data = os.urandom(11 * MiB + 17)
    upload = store.multipart(f"{prefix}big", part_size=5 * MiB, max_part_size=64 * MiB, concurrency=2,
                             expected_size=len(data))
    with upload:
        for at in range(0, len(data), 3 * MiB):
            upload.write(data[at : at + 3 * MiB])
        assert upload.complete() == len(data)
    assert list(store.uploads(prefix)) == []
    back = b"".join(store.iter_chunks(f"{prefix}big", len(data), chunk_size=4 * MiB, concurrency=3))
    assert back == data
    tail = b"".join(store.iter_chunks(f"{prefix}big", len(data), chunk_size=4 * MiB, concurrency=2, start=10 * MiB))
    assert tail == data[10 * MiB :]


@pytest.mark.parametrize("limit", [1 << 40, 5 * MiB], ids=["single", "multipart"])
def test_server_side_copy_between_buckets(stores, prefix: str, limit: int) -> None:
    source, target = stores
    data = os.urandom(12 * MiB)
    source.put_bytes(f"{prefix}obj", data)
    how = target.copy_within(source, f"{prefix}obj", len(data), part_size=5 * MiB, max_part_size=64 * MiB,
                             single_copy_limit=limit)
    assert how == ("server-side copy" if limit > len(data) else "server-side multipart copy")
    assert target.get_bytes(f"{prefix}obj") == data
    assert list(target.uploads(prefix)) == []


def test_a_refused_server_side_copy_returns_none_and_leaves_nothing(stores, prefix: str) -> None:
    _, target = stores
    ghost = ObjectStore(target.client, "sr-storage-no-such-bucket", region=PRIMARY)
    for limit in (1 << 40, 5 * MiB):
        assert target.copy_within(ghost, f"{prefix}obj", 11 * MiB, part_size=5 * MiB, max_part_size=64 * MiB,
                                  single_copy_limit=limit) is None
    assert list(target.versions(prefix)) == [] and list(target.uploads(prefix)) == []


def test_bucket_configuration_is_created_read_and_set(stack: Stack) -> None:
    server = stack.servers[PRIMARY]
    store = ObjectStore(server.client(PRIMARY), f"sr-storage-config-{os.getpid()}", region=PRIMARY)
    assert store.bucket_exists() is False
    store.create_bucket(tags=[{"Key": "strongroom:managed", "Value": "true"}])
    assert store.bucket_exists() is True and store.ensure_bucket() is False
    assert (store.bucket_setting("tagging") or {}).get("TagSet") == [{"Key": "strongroom:managed", "Value": "true"}]
    assert store.versioning() is None
    assert store.bucket_setting("lifecycle") is None and store.bucket_setting("public_access_block") is None
    store.put_bucket_setting("versioning", {"Status": "Enabled"})
    assert store.versioning() == "Enabled"
    rules = [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "x/"}, "Expiration": {"Days": 3}}]
    store.put_bucket_setting("lifecycle", {"Rules": rules})
    assert [r["ID"] for r in (store.bucket_setting("lifecycle") or {})["Rules"]] == ["r"]
    fresh = ObjectStore(server.client(PRIMARY), f"sr-storage-review-{os.getpid()}", region=PRIMARY)
    assert fresh.ensure_bucket() is True and fresh.bucket_exists()


def _unreachable() -> ObjectStore:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name="eu-west-3",
        aws_access_key_id="testing", aws_secret_access_key="testing-secret",
        config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1, "mode": "standard"}))
    return ObjectStore(client, "sr-nowhere", region="eu-west-3", retry=RetryPolicy(stall_seconds=2, attempts=2,
                                                                                    delay=0.1))


VERBS = {
    "put_bytes": lambda s: s.put_bytes("k", b"x"),
    "get_bytes": lambda s: s.get_bytes("k"),
    "head": lambda s: s.head("k"),
    "list_objects": lambda s: list(s.list_objects("")),
    "delete": lambda s: s.delete("k"),
    "versions": lambda s: list(s.versions("")),
    "delete_versions": lambda s: s.delete_versions([("k", "v1")]),
    "erase_prefix": lambda s: s.erase_prefix("p/"),
    "uploads": lambda s: list(s.uploads()),
    "abort_upload": lambda s: s.abort_upload("k", "u1"),
    "abort_stale_uploads": lambda s: s.abort_stale_uploads("", datetime.now(UTC)),
    "read_version": lambda s: s.read_version("k", "v1"),
    "bucket_exists": lambda s: s.bucket_exists(),
    "create_bucket": lambda s: s.create_bucket(),
    "bucket_setting": lambda s: s.bucket_setting("lifecycle"),
    "put_bucket_setting": lambda s: s.put_bucket_setting("versioning", {"Status": "Enabled"}),
    "check_bucket": lambda s: s.check_bucket(),
    "put_data": lambda s: s.put_data("k", b"x"),
    "get_data": lambda s: s.get_data("k", 1),
    "iter_chunks": lambda s: list(s.iter_chunks("k", 10, chunk_size=5, concurrency=1)),
    "multipart": lambda s: s.multipart("k", part_size=5 * MiB, max_part_size=5 * MiB, concurrency=1).__enter__(),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_against_an_unreachable_server_fails_naming_the_region(verb: str) -> None:
    store = _unreachable()
    with pytest.raises(StorageError) as raised:
        VERBS[verb](store)
    assert "eu-west-3" in str(raised.value) or "sr-nowhere" in str(raised.value)
    assert "\n" not in str(raised.value)
