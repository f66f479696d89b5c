"""Local services for the demo, the tests and the benchmark: a throwaway PostgreSQL and moto S3 servers.

Nothing here is used in production. PostgreSQL runs as the ``postgres`` OS user when we are root
(initdb refuses root), listens on 127.0.0.1 only, with scram-sha-256 password authentication.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("STRONGROOM_PG_BIN", "/usr/lib/postgresql/15/bin"))


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started: TERM, then KILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on 127.0.0.1:``port`` (Linux /proc)."""
    try:
        rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
        fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    for row in rows:
        fields = row.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port and f"socket:[{inode}]" in fds:
            return True
    return False


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@dataclass
class LocalPostgres:
    """A PostgreSQL 15 cluster in a temporary directory; superuser ``postgres`` with ``password``."""

    password: str = "demo-superuser-pw"
    port: int = field(default_factory=free_port)
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="strongroom-pg-")))
    settings: tuple[str, ...] = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

    @property
    def data(self) -> Path:
        return self.base / "data"

    def start(self) -> LocalPostgres:
        os.chmod(self.base, 0o755)
        pwfile = self.base / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        os.chmod(pwfile, 0o600)
        subprocess.run(
            _as_postgres([
                str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync",
            ]),
            check=True, capture_output=True,
        )
        pwfile.unlink()
        for attempt in range(5):  # another session may have taken the port since it was chosen: pick again
            options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.base}"
            options += "".join(f" -c {s}" for s in self.settings)
            started = subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"),
                              "-o", options, "-w", "start"]),
                check=attempt == 4, capture_output=True,
            )
            if started.returncode == 0:
                return self
            self.port = free_port()
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                check=False, capture_output=True,
            )
        shutil.rmtree(self.base, ignore_errors=True)

    def connect_kwargs(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None) -> dict:
        return {"host": "127.0.0.1", "port": self.port, "user": user,
                "password": password or self.password, "dbname": dbname}

    def airflow_uri(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        from urllib.parse import quote

        pw = quote(password or self.password, safe="")
        return f"postgresql://{user}:{pw}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(autocommit=True, **self.connect_kwargs(dbname)) as conn:
            conn.execute(statement)


@dataclass
class MotoServer:
    """moto's server: the real S3 API over HTTP on loopback, started through ``scripts/s3server.py`` (which
    frees deleted objects and serves a range at the cost of the range); ``as_shipped`` starts moto's own."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    as_shipped: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        # the port was free when chosen, but other test sessions on this machine pick ports too: when
        # another process took it meanwhile, ours cannot bind (and the other one would answer our health
        # check): start again on a new port until the listener is our own process
        for _ in range(5):
            if self._start_once():
                return self
            self.port = free_port()
        raise RuntimeError("moto server could not bind a port in 5 tries")

    def _start_once(self) -> bool:
        log = open(os.path.join(tempfile.gettempdir(), f"moto-{self.port}.log"), "wb")  # noqa: SIM115
        server = ["-m", "moto.server"] if self.as_shipped else [str(Path(__file__).with_name("s3server.py"))]
        self.process = subprocess.Popen(
            [sys.executable, *server, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if listens(self.process.pid, self.port):
                try:
                    urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=5).read()  # noqa: S310
                    return True
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError("moto server did not start within 60s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def airflow_conn(self, region: str) -> str:
        import json

        return json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing-secret",
            "extra": {"region_name": region, "endpoint_url": self.endpoint},
        })

    def client(self, region: str = "eu-central-1"):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=region,
            aws_access_key_id="testing", aws_secret_access_key="testing-secret",
            config=Config(request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def create_bucket(self, bucket: str, region: str) -> None:
        client = self.client(region)
        if region == "us-east-1":
            client.create_bucket(Bucket=bucket)
        else:
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


class SmtpSink:
    """A local SMTP server on loopback (aiosmtpd) that hands every message to ``on_message(recipients,
    subject)``: `make up`'s alert channel, so alerts are seen without a real mail server."""

    def __init__(self, on_message: Callable[[list[str], str], None], port: int | None = None) -> None:
        from aiosmtpd.controller import Controller

        self.port = port or free_port()
        self.on_message = on_message
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        import email
        import email.policy

        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.on_message(list(envelope.rcpt_tos), str(message.get("Subject", "(no subject)")))
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def airflow_conn(self, from_email: str = "strongroom@localhost") -> str:
        import json

        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_tls": True, "disable_ssl": True, "from_email": from_email,
                                     "timeout": 10, "retry_limit": 1}})
