"""Limits before work (issue 17 s2), on a real node process with raw sockets: authentication before
bodies, body caps answered with a 413 the client can read, slow clients (slowloris) cut by header and
body timeouts, a per-address connection cap, oversized heads answered 414/431, session caps and the
connect deadline."""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.node_process import NodeProcess, http

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
WHIP_OFFER = (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes()

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
PER_IP = 24


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    n = NodeProcess(
        "--http-header-timeout", str(HEADER_TIMEOUT), "--http-body-timeout", str(BODY_TIMEOUT),
        "--http-max-connections-per-ip", str(PER_IP), "--connect-timeout", "2",
        "--max-sessions-per-token", "5", "--max-sessions", "40",
    )  # fmt: skip
    n.wait_ready()
    yield n
    assert n.stop(signal.SIGINT) == 0
    assert "Traceback" not in n.output()


def connect(node: NodeProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    return s


def read_response(s: socket.socket, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body of the one response on ``s``; the server closes after it (connection: close)
    or we stop at Content-Length."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        None,
    )
    while length is not None and len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split()[1]), body


def send_all_then_read(node: NodeProcess, head: bytes, body_size: int) -> tuple[int, bytes]:
    """Send ``head`` and ``body_size`` bytes as fast as the server takes them (as urllib does), then
    read the answer. A server that closes without draining makes this fail with a reset."""
    s = connect(node)
    with s:
        s.sendall(head)
        chunk = b"x" * 65536
        left = body_size
        while left > 0:
            n = min(left, len(chunk))
            s.sendall(chunk[:n])
            left -= n
        return read_response(s)


def send_until_answered(node: NodeProcess, head: bytes, body_size: int) -> tuple[int, bytes, int]:
    """Send ``head`` and up to ``body_size`` bytes, stopping as soon as the server answers (a client
    watching for an early response); returns the status, the body and how many body bytes went out."""
    s = connect(node)
    with s:
        s.sendall(head)
        chunk = b"x" * 65536
        sent = 0
        while sent < body_size:
            readable, writable, _ = select.select([s], [s], [], 5)
            if readable:
                break
            if writable:
                try:
                    sent += s.send(chunk[: body_size - sent])
                except OSError:
                    break
        status, body = read_response(s)
        return status, body, sent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric(node: NodeProcess, name: str) -> float:
    status, _, raw = http("GET", node.base + "/metrics")
    assert status == 200
    for line in raw.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_4_mib_whip_body_gets_a_413_urllib_can_read(node: NodeProcess) -> None:
    # Before: the server closed without draining and urllib saw "Connection reset by peer".
    for _ in range(3):
        status, _, body = http(
            "POST", node.base + "/whip/endpoint", b"v=0\r\n" + b"a" * (4 << 20),
            {"Content-Type": "application/sdp", "Authorization": "Bearer x"},
        )  # fmt: skip
        assert status in (401, 413), body  # the token is checked first, then the body cap
    tok = token(node, "whip", "room-413")
    status, _, body = http(
        "POST", node.base + "/whip/endpoint", b"v=0\r\n" + b"a" * (4 << 20),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}"},
    )  # fmt: skip
    assert status == 413 and b"larger than 65536" in body


