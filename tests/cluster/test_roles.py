"""Cluster roles as real processes (``trackmesh gateway`` / ``trackmesh media``), loopback only.

Runs inside the private network namespace (tests/cluster/conftest.py's guard); every member
listens on tcp/127.0.0.1 and never scouts. The ``Cluster`` helper is shared with
tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trackmesh.cli.dev_cluster import die_with_parent

TRACKMESH = str(Path(sys.executable).parent / "trackmesh")
SECRET = "cluster-roles-secret"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class Member:
    """One ``trackmesh gateway|media`` process; its output is drained into ``lines``."""

    def __init__(self, role: str, zone: int, node: int, seeds: list[str], *extra: str, secret: str = SECRET,
                 cluster_port: int | None = None, workers: int = 1) -> None:  # fmt: skip
        self.role, self.zone, self.node, self.secret = role, zone, node, secret
        self.http_port = free_port()
        self.cluster_port = cluster_port if cluster_port is not None else free_port()
        if workers > 1:
            self.cluster_port = _free_range(workers)
        self.workers = workers
        self.data_dir: str | None = None
        self.base = f"http://127.0.0.1:{self.http_port}"
        args = [TRACKMESH, role, "--zone", str(zone), "--node-id", str(node), "--http-port", str(self.http_port),
                "--cluster-port", str(self.cluster_port), "--secret", secret]  # fmt: skip
        if seeds:
            args += ["--seeds", ",".join(seeds)]
        if role == "media":
            args += ["--node-ip", "127.0.0.1", "--workers", str(workers)]
        if role in ("media", "gateway") and "--data-dir" not in extra:
            # Its own spill file for the connector's events (never ./trackmesh-data of the checkout).
            self.data_dir = tempfile.mkdtemp(prefix="trackmesh-member-")
            args += ["--data-dir", self.data_dir]
        self.proc = subprocess.Popen(
            [*args, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent
        )
        self.lines: list[str] = []
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    @property
    def seed(self) -> str:
        last = self.cluster_port + self.workers - 1
        return f"tcp/127.0.0.1:{self.cluster_port}" + (f"-{last}" if self.workers > 1 else "")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self, n: int = 40) -> str:
        return f"--- {self.role} {self.zone}/{self.node}\n" + "\n".join(self.lines[-n:])

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            status, _, body = http("GET", self.base + "/api/node/health", timeout=2)
        except OSError:
            return 0, {}
        return status, json.loads(body)["data"] if body else {}

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._drain.join(2)
                raise AssertionError(f"{self.role} exited early ({self.proc.returncode}):\n{self.log()}")
            if self.health()[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.role} not ready after {timeout} s:\n{self.log()}")

    def info(self) -> dict[str, Any]:
        status, _, body = http("GET", self.base + "/api/node/info")
        assert status == 200, body
        return dict(json.loads(body)["data"])

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.role} did not stop after {sig}:\n{self.log()}") from None
        self._drain.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _free_range(n: int) -> int:
    import socket

    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


class Cluster:
    """Members started by a test; each new member seeds from every member started before it."""

    def __init__(self) -> None:
        self.members: list[Member] = []

    def start(self, role: str, zone: int, node: int, *extra: str, wait: bool = True, seeds: list[str] | None = None,
              **kw: Any) -> Member:  # fmt: skip
        if seeds is None:
            seeds = [m.seed for m in self.members if m.proc.poll() is None and m.secret == kw.get("secret", SECRET)]
        m = Member(role, zone, node, seeds, *extra, **kw)
        self.members.append(m)
        if wait:
            m.wait_ready()
        return m

    def gateway(self, zone: int = 1, node: int = 1, **kw: Any) -> Member:
        return self.start("gateway", zone, node, **kw)

    def media(self, zone: int = 1, node: int = 10, *extra: str, **kw: Any) -> Member:
        return self.start("media", zone, node, *extra, **kw)

    def wait_nodes(self, gw: Member, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        nodes: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            nodes = [x for x in gw.info()["nodes"] if x["healthy"]]
            if len(nodes) >= n:
                return nodes
            time.sleep(0.1)
        raise AssertionError(f"gateway sees {nodes}, wanted {n} healthy nodes")

    def token(self, base: str, kind: str, room: str, peer: str | None = None, **query: str) -> str:
        body: dict[str, Any] = {"room": room, "ttl": 600}
        if peer is not None:
            body["peer"] = peer
        qs = ("?" + "&".join(f"{k}={v}" for k, v in query.items())) if query else ""
        status, _, raw = http("POST", f"{base}/token/{kind}{qs}", json.dumps(body).encode(),
                              {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"})  # fmt: skip
        assert status == 200, raw
        return str(json.loads(raw)["data"]["token"])

    def close(self) -> list[str]:
        """Stop every member; returns the problems found (nonzero exit, tracebacks)."""
        problems = []
        for m in reversed(self.members):
            if m.proc.poll() is None:
                try:
                    rc = m.stop()
                except AssertionError as exc:
                    problems.append(str(exc))
                    continue
                if rc != 0:
                    problems.append(f"exit {rc}\n{m.log()}")
            m._drain.join(2)
            if m.data_dir is not None:
                shutil.rmtree(m.data_dir, ignore_errors=True)
            if any("Traceback" in line for line in m.lines):
                problems.append(f"traceback\n{m.log(200)}")
        return problems


# ---- bad input and membership ---------------------------------------------------------------


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A :class:`Cluster` closed on exit; a member that logged a problem (a traceback, a non-zero
    exit) fails the test."""
    c = Cluster()
    try:
        yield c
    finally:
        problems = c.close()
        assert not problems, "\n".join(problems)


