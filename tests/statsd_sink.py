"""A StatsD server on loopback: a UDP socket that keeps every metric line it receives."""

from __future__ import annotations

import socket
import threading
import time


class StatsdSink:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> StatsdSink:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            self.lines += data.decode().splitlines()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def env(self) -> dict[str, str]:
        return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}

    def values(self, name: str, timeout: float = 5.0) -> list[tuple[float, str]]:
        """(value, type) of every line for ``name`` (e.g. ``airflow.strongroom.snapshot.stored_bytes.shop``)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line.split(":", 1)[1] for line in list(self.lines) if line.split(":", 1)[0] == name]
            if found or time.monotonic() > deadline:
                return [(float(v.split("|")[0]), v.split("|")[1]) for v in found]
            time.sleep(0.05)
