"""The staleness monitor against the real S3 API and a real SMTP server: stale alerts, fresh stays quiet,
a persisting condition alerts again only after an hour, and the backup_monitor DAG does it end to end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from strongroom import layout, records
from strongroom.drill import RESULT_KIND, DrillResult
from tests.conftest import PRIMARY, REGIONS, ROOT, Stack, conn_id, write_config
from tests.mailsink import MailSink

ONCALL = ["oncall@example.test"]


@pytest.fixture(scope="module")
def monitored(stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    """Buckets of its own (other tests' snapshots and keys must not leak in), one fresh snapshot of shop in
    every region, and a passed restore test of it."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    buckets = {r: f"sr-mon-{r}" for r in REGIONS}
    for region, bucket in buckets.items():
        stack.servers[region].create_bucket(bucket, region)
    regions = [{"name": r, "bucket": buckets[r], "aws_conn_id": conn_id(r)} for r in REGIONS]
    regions[0]["keyring_conn_id"] = "kr_primary"
    folder = tmp_path_factory.mktemp("monitor")
    alerts = {"email_to": ONCALL, "smtp_conn_id": "smtp_alerts", "staleness_threshold": "75m"}
    path = write_config(folder / "monitor.yaml", regions=regions, alerts=alerts,
                        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"}])
    config = load_config(path)
    taken = snapshot_database(config, "shop", connections())
    tested = DrillResult("shop", taken["snapshot_id"], PRIMARY, datetime.now(UTC).isoformat(), success=True,
                         phases={"download": 0.5, "restore": 1.0},
                         docs_key="restore-tests/shop/run/docs/index.html",
                         result_key="restore-tests/shop/20990101T000000Z-aaaaaa/result.json")
    primary_store = connections().store(config.primary, config.transfer)
    records.write(primary_store, connections().keyring(config.keyring_conn_id(config.primary)), tested.result_key,
                  tested.to_dict(), kind=RESULT_KIND)
    both = write_config(folder / "with-ghost.yaml", regions=regions, alerts=alerts,
                        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"},
                                   {"name": "ghost", "postgres_conn_id": "pg_shop"}])
    return config, buckets, both


def test_stale_alerts_fresh_stays_quiet_and_repeats_hourly(stack: Stack, mail: MailSink, monitored) -> None:
    from strongroom.airflow_adapter import connections, send_alert
    from strongroom.monitor import run_monitor

    config, buckets, _ = monitored
    run = partial(run_monitor, config, connections(), partial(send_alert, config))
    start = datetime.now(UTC)
    mail.clear()

    quiet = run(now=start + timedelta(minutes=5))
    assert quiet["alerted"] == [] and quiet["conditions"] == 0
    assert mail.received(timeout=0.5) == []

    stale = run(now=start + timedelta(hours=2))
    assert sorted(stale["alerted"]) == sorted(f"stale:shop:{r}" for r in REGIONS)
    [(recipients, message)] = mail.received(at_least=1)
    assert recipients == ONCALL
    assert message["Subject"].startswith("[strongroom] backup monitor: shop in ")
    for region in REGIONS:  # every condition in the subject, not the first "(+2 more)"
        assert f"shop in {region}: newest snapshot" in message["Subject"]
    body = MailSink.body(message)
    for region in REGIONS:
        assert f"shop in {region}: newest snapshot" in body
    assert "threshold 1h15m" in body
    state_object = stack.client_for(PRIMARY).get_object(Bucket=buckets[PRIMARY], Key=layout.MONITOR_STATE_KEY)
    state = json.loads(state_object["Body"].read())
    assert set(state["alerted"]) == {f"stale:shop:{r}" for r in REGIONS}

    still = run(now=start + timedelta(hours=2, minutes=30))
    assert still["alerted"] == [] and len(still["suppressed"]) == 3
    assert len(mail.received(timeout=0.5)) == 1

    again = run(now=start + timedelta(hours=3, minutes=1))
    assert len(again["alerted"]) == 3
    assert len(mail.received(at_least=2)) == 2

    # fresh again (a wider threshold; never back in time: a state dated in the future is a bad record):
    # quiet, and the state forgets it
    wider = config.model_copy(update={"alerts": config.alerts.model_copy(
        update={"staleness_threshold": timedelta(hours=5)})})
    cleared = run_monitor(wider, connections(), partial(send_alert, wider), now=start + timedelta(hours=3, minutes=2))
    assert cleared["alerted"] == [] and sorted(cleared["resolved"]) == sorted(state["alerted"])
    assert len(mail.received(timeout=0.5)) == 2


def test_backup_monitor_dag_alerts_on_the_stale_database_only(
    stack: Stack, mail: MailSink, monitored, airflow_db: None, monkeypatch: pytest.MonkeyPatch, statsd
) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils.state import DagRunState

    _, _, both = monitored
    monkeypatch.setenv("STRONGROOM_CONFIG", str(both))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_monitor.py"))
    assert bag.import_errors == {}

    _, buckets, _ = monitored
    for region in REGIONS:  # the test above dated its state hours ahead (a bad record now): start afresh
        stack.client_for(region).delete_object(Bucket=buckets[region], Key=layout.MONITOR_STATE_KEY)
    mail.clear()
    run = bag.dags["backup_monitor"].test(logical_date=None)
    assert run.state == DagRunState.SUCCESS
    [(_, message)] = mail.received(at_least=1)
    body = MailSink.body(message)
    assert "ghost has no committed snapshot in eu-central-1" in message["Subject"]
    # a fresh installation (no monitor state yet): ghost's first restore test is not due yet
    assert "ghost has no restore test on record" not in body
    assert "shop" not in body.replace("ghost", "")  # the fresh, tested database stays quiet
    # the age of the newest backup per database and region, as a StatsD gauge (none: present is 0)
    for region in ("eu-central-1", "eu-west-1", "eu-north-1"):
        assert statsd.values(f"airflow.strongroom.backup.present.ghost.{region}") == [(0.0, "g")]
        assert statsd.values(f"airflow.strongroom.backup.age_seconds.ghost.{region}", timeout=0) == []
        assert statsd.values(f"airflow.strongroom.backup.present.shop.{region}") == [(1.0, "g")]
        [(age, kind)] = statsd.values(f"airflow.strongroom.backup.age_seconds.shop.{region}")
        assert kind == "g" and 0 <= age < 3600


def test_monitor_dag_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("STRONGROOM_CONFIG", str(ROOT / "include" / "config" / "strongroom.example.yaml"))
    dag = DagBag(dag_folder=str(ROOT / "dags" / "backup_monitor.py")).dags["backup_monitor"]
    assert dag.timetable.expression == "*/10 * * * *"
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.doc_md and "once an hour" in dag.doc_md
    assert Path(dag.fileloc).name == "backup_monitor.py"
