"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 that verifies every delivery
with the reference ``standardwebhooks`` package and records what it accepted."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    msg_id: str
    body: bytes
    status: int
    at: float
    content_type: str | None = None


@dataclass
class HookReceiver:
    secret: str
    # answer(n, msg_id) -> HTTP status for the n-th request (1-based); None = hang until closed
    answer: Callable[[int, str], int | None] = lambda n, msg_id: 200
    requests: list[Received] = field(default_factory=list)
    unverified: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> HookReceiver:
        """Listen on 127.0.0.1:``port`` (0: any free port)."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers behind a proxy do

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers, json_parse=False)  # also binary bodies
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.unverified += 1
                    self.send_response(401)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                msg_id = headers.get("webhook-id") or headers.get("Webhook-Id") or ""
                with receiver.lock:
                    n = len(receiver.requests) + 1
                    status = receiver.answer(n, msg_id)
                    receiver.requests.append(
                        Received(msg_id, body, status or 0, time.time(), self.headers.get("content-type")))
                if status is None:
                    time.sleep(3.0)
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "http://127.0.0.2:1/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 refuses a connector's burst of parallel connections

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def accepted_bodies(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r.msg_id, json.loads(r.body)) for r in self.accepted()]


def room_of(body: dict[str, Any], rooms_of_sessions: dict[int, str]) -> str:
    ev = body["event"]
    if "Room" in ev:
        return str(ev["Room"]["room"])
    return rooms_of_sessions[ev["Peer"]["session_id"]]
