"""Start a real ``trackmesh`` process on loopback for tests, and stop it by signal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

from trackmesh.cli.dev_cluster import die_with_parent

TRACKMESH = str(Path(sys.executable).parent / "trackmesh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


class NodeProcess:
    def __init__(self, *args: str, secret: str = "test-secret-12345", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.secret = secret
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, **(env or {}))
        if "--connector-db" not in args and "TRACKMESH_CONNECTOR_DB" not in full_env:
            # Each test node its own event log: a shared ./trackmesh-data/connector.db would let one
            # node close another's sessions as its own previous run's (runtime/connector.py).
            self._data = tempfile.mkdtemp(prefix="trackmesh-node-")
            full_env["TRACKMESH_CONNECTOR_DB"] = f"sqlite:///{self._data}/connector.db"
        self.proc = subprocess.Popen(
            [TRACKMESH, "standalone", "--http-port", str(self.port), "--secret", secret, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            preexec_fn=die_with_parent,  # a killed test run leaves no node holding ports
        )
        # Read the node's output as it comes: a node that logs more than a pipe holds (64 KiB)
        # would otherwise block on its next log line, mid-test.
        self.lines: list[str] = []  # without their newlines; grows while the node runs
        self._reader = threading.Thread(target=self._drain, name="node-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def join_output(self, timeout: float = 5.0) -> None:
        """Once the node has exited: wait until its last lines are in :attr:`lines`."""
        self._reader.join(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"trackmesh exited early ({self.proc.returncode}):\n{self.output()}")
            try:
                status, _, _ = http("GET", self.base + "/api/node/health")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("trackmesh did not become ready")

    def json(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = http(method, self.base + path, data, headers)
        return status, json.loads(raw) if raw else None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("trackmesh did not stop after the signal") from None
        finally:
            if getattr(self, "_data", None):
                shutil.rmtree(self._data, ignore_errors=True)

    def output(self) -> str:
        """What the node printed so far (all of it once it has exited)."""
        if self.proc.poll() is not None:
            self.join_output()
        return "".join(line + "\n" for line in self.lines)
