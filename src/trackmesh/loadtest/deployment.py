"""A running trackmesh node or gateway named by ``trackmesh-bench --url``, instead of a server the command starts.

The scenarios need three things from "the server": where to signal (:class:`ServerUrl`), the local
address whose route reaches it (the generator's sockets bind there), and process statistics for the
step rows. A deployment is not our child process, so ``/proc`` says nothing about it; its
``/metrics`` may: prometheus_client's process collector exports ``process_cpu_seconds_total`` and
``process_resident_memory_bytes`` (any namespace prefix). When they are there, server CPU per
forwarded packet and RSS come from them; when not, those columns are ``None`` and the report says
so. They describe the one process that serves ``/metrics``, which is not necessarily the one that
forwards media (trackmesh forwards in worker processes), and a gateway's describe the gateway.
"""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from typing import Any

from trackmesh.loadtest.signalling import ServerUrl

__all__ = ["Deployment", "DeploymentError", "MetricsTree", "parse_process_metrics"]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
#: What the bench measures from its own clients, whatever the server exposes.
CLIENT_SIDE = [
    "delivery (packets in/out per second, matched by payload hash)",
    "loss per subscriber and per stream",
    "one-way latency p50/p95/p99 and added p99 over the direct path",
    "longest silence per subscriber",
    "join times (one at a time and in a storm)",
    "capacity: the ramp's steps judged by the SLOs",
    "duplicated, reordered, corrupted and misrouted packets, SRTP errors",
    "the generator's own CPU and loop lag",
]


def parse_process_metrics(text: str) -> dict[str, float]:
    """Sums of the process collector's samples in a Prometheus text exposition: ``cpu_s``, ``rss_bytes``,
    ``open_fds`` (only the keys present)."""
    wanted = {"process_cpu_seconds_total": "cpu_s", "process_resident_memory_bytes": "rss_bytes",
              "process_open_fds": "open_fds"}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name = m.group(1)
        key = next((k for suffix, k in wanted.items() if name == suffix or name.endswith("_" + suffix)), None)
        if key is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[key] = out.get(key, 0.0) + value
    return out


class DeploymentError(RuntimeError):
    """The deployment named by --url cannot be load-tested as given (unreachable, wrong secret...)."""


class MetricsTree:
    """The ``tree`` the scenarios read (cpu, rss_kb, threads_fds) for a deployment: from its /metrics, or None."""

    def __init__(self, url: str, token: str | None, available: set[str]) -> None:
        self.url = url
        self.token = token
        self.available = available

    def _scrape(self) -> dict[str, float]:
        # Blocking, but only at the edges of a measuring window and only when /metrics had the samples.
        try:
            return scrape(self.url, self.token)[1]
        except OSError:
            return {}

    def cpu(self) -> float | None:
        if "cpu_s" not in self.available:
            return None
        return self._scrape().get("cpu_s")

    def rss_kb(self) -> int | None:
        if "rss_bytes" not in self.available:
            return None
        rss = self._scrape().get("rss_bytes")
        return None if rss is None else int(rss // 1024)

    def threads_fds(self) -> tuple[int | None, int | None]:
        if "open_fds" not in self.available:
            return None, None
        fds = self._scrape().get("open_fds")
        return None, (None if fds is None else int(fds))


def scrape(url: str, token: str | None, timeout: float = 5.0) -> tuple[int, dict[str, float]]:
    """(HTTP status, process metrics) of one GET of ``url``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, parse_process_metrics(resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        return exc.code, {}


class Deployment:
    """What the scenarios call "the server" when it is somebody else's: no process, no cores, /metrics maybe."""

    name = "trackmesh"
    version: str | None = None

    def __init__(self, url: ServerUrl, secret: str, *, metrics_token: str | None = None) -> None:
        self.url = url
        self.secret = secret
        self.metrics_url = f"{url}/metrics"
        self.metrics_token = metrics_token
        self.metrics_status: int | None = None
        self.metrics_error: str | None = None
        found: dict[str, float] = {}
        try:
            self.metrics_status, found = scrape(self.metrics_url, metrics_token)
        except OSError as exc:
            self.metrics_error = f"{type(exc).__name__}: {exc}"
        else:
            if self.metrics_status != 200:
                self.metrics_error = f"HTTP {self.metrics_status}"
        self.tree = MetricsTree(self.metrics_url, metrics_token, set(found))
        #: The bench's rooms on a shared deployment: apart from the rooms of its real users.
        self.room_prefix = f"bench-{os.urandom(3).hex()}-"
        self.role: str | None = None
        self._node_info(metrics_token)

    def _node_info(self, token: str | None) -> None:
        """Version and role from /api/node/info (behind --metrics-token like /metrics); left None if refused."""
        req = urllib.request.Request(f"{self.url}/api/node/info",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                data = json.loads(resp.read()).get("data", {})
        except (OSError, ValueError, AttributeError):
            return
        if isinstance(data, dict):
            self.version = str(data.get("version")) if data.get("version") else None
            self.role = str(data.get("role")) if data.get("role") else None

    def preflight(self) -> None:
        """Before any client: the node answers, and the secret mints a token (a clear error instead of a
        failed join per client)."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/node/health", timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 503:  # 503: up but not ready (draining, no workers): the token check says more
                raise DeploymentError(f"{self.url}/api/node/health answered HTTP {exc.code}") from None
        except OSError as exc:
            raise DeploymentError(f"cannot reach {self.url}: {exc}") from None
        body = json.dumps({"room": self.room_prefix + "preflight", "ttl": 60}).encode()
        req = urllib.request.Request(f"{self.url}/token/whep", data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.secret}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace")
            hint = " (wrong app secret?)" if exc.code in (401, 403) else ""
            raise DeploymentError(f"POST {self.url}/token/whep answered HTTP {exc.code}{hint}: {detail}") from None
        except OSError as exc:
            raise DeploymentError(f"POST {self.url}/token/whep: {exc}") from None

    def local_ip(self) -> str:
        """The local address the kernel routes towards the deployment (no packet is sent: UDP connect)."""
        infos = socket.getaddrinfo(self.url.host, self.url.port, socket.AF_INET, socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"{self.url.host}: no IPv4 address")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(infos[0][4])
            return str(s.getsockname()[0])

    def stop(self) -> None:
        """Not ours to stop."""

    def coverage(self) -> dict[str, Any]:
        """What this run could measure and what it could not, for the report."""
        have = self.tree.available
        measured = list(CLIENT_SIDE)
        not_measured = []
        why = (f"{self.metrics_url} answered {self.metrics_error}" if self.metrics_error
               else f"{self.metrics_url} has no prometheus_client process collector samples")
        if "cpu_s" in have:
            measured.append("server CPU and us per forwarded packet, from process_cpu_seconds_total (only the "
                            "process serving /metrics: a gateway's, or a node's main process, not its workers)")
        else:
            not_measured.append(f"server CPU and us per forwarded packet: {why} (process_cpu_seconds_total)")
        if "rss_bytes" in have:
            measured.append("server RSS, from process_resident_memory_bytes (the process serving /metrics only)")
        else:
            not_measured.append(f"server RSS and memory per peer: {why} (process_resident_memory_bytes)")
        not_measured.append("foreign load on the server's cores and server pinning: the server is not on this "
                            "command's cores")
        return {"url": str(self.url), "role": self.role, "version": self.version, "metrics": self.metrics_url,
                "metrics_status": self.metrics_status, "measured": measured, "not_measured": not_measured}
