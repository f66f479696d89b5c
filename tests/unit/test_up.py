"""`make up` defines every connection the example configuration names (up.py refuses to start otherwise)."""

from __future__ import annotations

from strongroom.config import load_config
from tests.conftest import ROOT


def test_every_connection_the_example_names_is_found() -> None:
    from up import named_connections

    config = load_config(ROOT / "include" / "config" / "strongroom.example.yaml")
    assert named_connections(config) == sorted({
        "s3_eu_central_1", "s3_eu_west_1", "s3_eu_north_1", "strongroom_keyring", "pg_shop", "s3_uploads",
        "pg_sandbox", "smtp_default", "airflow_api"})  # pools.api_conn_id: init-airflow
    quiet = config.model_copy(update={"alerts": config.alerts.model_copy(update={"email_to": []})})
    assert "smtp_default" not in named_connections(quiet)  # no recipients: no SMTP connection needed
