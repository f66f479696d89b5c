"""Records an attacker with write access to a bucket cannot forge (issue 15, item 5).

Status records, run records and restore-test results are sealed (``strongroom.records``); one that does
not authenticate, or that is dated in the future, is ignored and alerted on, never trusted. Against the
real S3 API (moto), a real SMTP server and the real CLI.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from strongroom import layout, records
from strongroom.drill import RESULT_KIND, DrillResult
from strongroom.keyring import Keyring
from strongroom.monitor import STATE_KIND
from strongroom.replication import RUN_RECORD_KIND
from tests.conftest import PRIMARY, REGIONS, Stack, conn_id, write_config
from tests.integration.helpers import run_cli
from tests.mailsink import MailSink

ONCALL = ["oncall@example.test"]
FUTURE = "2099-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def guarded(stack: Stack, tmp_path_factory: pytest.TempPathFactory):
    """Buckets of its own, one fresh snapshot of shop in every region, and a genuine, sealed, FAILED
    restore test of it (what a forger would like to hide)."""
    from strongroom.airflow_adapter import connections
    from strongroom.config import load_config
    from strongroom.snapshot import snapshot_database

    buckets = {r: f"sr-auth-{r}" for r in REGIONS}
    for region, bucket in buckets.items():
        stack.servers[region].create_bucket(bucket, region)
    regions = [{"name": r, "bucket": buckets[r], "aws_conn_id": conn_id(r)} for r in REGIONS]
    regions[0]["keyring_conn_id"] = "kr_primary"
    alerts = {"email_to": ONCALL, "smtp_conn_id": "smtp_alerts", "staleness_threshold": "75m"}
    path = write_config(tmp_path_factory.mktemp("records") / "records.yaml", regions=regions, alerts=alerts,
                        databases=[{"name": "shop", "postgres_conn_id": "pg_shop"}])
    config = load_config(path)
    conns = connections()
    taken = snapshot_database(config, "shop", conns)
    failed = DrillResult("shop", taken["snapshot_id"], PRIMARY, datetime.now(UTC).isoformat(), success=False,
                         error="IntegrityError: a table differs", phases={"download": 0.5},
                         result_key="restore-tests/shop/20261101T000000Z-aaaaaa/result.json")
    store = conns.store(config.primary, config.transfer)
    keyring = conns.keyring(config.keyring_conn_id(config.primary))
    records.write(store, keyring, failed.result_key, failed.to_dict(), kind=RESULT_KIND)
    return config, conns, path, buckets, failed


def _put(stack: Stack, buckets: dict[str, str], key: str, body: bytes, region: str = PRIMARY) -> None:
    stack.client_for(region).put_object(Bucket=buckets[region], Key=key, Body=body)


def test_future_dated_records_do_not_silence_the_staleness_alert(
    stack: Stack, mail: MailSink, guarded
) -> None:
    """Three ways to post-date the monitor's view: a forged last-alert state claiming every condition was
    alerted in 2099, a run record sealed with the real key but checked in the future, and junk manifest
    keys named in 2099 (a fresh-looking newest snapshot). The stale database still alerts, and each bad
    record is named in the alert."""
    from strongroom.airflow_adapter import send_alert
    from strongroom.monitor import run_monitor

    config, conns, _, buckets, _ = guarded
    keyring = conns.keyring(config.keyring_conn_id(config.primary))
    stale_keys = [f"stale:shop:{r}" for r in REGIONS]
    forged_state = {"checked_at": FUTURE, "alerted": dict.fromkeys(stale_keys, FUTURE)}
    _put(stack, buckets, layout.MONITOR_STATE_KEY, json.dumps(forged_state).encode())
    _put(stack, buckets, layout.RUN_RECORD_KEY,
         records.seal({"checked_at": FUTURE, "results": {"shop": {r: "committed" for r in REGIONS}}}, keyring,
                      kind=RUN_RECORD_KIND, key=layout.RUN_RECORD_KEY))
    junk = "databases/shop/manifests/20991231T000000Z-abcdef.json"
    for region in REGIONS:
        _put(stack, buckets, junk, b'{"snapshot_id": "20991231T000000Z-abcdef"}', region)
    mail.clear()

    result = run_monitor(config, conns, partial(send_alert, config), now=datetime.now(UTC) + timedelta(hours=2))

    assert set(stale_keys) <= set(result["alerted"])  # the forged state suppressed nothing
    assert "unauthenticated:monitor-state" in result["alerted"]
    [(recipients, message)] = mail.received(at_least=1)
    assert recipients == ONCALL
    body = MailSink.body(message)
    for region in REGIONS:
        assert f"shop in {region}: newest snapshot" in body  # judged by the real, authenticated snapshot
        assert f"{region}: manifest {junk} is dated in the future; ignored" in body
    assert f"monitor-state record {layout.MONITOR_STATE_KEY} is not authenticated" in body
    assert f"run record {layout.RUN_RECORD_KEY}: checked_at {FUTURE} lies in the future" in body

    # a genuine, sealed state whose alert times lie in the future is no reason for silence either
    sealed = records.seal({"checked_at": datetime.now(UTC).isoformat(), "alerted": dict.fromkeys(stale_keys, FUTURE)},
                          keyring, kind=STATE_KIND, key=layout.MONITOR_STATE_KEY)
    _put(stack, buckets, layout.MONITOR_STATE_KEY, sealed)
    again = run_monitor(config, conns, partial(send_alert, config), now=datetime.now(UTC) + timedelta(hours=2))
    assert set(stale_keys) <= set(again["alerted"])

    for region in REGIONS:
        stack.client_for(region).delete_object(Bucket=buckets[region], Key=junk)
    stack.client_for(PRIMARY).delete_object(Bucket=buckets[PRIMARY], Key=layout.RUN_RECORD_KEY)


def test_a_forged_restore_test_result_is_shown_unauthenticated(stack: Stack, guarded) -> None:
    """A forged 'passed' result newer than the genuine failed one, and the genuine sealed bytes copied to a
    newer run folder: the monitor, ``strongroom status --json`` and the dashboard the Backups page reads
    all keep the genuine failure and name both forgeries as unauthenticated."""
    from strongroom.monitor import dashboard, latest_restore_tests, run_monitor

    config, conns, path, buckets, failed = guarded
    forged = DrillResult("shop", failed.snapshot_id, PRIMARY, datetime.now(UTC).isoformat(), success=True,
                         result_key="restore-tests/shop/20261201T000000Z-bbbbbb/result.json")
    _put(stack, buckets, forged.result_key, json.dumps(forged.to_dict()).encode())
    moved = "restore-tests/shop/20261202T000000Z-cccccc/result.json"
    _put(stack, buckets, moved, stack.client_for(PRIMARY).get_object(
        Bucket=buckets[PRIMARY], Key=failed.result_key)["Body"].read())
    other = Keyring.from_extra({"active": "evil", "keys": {"evil": base64.b64encode(os.urandom(32)).decode()}})
    foreign = "restore-tests/shop/20261203T000000Z-dddddd/result.json"
    _put(stack, buckets, foreign, records.seal(dict(forged.to_dict(), result_key=foreign), other,
                                               kind=RESULT_KIND, key=foreign))
    try:
        test = latest_restore_tests(config, conns)["shop"]
        assert (test.success, test.result_key) == (False, failed.result_key)
        assert [p.split()[2] for p in test.unauthenticated] == [foreign, moved, forged.result_key]

        board = dashboard(config, conns)["databases"][0]["restore_test"]
        assert board["success"] is False and board["result_key"] == failed.result_key
        assert len(board["unauthenticated"]) == 3 and forged.result_key in " ".join(board["unauthenticated"])

        cli = run_cli("--config", str(path), "status", "--json")
        assert cli.code == 0, cli.stderr
        shown = json.loads(cli.stdout)["databases"][0]["restore_test"]
        assert shown["success"] is False and shown["unauthenticated"] == board["unauthenticated"]
        text = run_cli("--config", str(path), "status")
        assert text.code == 0 and f"UNAUTHENTICATED: restore-test record {forged.result_key}" in text.stdout

        sent = []
        result = run_monitor(config, conns, sent.append)
        assert any(k.startswith("restore_failed:shop:") for k in result["alerted"])  # the real failure
        assert sum(k.startswith("unauthenticated:restore-test record") for k in result["alerted"]) == 3
    finally:
        for key in (forged.result_key, moved, foreign):
            stack.client_for(PRIMARY).delete_object(Bucket=buckets[PRIMARY], Key=key)
