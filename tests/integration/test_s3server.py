"""The local S3 server (scripts/s3server.py) frees what S3 no longer holds (moto's registry of every object it
ever made, and the copies of a whole bucket that each version listing makes, ran a session's server out of
memory: the kernel killed it mid-suite), and reads only a ranged GET's range (moto read the whole object for
each range, on the cores the tests and benchmarks run on)."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator

import pytest

from devstack import MotoServer

BUCKET = "s3server-test"


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    moto = MotoServer().start()
    moto.create_bucket(BUCKET, "eu-central-1")  # versioned
    yield moto
    moto.stop()


def _tracked_keys(server: MotoServer) -> int:
    with urllib.request.urlopen(f"{server.endpoint}/moto-api/data.json", timeout=10) as answer:  # noqa: S310
        return len(json.loads(answer.read())["s3"]["FakeKey"])


def _rss_mib(server: MotoServer) -> int:
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) // 1024


def test_no_object_version_or_listing_copy_stays_in_the_servers_registry(server: MotoServer) -> None:
    client = server.client()
    for _ in range(3):
        client.put_object(Bucket=BUCKET, Key="registry/k", Body=b"x" * 1000)
    assert len(client.list_object_versions(Bucket=BUCKET, Prefix="registry/")["Versions"]) == 3
    assert _tracked_keys(server) == 0  # moto itself records 6: three versions, three copies made by the listing


def test_listing_the_versions_of_a_bucket_again_and_again_does_not_grow_the_server(server: MotoServer) -> None:
    client = server.client()
    for i in range(10):  # 40 MB, each object under moto's in-memory limit
        client.put_object(Bucket=BUCKET, Key=f"bulk/{i}", Body=os.urandom(4 * 1024 * 1024))
    client.list_object_versions(Bucket=BUCKET, Prefix="none/")
    before = _rss_mib(server)
    for _ in range(15):  # each listing copies every version in the bucket, whatever the prefix: 600 MB kept
        client.list_object_versions(Bucket=BUCKET, Prefix="none/")
    assert _rss_mib(server) - before < 200


def _bytes_read(server: MotoServer) -> int:
    """What the server has read through read() calls: sockets and its stored objects (rolled to files)."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])


def test_a_ranged_get_reads_its_range_and_answers_as_s3_does(server: MotoServer) -> None:
    client = server.client()
    data = os.urandom(48 * 1024 * 1024)  # above moto's in-memory limit: stored in a file
    client.put_object(Bucket=BUCKET, Key="ranges/big", Body=data)

    def get(spec: str) -> dict:
        return client.get_object(Bucket=BUCKET, Key="ranges/big", Range=spec)

    before = _bytes_read(server)
    for start in range(0, 8 * 2**20, 2**20):  # eight 1 MiB ranges: 8 MiB of the object, not 8 times 48
        answer = get(f"bytes={start}-{start + 2**20 - 1}")
        assert answer["Body"].read() == data[start:start + 2**20]
        assert answer["ContentRange"] == f"bytes {start}-{start + 2**20 - 1}/{len(data)}"
    assert _bytes_read(server) - before < 24 * 2**20

    assert get("bytes=-100")["Body"].read() == data[-100:]  # a suffix
    assert get(f"bytes={len(data) - 10}-")["Body"].read() == data[-10:]  # open-ended
    assert get(f"bytes=0-{len(data) + 5}")["Body"].read() == data  # past the end: up to the end
    whole = get("bytes=0-1,5-9")  # several ranges: S3 (and moto) answer with the whole object
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200 and whole["Body"].read() == data
    with pytest.raises(client.exceptions.ClientError, match="InvalidRange"):
        get(f"bytes={len(data)}-")
    assert client.get_object(Bucket=BUCKET, Key="ranges/big")["Body"].read() == data  # no range: whole
