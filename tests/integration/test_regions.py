"""Multi-region copies: losing one region loses nothing.

Every region is a separate S3 server (its own moto process on its own port)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from strongroom import layout, replication
from strongroom.config import ENV_VAR, load_config
from strongroom.errors import IntegrityError
from strongroom.replication import SnapshotRef
from strongroom.snapshot import take_snapshot
from strongroom.storage import ObjectStore
from tests.conftest import BUCKETS, PRIMARY, REGIONS, Stack, conn_id, env_name, write_config
from tests.integration.helpers import fingerprints, run_cli

NORTH = "eu-north-1"


class Blackhole:
    """A listener that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_region_conn(port: int) -> str:
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing-secret",
                       "extra": {"region_name": NORTH, "endpoint_url": f"http://127.0.0.1:{port}"}})


@pytest.fixture()
def fast_timeouts(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "fast.yaml",
        transfer={"part_size": "5MiB", "upload_concurrency": 2, "connect_timeout": "1s", "read_timeout": "2s",
                  "max_attempts": 1},
    )


def status_rows(config_path: Path) -> dict[tuple[str, str], dict]:
    result = run_cli("--config", str(config_path), "status", "--json")
    assert result.code == 0, result.stderr
    board = json.loads(result.stdout)
    return {(row["database"], row["region"]): row for db in board["databases"] for row in db["regions"]}


