"""A real HTTP server on loopback standing in for Slack's incoming webhooks: it keeps every POST."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "T0000TEST/B0000TEST/webhook-secret-3c9e1f"


class WebhookSink:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []  # (path, JSON body)
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with sink.lock:
                    sink.posts.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        # bound here, on a port the kernel picks: a port chosen first could be taken by another session
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> WebhookSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.posts.clear()

    def airflow_conn(self) -> str:
        """A ``slackwebhook`` connection as the slack provider stores one: the token in the password,
        the endpoint in the host."""
        return json.dumps({"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{self.port}/services",
                           "password": TOKEN})

    def received(self, at_least: int = 0, timeout: float = 5.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < at_least and time.monotonic() < deadline:
            time.sleep(0.05)
        with self.lock:
            return list(self.posts)