def test_zone_without_media_node_answers_503_with_a_reason(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    status, _, body = http("POST", gw.base + "/whip/endpoint", b"v=0\r\n", {"Content-Type": "application/sdp"})
    assert status == 503 and b"no media node available in zone 1" in body, body
    # The app secret is checked first (nothing about the zone is told to an unauthenticated caller).
    status, _, body = http("POST", gw.base + "/token/whip", b"{}", {"Content-Type": "application/json"})
    assert status == 401, body
    auth = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    status, _, body = http("POST", gw.base + "/token/whip", b"{}", auth)
    assert status == 503 and b"zone 1" in body, body
    # Operators see the refusals on the gateway's own /metrics.
    status, headers, body = http("GET", gw.base + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), headers
    assert "trackmesh_gateway_no_capacity_total 2.0" in body.decode(), body.decode()


def test_unknown_or_forged_conn_id_is_404_at_the_gateway(cluster: Cluster) -> None:
    from trackmesh.core.ids import ConnIdCodec, SessionId

    gw = cluster.gateway(zone=1)
    for conn in ("nope", ConnIdCodec("another-secret").encode(1 << 8 | 10, 0, SessionId(5))):
        status, _, body = http("DELETE", f"{gw.base}/whip/conn/{conn}", headers={"Authorization": "Bearer x"})
        assert status == 404 and b"unknown conn id" in body, body
    # Well signed, but its node is not (or no longer) in the zone.
    conn = ConnIdCodec(SECRET).encode(1 << 8 | 10, 0, SessionId(5))
    headers = {"Authorization": "Bearer x", "Content-Type": "application/trickle-ice-sdpfrag"}
    status, _, body = http("PATCH", f"{gw.base}/whep/conn/{conn}", b"a=x", headers)
    assert status == 404 and b"node 10 of zone 1 is gone" in body, body


def test_duplicated_node_id_is_refused_with_a_clear_message(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    cluster.media(1, 10)
    dup = cluster.media(1, 10, wait=False)
    assert dup.proc.wait(30) == 2, dup.log()
    dup._drain.join(2)
    text = "\n".join(dup.lines)
    assert "--node-id: node 10 of zone 1 is already running in the cluster" in text, text
    # Another zone may use the same index.
    cluster.media(2, 10)
    assert len(cluster.wait_nodes(gw, 1)) == 1
    # The gateway's /metrics lists the node it routes to (its own zone only), healthy.
    text = http("GET", gw.base + "/metrics")[2].decode()
    assert 'trackmesh_gateway_node_healthy{node="10",zone="1"} 1.0' in text, text
    assert 'zone="2"' not in text, text


def test_seeds_that_do_not_answer_start_not_ready_then_join(cluster: Cluster) -> None:
    seed_port = free_port()
    media = cluster.start("media", 1, 10, seeds=[f"tcp/127.0.0.1:{seed_port}"], wait=False)
    deadline = time.monotonic() + 20
    while media.health()[0] == 0 and time.monotonic() < deadline:
        assert media.proc.poll() is None, media.log()
        time.sleep(0.1)
    status, data = media.health()
    assert status == 503 and not data["ready"] and "not connected to any cluster seed" in data["reason"], data
    assert any("no cluster seed answers" in line for line in media.lines), media.log()
    # The seed comes up later: zenoh's retries connect, the node turns ready, the gateway sees it.
    gw = cluster.start("gateway", 1, 1, seeds=[], cluster_port=seed_port)
    media.wait_ready(20)
    assert cluster.wait_nodes(gw, 1)[0]["node"] == 10


def test_a_node_with_the_wrong_secret_cannot_join_and_gets_nothing(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    good = cluster.media(1, 10)
    cluster.wait_nodes(gw, 1)
    bad = cluster.start("media", 1, 11, seeds=[gw.seed, good.seed], secret="wrong-secret-xyz", wait=False)
    time.sleep(3)  # time for its links to be refused
    deadline = time.monotonic() + 20
    while (health := bad.health())[0] == 0:  # its HTTP server not up yet (a loaded box)
        assert time.monotonic() < deadline, "the node's HTTP server never answered"
        time.sleep(0.2)
    status, data = health
    assert status == 503 and "not connected" in data["reason"], data
    # The gateway never hears of it; it hears nothing of the cluster (no peer, no remote member).
    assert [n["node"] for n in gw.info()["nodes"]] == [10]
    info = bad.info()
    assert info["workers"][0]["cluster"]["peers"] == 0, info
    assert info["workers"][0]["cluster"]["channels_imported"] == 0
    bad.kill()


def test_two_media_workers_are_members_of_their_own(cluster: Cluster) -> None:
    gw = cluster.gateway(zone=1)
    rtmp = _free_range(2)
    m = cluster.media(1, 10, "--rtmp-port", str(rtmp), workers=2)
    cluster.wait_nodes(gw, 1)
    workers = m.info()["workers"]
    members = {w["cluster"]["member"] for w in workers}
    assert len(members) == 2
    # Each worker peers with the other worker and the gateway.
    assert all(w["cluster"]["peers"] == 2 for w in workers), workers
    # An RTMP stream key through the gateway: the media node answers with its own URL (worker i: PORT+i).
    body = json.dumps({"room": "rtmp-room", "peer": "obs", "ttl": 60}).encode()
    status, _, raw = http("POST", f"{gw.base}/token/rtmp", body,
                          {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"})  # fmt: skip
    assert status == 200, raw
    url = json.loads(raw)["data"]["rtmp_url"]
    assert url in (f"rtmp://127.0.0.1:{rtmp}/live", f"rtmp://127.0.0.1:{rtmp + 1}/live"), url
    status, _, raw = http("DELETE", f"{gw.base}/rtmp/conn/forged", headers={"Authorization": f"Bearer {SECRET}"})
    assert status == 404 and b"unknown conn id" in raw, raw


def _dev_cluster(zones: int, media_per_zone: int, base: int, *extra: str, routers_per_zone: int = 0,
                 cwd: Path | None = None) -> tuple[subprocess.Popen[str], list[str]]:  # fmt: skip
    """Start ``trackmesh dev-cluster`` (HTTP ports from ``base``) and wait until it says its processes are up."""
    cport = _free_range(zones * (media_per_zone + 2 + routers_per_zone) + 2)  # + connectors, global gateway, console
    proc = subprocess.Popen(
        [TRACKMESH, "dev-cluster", "--zones", str(zones), "--media-per-zone", str(media_per_zone),
         "--http-port", str(base), "--cluster-port", str(cport), "--secret", SECRET,
         "--routers-per-zone", str(routers_per_zone), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent, cwd=cwd,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    deadline = time.monotonic() + 60
    while not any("processes up" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("".join(lines))
        time.sleep(0.1)
    return proc, lines


def test_dev_cluster_starts_two_zones_prints_urls_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base = _free_range(10)
    proc, lines = _dev_cluster(2, 2, base, cwd=tmp_path)
    try:
        text = "".join(lines).split("trackmesh dev-cluster:", 1)[1]
        assert "10 processes up" in text and f"http://127.0.0.1:{base}" in text, text
        # The console of the whole cluster starts last; its URL is printed.
        assert f"console (every zone, node and room): http://127.0.0.1:{base + 9}/console" in text, text
        assert http("GET", f"http://127.0.0.1:{base + 9}/api/node/health/ready")[0] == 200
        zone_gateways = [ln for ln in text.splitlines() if ln.startswith(("  zone 1 gateway", "  zone 2 gateway"))]
        assert len(zone_gateways) == 2 and text.count(" media ") == 4, text
        assert text.count(" connector   4  http") == 2 and "event log: " in text, text
        # Two zones: a global gateway above them, started last (its URL is printed).
        assert text.count("zone - global gateway") == 1, text
        assert f"global gateway (sends each client to the best zone): http://127.0.0.1:{base + 8}" in text, text
        # Each zone's connector (first member of its zone) keeps its log under the working directory.
        status, _, body = http("GET", f"http://127.0.0.1:{base}/api/connector/log/sessions",
                               headers={"Authorization": f"Bearer {SECRET}"})  # fmt: skip
        assert status == 200 and json.loads(body)["data"] == [], body
        assert sorted(p.name for p in (tmp_path / "trackmesh-data" / "dev-cluster").glob("*.db")) == [
            "zone-1.db", "zone-2.db"]
        # Gateway of zone 1 (second member) sees its two media nodes and zone 2.
        gw = f"http://127.0.0.1:{base + 1}"
        deadline = time.monotonic() + 10
        while True:
            info = json.loads(http("GET", gw + "/api/node/info")[2])["data"]
            if len(info["nodes"]) == 2 and [z["zone"] for z in info["zones"]] == [2]:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    assert rc == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)


def test_a_zone_without_capacity_sends_new_sessions_to_the_best_other_zone(cluster: Cluster) -> None:
    gw1 = cluster.gateway(zone=1)
    gw2 = cluster.gateway(zone=2)
    cluster.media(2, 10)
    cluster.wait_nodes(gw2, 1)
    deadline = time.monotonic() + 5
    while not [z for z in gw1.info()["zones"] if z["nodes"]]:
        assert time.monotonic() < deadline, gw1.info()
        time.sleep(0.1)
    body = json.dumps({"room": "r", "peer": "p", "ttl": 60}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    status, h, raw = http("POST", gw1.base + "/token/whip", body, headers)
    assert status == 200 and h["x-trackmesh-served-by"] == "2/10", (status, raw)
    # A request already forwarded once is not forwarded again (no loops between zones).
    status, _, raw = http("POST", gw1.base + "/token/whip", body, {**headers, "X-Trackmesh-Forwarded": "2"})
    assert status == 503 and b"no media node available in zone 1" in raw, raw


def test_seed_lists_expand_port_ranges_and_reject_bad_endpoints() -> None:
    from trackmesh.config import ConfigError, resolve

    cfg = resolve("media", {"seeds": "tcp/127.0.0.1:7000-7002, tcp/127.0.0.1:9", "cluster_port": "7100"}, {})
    assert cfg.seeds == ("tcp/127.0.0.1:7000", "tcp/127.0.0.1:7001", "tcp/127.0.0.1:7002", "tcp/127.0.0.1:9")
    for bad in ("udp/224.0.0.224:7446-7000", "127.0.0.1:7447", "tcp/127.0.0.1:7000-9000"):
        with pytest.raises(ConfigError, match="--seeds"):
            resolve("media", {"seeds": bad}, {})
    with pytest.raises(ConfigError, match="--cluster-port"):
        resolve("media", {"workers": "2"}, {})


def test_dev_cluster_members_die_with_it_even_when_it_is_killed() -> None:
    """SIGKILL gives dev-cluster no chance to stop its members: the kernel does (PR_SET_PDEATHSIG)."""
    proc, _lines = _dev_cluster(1, 1, _free_range(2), "--no-connector", "--no-console")
    try:
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2, children
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 20
    alive = children
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in children if _running(pid)]
    assert not alive, f"members still running after dev-cluster was killed: {alive}"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