def test_unauthenticated_token_requests_are_refused_before_the_body(node: NodeProcess) -> None:
    before = rss_kb(node.proc.pid)
    results: list[tuple[int, bytes, int]] = []

    def one() -> None:
        head = (
            f"POST /token/whip HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer wrong-secret\r\nContent-Length: {50 << 20}\r\n\r\n"
        ).encode()
        results.append(send_until_answered(node, head, 50 << 20))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = rss_kb(node.proc.pid)
    assert [s for s, _, _ in results] == [401] * 8
    assert json.loads(results[0][1]) == {"status": False, "error": "APP_TOKEN_INVALID"}
    sent = max(n for _, _, n in results)
    print(f"RSS with 8 x 50 MB unauthenticated bodies: {before / 1024:.0f} MB -> {after / 1024:.0f} MB "
          f"(at most {sent} body bytes went out before the 401)")  # fmt: skip
    # Before the fix every body was read and parsed (239 MB -> 844 MB); now none is kept.
    assert after - before < 32 * 1024
    # Without any credential, also before the body, also with a chunked body.
    s = connect(node)
    with s:
        s.sendall(b"POST /token/whep HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        status, _ = read_response(s)
    assert status == 401


def test_authenticated_bodies_are_capped_declared_or_chunked(node: NodeProcess) -> None:
    auth = f"Authorization: Bearer {node.secret}\r\n"
    head = f"POST /token/whip HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {1 << 20}\r\n\r\n".encode()
    status, body = send_all_then_read(node, head, 1 << 20)
    assert status == 413 and b"larger than 16384" in body
    s = connect(node)
    with s:
        s.sendall(f"POST /token/whip HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n".encode()
                  + b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        for _ in range(40):
            s.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        status, body = read_response(s)
    assert status == 413 and b"larger than 16384" in body
    # Any other route too (a JSON route with no cap of its own).
    head = b"POST /whep/conn/x/limit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 200000\r\n\r\n"
    assert send_all_then_read(node, head, 200_000)[0] == 413


def test_slowloris_heads_get_408_after_the_header_timeout(node: NodeProcess) -> None:
    head = b"GET /api/node/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    socks = [connect(node) for _ in range(16)]
    start = time.monotonic()
    closed_at: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    for s in socks:
        s.setblocking(False)
    sent = 0
    while len(closed_at) < len(socks) and time.monotonic() - start < 10:
        for i, s in enumerate(socks):
            if i in closed_at:
                continue
            if sent < len(head):
                try:
                    s.send(head[sent : sent + 1])  # one byte every 50 ms
                except OSError:
                    closed_at[i] = time.monotonic() - start
                    continue
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                closed_at[i] = time.monotonic() - start
                continue
            answers[i] = answers.get(i, b"") + data
            if not data:
                closed_at[i] = time.monotonic() - start
        sent += 1
        time.sleep(0.05)
    for s in socks:
        s.close()
    print(f"slowloris: {len(closed_at)}/{len(socks)} closed, after {min(closed_at.values()):.2f}-"
          f"{max(closed_at.values()):.2f} s (header timeout {HEADER_TIMEOUT} s)")  # fmt: skip
    assert len(closed_at) == len(socks)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers.values()) and len(answers) == len(socks)
    assert max(closed_at.values()) < HEADER_TIMEOUT + 3.0
    assert metric(node, "trackmesh_http_header_timeouts_total") >= 16


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(node: NodeProcess) -> None:
    s = connect(node)
    with s:
        start = time.monotonic()
        s.settimeout(HEADER_TIMEOUT + 5)
        assert s.recv(100) == b""  # closed, and no 408 a client could take for its next answer
        assert HEADER_TIMEOUT - 0.1 < time.monotonic() - start < HEADER_TIMEOUT + 3.0


def test_a_slow_body_gets_408_after_the_body_timeout(node: NodeProcess) -> None:
    s = connect(node)
    with s:
        s.sendall(
            f"POST /token/whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {node.secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
        )
        start = time.monotonic()
        for _ in range(4):
            time.sleep(0.2)
            s.sendall(b" ")
        status, body = read_response(s)
        took = time.monotonic() - start
    assert status == 408 and b"body" in body
    assert BODY_TIMEOUT - 0.1 < took < BODY_TIMEOUT + 3.0
    assert metric(node, "trackmesh_http_body_timeouts_total") >= 1


def test_one_address_holds_at_most_the_connection_cap(node: NodeProcess) -> None:
    socks = [connect(node) for _ in range(PER_IP + 4)]
    try:
        refused = []
        for s in socks[PER_IP - 2 :]:
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            if data.startswith(b"HTTP/1.1 503 "):
                refused.append(data)
        # The cap counts every open connection of the address (the test's own idle ones included).
        assert len(refused) >= 4
        assert b"too many connections from 127.0.0.1" in refused[0]
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    assert http("GET", node.base + "/api/node/health")[0] == 200  # slots come back when they close
    assert metric(node, "trackmesh_http_connections_refused_per_ip_total") >= 4


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        (b"GET /api/node/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431),
        (b"GET /api/node/health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n", 431),
        (b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ],
    ids=["1MB-header", "10000-headers", "1MB-url"],
)
def test_oversized_heads_get_414_or_431_not_a_reset(node: NodeProcess, request_head: bytes, status: int) -> None:
    s = connect(node)
    with s:
        s.sendall(request_head)  # all of it, as a client does before reading
        got, body = read_response(s)
    assert got == status, body


def token(node: NodeProcess, kind: str, room: str, peer: str | None = "pub") -> str:
    body: dict[str, object] = {"room": room, "ttl": 600} | ({"peer": peer} if peer else {})
    status, data = node.json("POST", f"/token/{kind}", body, token=node.secret)
    assert status == 200, data
    return str(data["data"]["token"])


def test_sessions_are_capped_per_token_and_reaped_at_the_connect_deadline(node: NodeProcess) -> None:
    tok = token(node, "whip", "room-caps")
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}"}
    statuses = [http("POST", node.base + "/whip/endpoint", WHIP_OFFER, headers)[:3:2] for _ in range(6)]
    assert [s for s, _ in statuses[:5]] == [201] * 5
    assert statuses[5][0] == 503 and b"--max-sessions-per-token" in statuses[5][1]
    assert metric(node, 'trackmesh_sessions_refused_token_full_total') >= 1
    # Nobody sends an ICE check: 2 s (--connect-timeout) later all five are gone.
    start = time.monotonic()
    while time.monotonic() - start < 10 and metric(node, "trackmesh_sessions_connect_timeout_total") < 5:
        time.sleep(0.2)
    print(f"connect deadline: 5 sessions reaped {time.monotonic() - start:.1f} s after creation (deadline 2 s)")
    assert metric(node, "trackmesh_sessions_connect_timeout_total") >= 5
    assert http("POST", node.base + "/whip/endpoint", WHIP_OFFER, headers)[0] == 201  # slots freed


def test_urllib_sees_413_not_a_reset_on_the_token_route(node: NodeProcess) -> None:
    req = urllib.request.Request(
        node.base + "/token/whip", data=b"{" + b" " * (4 << 20) + b"}", method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {node.secret}"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 413
