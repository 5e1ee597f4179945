"""The standalone node as a user runs it: a real process, real HTTP on loopback, real signals."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import jwt
import pytest

from trackmesh.security.keys import token_key

from .node_process import TRACKMESH, NodeProcess, free_port, http


@pytest.fixture
def node() -> Iterator[NodeProcess]:
    n = NodeProcess()
    n.wait_ready()
    yield n
    if n.proc.poll() is None:
        n.stop(signal.SIGKILL)


def test_health_info_docs_and_clean_ctrl_c(node: NodeProcess) -> None:
    status, body = node.json("GET", "/api/node/health")
    assert status == 200 and body == {
        "status": True,
        "data": {"live": True, "ready": True, "reason": "ok", "role": "standalone", "draining": False},
    }
    status, body = node.json("GET", "/api/node/info")
    assert status == 200 and body["data"]["role"] == "standalone"
    workers = body["data"]["workers"]
    assert len(workers) == 1 and workers[0]["udp_port"] > 0
    # The worker's timer lateness (event-loop lag): never negative, counted per firing.
    lag = workers[0]["loop_lag"]
    assert lag["recent_max_s"] >= 0 and lag["late_total_s"] >= 0 and lag["timer_fires"] >= 0
    assert body["data"]["loop"] == "uvloop"
    status, _, raw = http("GET", node.base + "/openapi.json")
    assert status == 200 and b"/token/{kind}" in raw and b"/api/node/health" in raw
    status, _, raw = http("GET", node.base + "/metrics")
    assert status == 200 and b"trackmesh_endpoints" in raw and b"trackmesh_udp_rx_total" in raw
    assert b'trackmesh_loop_lag_seconds{worker="0"}' in raw and b"trackmesh_timer_fires_total" in raw
    assert node.stop(signal.SIGINT) == 0
    out = node.output()
    assert "shutting down reason=SIGINT" in out and "node stopped" in out
    assert "Traceback" not in out


def test_sigterm_stops_with_exit_code_0(node: NodeProcess) -> None:
    assert node.stop(signal.SIGTERM) == 0
    assert "reason=SIGTERM" in node.output()


def test_token_api(node: NodeProcess) -> None:
    status, body = node.json("POST", "/token/whip", {"room": "r1", "peer": "p1", "ttl": 60}, token=node.secret)
    assert status == 200 and body["status"] is True
    # Signed with a key derived from the secret (HKDF), never with the secret itself.
    claims = jwt.decode(body["data"]["token"], token_key(node.secret), algorithms=["HS256"])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["data"]["token"], node.secret, algorithms=["HS256"])
    assert (claims["iss"], claims["room"], claims["peer"]) == ("whip", "r1", "p1")
    assert claims["exp"] - claims["iat"] == 60
    status, body = node.json("POST", "/token/whip", {"room": "r1", "peer": "p1", "ttl": 60}, token="wrong-secret")
    assert status == 401 and body == {"status": False, "error": "APP_TOKEN_INVALID"}
    status, body = node.json("POST", "/token/whip", {"room": "r1", "ttl": 60}, token=node.secret)
    assert status == 400 and "needs room and peer" in body["error"]
    status, body = node.json("POST", "/token/whep", {"room": "r1", "ttl": -5}, token=node.secret)
    assert status == 400 and "ttl" in body["error"]
    status, body = node.json("POST", "/token/nope", {"room": "r1", "ttl": 5}, token=node.secret)
    assert status == 400 and "kind" in body["error"]


def test_generated_secret_is_printed_once_with_sample_urls() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [TRACKMESH, "standalone", "--http-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if http("GET", f"http://127.0.0.1:{port}/api/node/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert out.count("app secret (generated") == 1
    assert f"http://127.0.0.1:{port}/samples/whip.html" in out
    assert f"http://127.0.0.1:{port}/samples/room.html" in out
    assert f"http://127.0.0.1:{port}/samples/index.html" in out


def test_two_workers_have_their_own_ports_and_all_stop() -> None:
    n = NodeProcess("--workers", "2")
    try:
        n.wait_ready()
        status, body = n.json("GET", "/api/node/info")
        ports = [w["udp_port"] for w in body["data"]["workers"]]
        assert status == 200 and len(ports) == 2 and len(set(ports)) == 2 and all(ports)
        assert n.stop(signal.SIGINT) == 0
        out = n.output()
        assert out.count("worker stopped") == 2, out
    finally:
        if n.proc.poll() is None:
            n.stop(signal.SIGKILL)


def test_http_port_in_use_is_one_clear_line() -> None:
    first = NodeProcess()
    try:
        first.wait_ready()
        proc = subprocess.run(
            [TRACKMESH, "standalone", "--http-port", str(first.port), "--secret", "test-secret-12345"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert f"--http-port: cannot listen on 127.0.0.1:{first.port}" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        first.stop()


def test_bad_env_value_stops_at_start() -> None:
    proc = subprocess.run(
        [TRACKMESH, "standalone"], capture_output=True, text=True, timeout=30, env={"TRACKMESH_WORKERS": "many"}
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "trackmesh: TRACKMESH_WORKERS (--workers): 'many' is out of range; accepted: an integer 1..64"
    )