@pytest.mark.parametrize("outage", ["closed port", "listener that never answers"])
def test_outage_commits_elsewhere_fails_naming_the_region_and_is_repaired(
    outage: str, stack: Stack, fast_timeouts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hole = Blackhole() if outage != "closed port" else None
    port = hole.port if hole else closed_port()
    try:
        down = run_cli("--config", str(fast_timeouts), "snapshot", "--database", "shop",
                       env={env_name(conn_id(NORTH)): dead_region_conn(port)}, timeout=180)
    finally:
        if hole:
            hole.close()
    assert down.code == 1
    assert len(down.error_lines) == 1 and "not committed in eu-north-1" in down.error_lines[0], down.stderr
    snapshot_id = down.error_lines[0].split("snapshot ")[1].split()[0]
    for region in (PRIMARY, "eu-west-1"):  # the healthy regions committed within the same run
        assert f"databases/shop/manifests/{snapshot_id}.json" in stack.list_keys(region)
    assert f"databases/shop/manifests/{snapshot_id}.json" not in stack.list_keys(NORTH)
    assert snapshot_id in status_rows(fast_timeouts)[("shop", NORTH)]["gaps"]

    # the region is back: the next run copies the gap from a healthy region, and status shows none
    repaired = run_cli("--config", str(fast_timeouts), "snapshot", "--database", "shop")
    assert repaired.code == 0, repaired.stderr
    assert f"databases/shop/manifests/{snapshot_id}.json" in stack.list_keys(NORTH)
    rows = status_rows(fast_timeouts)
    for region in REGIONS:
        assert rows[("shop", region)]["gaps"] == [], region
        assert rows[("shop", region)]["last_error"] is None


@pytest.mark.parametrize("outage", ["closed port", "half-open endpoint"])
def test_dag_run_with_a_region_down_fails_naming_it_after_the_others_commit(
    outage: str, stack: Stack, fast_timeouts: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: None
) -> None:
    """The DAG's per-region chains: the region that is down (refusing connections, or accepting them and
    never answering) fails its own tasks within the control deadline, the other regions commit."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    hole = Blackhole() if outage != "closed port" else None
    monkeypatch.setenv(env_name(conn_id(NORTH)), dead_region_conn(hole.port if hole else closed_port()))
    monkeypatch.setenv(ENV_VAR, str(fast_timeouts))
    try:
        dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags")).dags["snapshot_databases"]
        run = dag.test(logical_date=None)
    finally:
        if hole:
            hole.close()
    assert run.state == DagRunState.FAILED
    tis = run.get_task_instances()
    states = {(ti.task_id, ti.map_index): ti.state for ti in tis}
    commits = [ti for ti in tis if ti.task_id == "region.commit"]
    assert sorted(ti.state for ti in commits).count("success") == 2 * (len(REGIONS) - 1)
    assert states[("check_regions", -1)] == "failed"
    dumps = [ti for ti in tis if ti.task_id.startswith("snapshot_and_encrypt.")]
    assert dumps and all(ti.state == "success" for ti in dumps)
    # the down region's chain (one per database) and nothing else failed: its replicate gave up, its
    # verify and commit never ran
    down = [ti for ti in tis if ti.task_id.startswith("region.") and ti.state != "success"]
    assert sorted(ti.task_id for ti in down) == sorted(["region.replicate", "region.verify", "region.commit"] * 2)
    # bounded: the failing tasks gave up within the deadlines (1 s connect, 2 s control, one attempt),
    # nowhere near the tasks' execution_timeout (run_timeout, 50 min); the bound is generous
    for ti in down:
        if ti.start_date and ti.end_date:
            assert (ti.end_date - ti.start_date).total_seconds() < 120, (ti.task_id, ti.map_index)


def test_copy_corrupted_in_one_region_is_caught_by_verify_and_never_committed(stack: Stack, config, conns) -> None:
    landed = take_snapshot(config, "bulk", conns)
    ref = SnapshotRef(landed.snapshot_id, landed.region)
    refs = replication.replicate_region(config, "bulk", "eu-west-1", conns, ref)
    key = layout.data_key("bulk", landed.snapshot_id, "dump.zst.srenc")
    good = stack.read(key, "eu-west-1")
    bad = good[:5000] + bytes([good[5000] ^ 0x40]) + good[5001:]  # same size, no metadata changed
    stack.write(key, bad, "eu-west-1")
    with pytest.raises(IntegrityError, match=r"eu-west-1.*SHA-256"):
        replication.verify_region(config, "bulk", "eu-west-1", conns, refs)
    assert f"databases/bulk/manifests/{landed.snapshot_id}.json" not in stack.list_keys("eu-west-1")
    # the other regions go on regardless
    for region in (PRIMARY, NORTH):
        replication.sync_region(config, "bulk", region, conns, ref)
        assert f"databases/bulk/manifests/{landed.snapshot_id}.json" in stack.list_keys(region)


def test_each_region_manifest_wraps_the_key_with_its_own_keyring(stack: Stack, config, conns) -> None:
    result = run_cli("snapshot", "--database", "shop", "--json")
    assert result.code == 0, result.stderr
    snapshot_id = json.loads(result.stdout)[0]["snapshot_id"]
    docs = {r: json.loads(stack.read(layout.manifest_key("shop", snapshot_id), r)) for r in REGIONS}
    assert docs[PRIMARY]["encryption"]["key_id"] == "k-primary-1"
    assert {docs[r]["encryption"]["key_id"] for r in REGIONS[1:]} == {"k-test-1"}
    assert docs[PRIMARY]["mac_key_id"] == "k-primary-1"
    assert len({docs[r]["encryption"]["wrapped_key"] for r in REGIONS}) == len(REGIONS)


def test_gaps_that_expire_within_the_hour_are_not_repaired(stack: Stack, config, conns) -> None:
    landed = take_snapshot(config, "shop", conns)
    ref = SnapshotRef(landed.snapshot_id, landed.region)
    replication.sync_region(config, "shop", PRIMARY, conns, ref)
    taken = layout.snapshot_id_time(landed.snapshot_id)
    soon_expiring = taken + config.retention - timedelta(minutes=30)
    assert ref.snapshot_id not in [g.snapshot_id for g in replication.find_gaps(config, "shop", NORTH, conns,
                                                                                 soon_expiring)]
    gaps = replication.find_gaps(config, "shop", NORTH, conns, taken)
    assert SnapshotRef(landed.snapshot_id, PRIMARY) in gaps
    for region in REGIONS[1:]:
        replication.sync_region(config, "shop", region, conns, ref)


@pytest.fixture(scope="module")
def shared_endpoint(stack: Stack, config) -> Iterator[tuple[ObjectStore, ObjectStore]]:
    """Two buckets behind one endpoint, where a server-side copy is possible."""
    server = stack.servers[PRIMARY]
    server.create_bucket("sr-test-same-endpoint", "eu-central-1")
    client = server.client(PRIMARY)
    yield (ObjectStore(client, BUCKETS[PRIMARY], region=PRIMARY),
           ObjectStore(client, "sr-test-same-endpoint", region=PRIMARY))


@pytest.mark.parametrize(("limit", "how"), [(5 * 10**9, "server-side copy"), (1, "server-side multipart copy")])
def test_copies_are_server_side_when_the_endpoint_is_shared(
    shared_endpoint: tuple[ObjectStore, ObjectStore], config, limit: int, how: str
) -> None:
    source, target = shared_endpoint
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts of the multipart copy
    source.put_bytes("copy-test/object", data)
    assert replication.copy_object(source, target, "copy-test/object", len(data), config.transfer,
                                   single_copy_limit=limit) == how
    assert target.get_bytes("copy-test/object") == data


def test_copies_stream_between_separate_servers(stack: Stack, config, conns) -> None:
    source = conns.store(config.region(PRIMARY), config.transfer)
    target = conns.store(config.region(NORTH), config.transfer)
    data = bytes(reversed(range(256))) * (40 * 1024)
    source.put_bytes("copy-test/streamed", data)
    assert replication.copy_object(source, target, "copy-test/streamed", len(data), config.transfer) == "streamed copy"
    assert target.get_bytes("copy-test/streamed") == data


def test_region_loss_drill_restores_with_the_cli_alone(stack: Stack, tmp_path: Path) -> None:
    """Stop the primary region's server entirely and drop its keyring; restore from another region."""
    from devstack import MotoServer

    servers = {r: MotoServer().start() for r in REGIONS}
    try:
        for region, server in servers.items():
            server.create_bucket(BUCKETS[region], region)
        env = {env_name(conn_id(r)): servers[r].airflow_conn(r) for r in REGIONS}
        taken = run_cli("snapshot", "--database", "shop", env=env)
        assert taken.code == 0, taken.stderr

        servers[PRIMARY].stop()
        env["PGPASSWORD"] = stack.pg.password
        env["AIRFLOW_HOME"] = str(tmp_path / "no-airflow-here")  # no Airflow database at all
        dsn = f"host=127.0.0.1 port={stack.pg.port} user=postgres dbname=shop_after_region_loss"
        restored = run_cli("restore", "--database", "shop", "--target-dsn", dsn, "--json", env=env,
                           unset=("AIRFLOW_CONN_KR_PRIMARY",))
        assert restored.code == 0, restored.stderr
        assert json.loads(restored.stdout)["region"] == "eu-west-1"
        assert "eu-central-1" in restored.stderr  # says why the primary was not used
        assert fingerprints(stack.pg.connect_kwargs("shop_after_region_loss")) == fingerprints(
            stack.pg.connect_kwargs("shop"))
    finally:
        for server in servers.values():
            server.stop()


def test_example_config_has_three_eu_regions() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "include/config/strongroom.example.yaml")
    assert len(config.regions) >= 3
    assert {r.country for r in config.regions} <= {"DE", "IE", "SE", "FR", "IT", "ES", "NL", "PL"}
