"""Transport rules (issue 15, item 6): which hosts are loopback, the verify-full default, insecure S3."""

from __future__ import annotations

import pytest

from strongroom.errors import ConfigError
from strongroom.postgres import PgSettings
from strongroom.transport import check_s3, is_loopback, secure_postgres


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST.", True), ("db.localhost", True), ("10.0.0.5", False), ("192.0.2.2", False),
    ("localhost.example.com", False), ("127.0.0.1.nip.io", False), ("", False), (None, False),
])
def test_loopback_is_decided_without_resolving_names(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "options", "mode", "warned"), [
    ("db.example.com", {}, "verify-full", False),  # remote: verify-full by default
    ("10.0.0.5", {"sslmode": "verify-full"}, "verify-full", False),
    ("db.example.com", {"sslmode": "require"}, "require", True),  # lowered by the connection: a warning
    ("db.example.com", {"sslmode": "disable"}, "disable", True),
    ("127.0.0.1", {}, None, False),  # loopback and sockets are left as they are
    ("localhost", {"sslmode": "disable"}, "disable", False),
    ("/var/run/postgresql", {}, None, False),
    (None, {}, None, False),
    ("127.0.0.1,db.example.com", {}, "verify-full", False),  # any remote host in a list counts
])
def test_postgres_defaults_to_verify_full_for_remote_hosts(
    host: str | None, options: dict[str, str], mode: str | None, warned: bool
) -> None:
    settings, warning = secure_postgres(PgSettings("shop", host=host, options=options), "connection 'pg_shop'")
    assert settings.options.get("sslmode") == mode
    assert (warning is not None) is warned
    if warning:
        assert warning.startswith("connection 'pg_shop': sslmode=") and "does not fully verify" in warning
        assert "PGSSLMODE" not in warning


@pytest.mark.parametrize(("endpoint", "verify", "problem"), [
    ("http://s3.example.test:9000", None, "plain HTTP endpoint http://s3.example.test:9000"),
    ("https://s3.example.test", False, "TLS certificate verification turned off"),
    ("https://s3.example.test", "false", "TLS certificate verification turned off"),
    (None, False, "TLS certificate verification turned off"),  # AWS itself, unverified
    ("http://user:secret@10.1.2.3:9000", None, "plain HTTP endpoint http://10.1.2.3:9000"),
])
def test_insecure_s3_endpoints_are_refused_unless_allowed(endpoint: str | None, verify: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_s3(endpoint, verify, allow_insecure=False, where="region eu-west-1 (connection 's3')")
    message = str(caught.value)
    assert message.startswith(f"region eu-west-1 (connection 's3'): {problem}") and "\n" not in message
    assert "secret" not in message and "allow_insecure_transport: true" in message
    warning = check_s3(endpoint, verify, allow_insecure=True, where="region eu-west-1 (connection 's3')")
    assert warning is not None and problem in warning and "allowed by allow_insecure_transport" in warning


@pytest.mark.parametrize(("endpoint", "verify"), [
    ("https://s3.eu-west-1.amazonaws.com", None), (None, None), (None, True), ("https://s3.example.test", "/ca.pem"),
    ("http://127.0.0.1:5000", None), ("http://localhost:5000", False), ("http://[::1]:5000", None),
])
def test_secure_or_loopback_endpoints_pass_quietly(endpoint: str | None, verify: object) -> None:
    assert check_s3(endpoint, verify, allow_insecure=False, where="region x") is None
