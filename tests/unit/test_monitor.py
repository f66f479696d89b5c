"""The monitor's decisions and the alert texts, table-driven: conditions in, alerts out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.alerts import first_line, split_label, task_failure
from strongroom.errors import StorageError
from strongroom.keycheck import KeyReport
from strongroom.monitor import Condition, RestoreTestSummary, find_conditions, plan_alerts, rag
from strongroom.status import RegionStatus

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
T75 = timedelta(minutes=75)
OVERDUE = timedelta(hours=29)
MIN = 60


def row(db: str = "shop", region: str = "eu-central-1", age_min: int | None = 10, error: str | None = None):
    return RegionStatus(db, region, None if age_min is None else "20261126T140000Z-abcdef", None,
                        None if age_min is None else age_min * MIN, 3, [], error)


def passed(db: str = "shop", hours_ago: float = 2, success: bool = True) -> RestoreTestSummary:
    return RestoreTestSummary(db, NOW - timedelta(hours=hours_ago), success, headline="x")


CASES = [
    # (name, status rows, key report, restore tests, expected condition keys)
    ("all fresh", [row(), row(region="eu-west-1", age_min=74)], KeyReport(), {"shop": passed()}, []),
    ("one region stale", [row(), row(region="eu-west-1", age_min=76)], KeyReport(), {"shop": passed()},
     ["stale:shop:eu-west-1"]),
    ("exactly at the threshold is not stale", [row(age_min=75)], KeyReport(), {"shop": passed()}, []),
    ("never backed up", [row(age_min=None)], KeyReport(), {"shop": passed()}, ["stale:shop:eu-central-1"]),
    ("unreachable region said once, not as stale",
     [row(age_min=None, error="unreachable: timeout"), row(db="bulk", age_min=None, error="unreachable: timeout")],
     KeyReport(), {"shop": passed(), "bulk": passed("bulk")}, ["unreachable:eu-central-1"]),
    ("missing key", [row()], KeyReport(checked=2, missing={"k-old": ["eu-west-1/shop/x", "eu-west-1/shop/y"]}),
     {"shop": passed()}, ["missing_key:k-old"]),
    ("key check could not run", [row()], "StorageError: bucket unreachable", {"shop": passed()}, ["keycheck"]),
    ("restore test failed", [row()], KeyReport(), {"shop": passed(success=False)},
     [f"restore_failed:shop:{(NOW - timedelta(hours=2)).isoformat()}"]),
    ("restore test overdue", [row()], KeyReport(), {"shop": passed(hours_ago=30)}, ["restore_overdue:shop"]),
    ("no restore test on record", [row()], KeyReport(), {}, ["restore_overdue:shop"]),
]


@pytest.mark.parametrize(("status", "keys", "tests", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_find_conditions(status, keys, tests, expected) -> None:
    databases = sorted({r.database for r in status})
    found = find_conditions(databases=databases, status=status, keys=keys, restore_tests=tests,
                            threshold=T75, restore_overdue=OVERDUE, now=NOW)
    assert [c.key for c in found] == expected


@pytest.mark.parametrize(("watched_hours", "expected"), [
    (1, []),  # a fresh installation: the first scheduled restore test is not due yet
    (29, []),  # exactly the allowance: still not overdue
    (30, ["restore_overdue:shop"]),  # watched longer than a day plus the budget, and still none
    (None, ["restore_overdue:shop"]),  # watched since before that was recorded: long enough
])
def test_no_restore_test_is_overdue_only_after_the_first_one_was_due(watched_hours, expected) -> None:
    since = None if watched_hours is None else NOW - timedelta(hours=watched_hours)
    found = find_conditions(databases=["shop"], status=[row()], keys=KeyReport(), restore_tests={},
                            threshold=T75, restore_overdue=OVERDUE, now=NOW, watched_since=since)
    assert [c.key for c in found] == expected
    # a database that had tests keeps its rules: a late one is overdue however new the monitor is
    late = find_conditions(databases=["shop"], status=[row()], keys=KeyReport(),
                           restore_tests={"shop": passed(hours_ago=30)}, threshold=T75, restore_overdue=OVERDUE,
                           now=NOW, watched_since=since)
    assert [c.key for c in late] == ["restore_overdue:shop"]


def test_stale_message_says_what_where_and_how_old() -> None:
    [c] = find_conditions(databases=["shop"], status=[row(region="eu-west-1", age_min=130, error="not committed")],
                          keys=KeyReport(), restore_tests={"shop": passed()}, threshold=T75,
                          restore_overdue=OVERDUE, now=NOW)
    assert c.message == ("shop in eu-west-1: newest snapshot 20261126T140000Z-abcdef is 2h10m old "
                         "(threshold 1h15m); last error: not committed")


A, B = Condition("stale:a", "stale", "a is stale"), Condition("stale:b", "stale", "b is stale")
ago = lambda minutes: (NOW - timedelta(minutes=minutes)).isoformat()  # noqa: E731

PLANS = [
    # (name, conditions, state before, sent, suppressed, resolved)
    ("new condition alerts", [A], {}, ["stale:a"], [], []),
    ("persisting within the hour stays quiet", [A], {"stale:a": ago(50)}, [], ["stale:a"], []),
    ("persisting for an hour alerts again", [A], {"stale:a": ago(60)}, ["stale:a"], [], []),
    ("a new one alerts next to a quiet one", [A, B], {"stale:a": ago(10)}, ["stale:b"], ["stale:a"], []),
    ("cleared condition is forgotten", [], {"stale:a": ago(10)}, [], [], ["stale:a"]),
    ("garbage state alerts rather than hides", [A], {"stale:a": "yesterday"}, ["stale:a"], [], []),
]


@pytest.mark.parametrize(("conditions", "state", "sent", "suppressed", "resolved"), [p[1:] for p in PLANS],
                         ids=[p[0] for p in PLANS])
def test_plan_alerts(conditions, state, sent, suppressed, resolved) -> None:
    plan = plan_alerts(conditions, state, NOW)
    assert [c.key for c in plan.send] == sent
    assert [c.key for c in plan.suppressed] == suppressed
    assert plan.resolved == resolved
    assert set(plan.state) == {c.key for c in conditions}
    for key in sent:
        assert plan.state[key] == NOW.isoformat()
    for key in suppressed:
        assert plan.state[key] == state[key]  # the hour counts from the last alert, not from now
    assert (plan.alert(NOW) is None) == (not sent)


def test_one_alert_lists_every_condition_due() -> None:
    alert = plan_alerts([A, B], {}, NOW).alert(NOW)
    assert alert is not None
    assert alert.subject == "[strongroom] backup monitor: a is stale; b is stale"  # every one, not "+1 more"
    assert "a is stale" in alert.text() and "b is stale" in alert.text()


@pytest.mark.parametrize(("age_min", "colour"), [(None, "red"), (0, "green"), (59, "green"), (60, "amber"),
                                                 (75, "amber"), (76, "red")])
def test_rag(age_min, colour) -> None:
    assert rag(None if age_min is None else age_min * MIN, T75) == colour


@pytest.mark.parametrize(("error", "line"), [
    (StorageError("bucket x unreachable\nTraceback ..."), "StorageError: bucket x unreachable"),
    (ValueError(""), "ValueError"),
    (RuntimeError("RuntimeError: already prefixed"), "RuntimeError: already prefixed"),
    ("\n\n  plain text first\nsecond", "plain text first"),
    (None, "unknown error (no exception was recorded; see the log)"),
    (OSError("x" * 500), "OSError: " + "x" * 290 + "…"),
    (SystemExit("RefusedError: not confirmed\nmore"), "RefusedError: not confirmed"),  # a task ended by run_task
])
def test_first_line(error, line) -> None:
    assert first_line(error) == line


@pytest.mark.parametrize(("label", "parts"), [("shop → eu-west-1", ("shop", "eu-west-1")), ("shop", ("shop", None)),
                                              (None, (None, None)), ("", (None, None))])
def test_split_label(label, parts) -> None:
    assert split_label(label) == parts


def test_task_failure_alert_names_everything_and_escapes_html() -> None:
    alert = task_failure(dag_id="snapshot_databases", task_id="region.commit", run_id="manual__1",
                         label="shop → eu-west-1", error=StorageError("<b>denied</b>\nmore"),
                         log_url="http://af/dags/x?try_number=2", try_number=2)
    assert alert.subject == ("[strongroom] FAILED snapshot_databases.region.commit [shop @ eu-west-1]: "
                             "StorageError: <b>denied</b>")
    assert "&lt;b&gt;denied&lt;/b&gt;" in alert.html() and "<b>denied</b>" not in alert.html()
    assert "http://af/dags/x?try_number=2" in alert.text() and "more" not in alert.text()


def test_size_jumps_are_marked_beyond_the_factor_either_way() -> None:
    from strongroom.monitor import mark_jumps

    sizes = [1000, 1002, 1000, 327_000, 330_000, 1000, 0, 0]
    marked = mark_jumps([{"snapshot_id": str(i), "stored_bytes": n} for i, n in enumerate(sizes)], 2.0)
    assert [p.get("jump") for p in marked] == [None, None, None, 327.0, None, 0.003, 0.001, None]
    assert [p["stored_bytes"] for p in marked] == sizes
    assert mark_jumps([{"stored_bytes": 100}, {"stored_bytes": 250}], 3.0)[1].get("jump") is None


def test_a_long_list_of_conditions_keeps_the_subject_within_a_mail_line() -> None:
    from strongroom.monitor import SUBJECT_BUDGET, _bounded

    few = ["a is stale", "b is stale"]
    assert _bounded(few) == "a is stale; b is stale"  # every condition when they fit
    many = [f"database db{i} in eu-central-1: newest snapshot is 2h old (threshold 1h15m)" for i in range(40)]
    text = _bounded(many)
    assert len(text) <= SUBJECT_BUDGET and text.startswith(many[0]) and text.endswith(" more")
    shown = text.count("database db")
    assert text.endswith(f"; and {40 - shown} more")
