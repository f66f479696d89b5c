"""Transport security: what a connection to PostgreSQL or an S3 endpoint must verify.

* PostgreSQL on a host other than loopback (or a Unix socket) gets ``sslmode=verify-full`` unless the
  connection's ``sslmode`` extra says otherwise; a lower mode is allowed but shown as a warning.
* An S3 endpoint over plain HTTP, or with certificate verification off, is refused for a host other than
  loopback unless the region (or source bucket) sets ``allow_insecure_transport: true``, which is then
  shown as a warning.

Loopback means ``localhost`` or a literal loopback address: a name is never resolved to decide, because
whoever controls name resolution would then decide.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from strongroom.errors import ConfigError
from strongroom.postgres import PgSettings

VERIFY_FULL = "verify-full"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _local(host: str | None) -> bool:
    """No host (libpq's default socket), a socket directory, or loopback addresses only."""
    if not host:
        return True
    return all(h.startswith("/") or h.startswith("@") or is_loopback(h) for h in host.split(","))


def secure_postgres(settings: PgSettings, where: str) -> tuple[PgSettings, str | None]:
    """``settings`` with ``sslmode=verify-full`` when the host is remote and no mode was set; and a warning
    when the connection chose a mode that does not verify the server."""
    if _local(settings.host):
        return settings, None
    mode = settings.options.get("sslmode")
    if mode is None:
        return replace(settings, options={**settings.options, "sslmode": VERIFY_FULL}), None
    if mode != VERIFY_FULL:
        return settings, (f"{where}: sslmode={mode} to {settings.host} does not fully verify the server "
                          f"(the default for a remote host is {VERIFY_FULL})")
    return settings, None


def _verification_off(verify: Any) -> bool:
    if isinstance(verify, str):
        return verify.strip().lower() in ("false", "0", "no", "off")
    return verify is False


def check_s3(endpoint_url: str | None, verify: Any, *, allow_insecure: bool, where: str) -> str | None:
    """None when the endpoint is secure (or on loopback); the warning when it is insecure but allowed;
    :class:`ConfigError` (one line) when it is insecure and not allowed."""
    parts = urlsplit(endpoint_url) if endpoint_url else None
    if parts is not None and is_loopback(parts.hostname):
        return None
    problems = []
    if parts is not None and parts.scheme.lower() != "https":
        shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"  # never userinfo
        problems.append(f"plain HTTP endpoint {shown}")
    if _verification_off(verify):
        problems.append("TLS certificate verification turned off")
    if not problems:
        return None
    text = f"{where}: {' and '.join(problems)} on a non-loopback host"
    if allow_insecure:
        return f"{text} (allowed by allow_insecure_transport)"
    raise ConfigError(f"{text}: use https with verification, or set allow_insecure_transport: true")
