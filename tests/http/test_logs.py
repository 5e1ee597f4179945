"""What the node logs about HTTP: our logger names, the client of a bad request, no conn ids, and a
warning for an API reachable from other machines that advertises loopback ICE candidates."""

from __future__ import annotations

import logging
import signal
import socket

import pytest

from tests.runtime.node_process import NodeProcess
from trackmesh.config import resolve, warnings_of
from trackmesh.logs import setup_logging


def test_bad_requests_are_logged_with_the_client_under_our_logger() -> None:
    n = NodeProcess("--http-host", "0.0.0.0")
    try:
        n.wait_ready()
        with socket.create_connection(("127.0.0.1", n.port), timeout=5) as s:
            local_port = s.getsockname()[1]
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 400")
    finally:
        assert n.stop(signal.SIGINT) == 0
    out = n.output()
    bad = [line for line in out.splitlines() if "Invalid HTTP request" in line]
    assert len(bad) == 1, out
    assert " trackmesh.http " in bad[0] and f"client=127.0.0.1:{local_port}" in bad[0], bad
    assert "uvicorn" not in out, out
    # --http-host 0.0.0.0 with the default --node-ip 127.0.0.1: remote browsers could not connect.
    warning = [line for line in out.splitlines() if "trackmesh.config" in line]
    assert len(warning) == 1 and "--node-ip 127.0.0.1" in warning[0] and "warning" in warning[0], out


def test_no_warning_when_the_addresses_agree() -> None:
    assert warnings_of(resolve("standalone", {}, {})) == []
    assert warnings_of(resolve("standalone", {"http_host": "0.0.0.0", "node_ip": "192.0.2.10"}, {})) == []
    assert warnings_of(resolve("gateway", {"http_host": "0.0.0.0"}, {})) == []
    assert len(warnings_of(resolve("media", {"http_host": "::", "node_ip": "127.0.0.1"}, {}))) == 1
    # A big full mesh: the advice to use zone routers (docs/cluster.md); not for a few seeds, not with routers.
    many = {"seeds": "tcp/127.0.0.1:7000-7007", "cluster_port": "7100"}
    (advice,) = warnings_of(resolve("media", many, {}))
    assert advice.startswith("--cluster-mode mesh with 8 seeds") and "--cluster-mode routers" in advice, advice
    assert warnings_of(resolve("gateway", {**many, "seeds": "tcp/127.0.0.1:7000-7006"}, {})) == []
    assert warnings_of(resolve("media", {**many, "cluster_mode": "routers"}, {})) == []


def test_httpx_request_lines_with_conn_ids_are_not_logged(capsys: pytest.CaptureFixture[str]) -> None:
    # The gateway's httpx client logs "HTTP Request: POST http://.../webrtc/<conn id>/ice-candidate" at info.
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "text")
        logging.getLogger("httpx").info("HTTP Request: POST http://127.0.0.1:1/webrtc/SECRETCONNID/ice-candidate")
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("trackmesh.node").info("node started")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "SECRETCONNID" not in err
    assert "trackmesh.http Started server process" in err and "trackmesh.node node started" in err
