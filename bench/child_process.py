"""What the multi-process cluster benchmarks share: the loopback-only check, free loopback ports,
and a child process (the benchmark script itself with a role flag) driven over JSON lines:
commands on its stdin, ``{"event": ...}`` lines on its stdout."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

HOST = "127.0.0.1"


def only_loopback() -> bool:
    return sorted(os.listdir("/sys/class/net")) == ["lo"]


def free_ports(n: int) -> list[int]:
    # All bound at once, so the n ports differ.
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class ChildProcess:
    """``python <script> <flag> <spec as JSON>``; ``read`` waits for a given event line."""

    def __init__(self, script: str, flag: str, spec: dict[str, Any], *, name: str, read_timeout: float,
                 stop_timeout: float) -> None:  # fmt: skip
        self.spec = spec
        self.name = name
        self.read_timeout = read_timeout
        self.stop_timeout = stop_timeout
        self.p = subprocess.Popen([sys.executable, script, flag, json.dumps(spec)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip

    def read(self, event: str, timeout: float | None = None) -> dict[str, Any]:
        assert self.p.stdout is not None
        deadline = time.monotonic() + (self.read_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited ({self.p.poll()})")
            if line.startswith("{"):
                msg = dict(json.loads(line))
                if msg.get("event") == event:
                    return msg
        raise TimeoutError(event)

    def send(self, cmd: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()

    def stop(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("quit")
            try:
                self.p.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
