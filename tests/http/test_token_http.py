"""The token route, the JSON error envelope, --dev, --metrics-token and the offline docs, by raw HTTP
against real node processes (and one in-process app where a non-loopback client is needed)."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from email.message import Message
from typing import Any

import jwt
import pytest

from tests.runtime.node_process import NodeProcess, http
from trackmesh.security.keys import sign_forwarded, token_key

GOOD = {"room": "r1", "peer": "p1", "ttl": 60}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    n = NodeProcess()
    n.wait_ready()
    yield n
    assert n.stop(signal.SIGINT) == 0


def post(node: NodeProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Message, Any]:
    status, resp_headers, raw = http("POST", node.base + path, body, headers)
    return status, resp_headers, json.loads(raw)


def auth(node: NodeProcess, ctype: str = "application/json") -> dict[str, str]:
    return {"Authorization": f"Bearer {node.secret}", "Content-Type": ctype}


def test_wrong_content_type_is_415_in_the_envelope(node: NodeProcess) -> None:
    status, _, body = post(node, "/token/whip", json.dumps(GOOD).encode(), auth(node, "text/plain"))
    assert status == 415 and body == {"status": False, "error": "Content-Type must be application/json, got text/plain"}
    status, _, body = post(node, "/token/whip", b"room=r1", auth(node, "application/x-www-form-urlencoded"))
    assert status == 415 and body["status"] is False


def test_oversized_body_is_413_and_not_json_is_400(node: NodeProcess) -> None:
    big = json.dumps({**GOOD, "extra_data": "x" * 40_000}).encode()
    status, _, body = post(node, "/token/whip", big, auth(node))
    assert status == 413 and body == {"status": False, "error": "body larger than 16384 bytes"}
    status, _, body = post(node, "/token/whip", b"{not json", auth(node))
    assert status == 400 and body == {"status": False, "error": "invalid request: the body is not JSON"}


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"ttl": True}, "ttl"),  # a bool is not a number of seconds
        ({"ttl": "60"}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"room": "bad\nroom"}, "control characters"),
        ({"peer": "tab\tpeer"}, "control characters"),
        ({"peer": "nul\x00"}, "control characters"),
        ({"record": "yes"}, "record"),
        ({"rooom": "typo"}, "rooom"),
    ],
)
def test_bad_fields_are_refused_at_token_time(node: NodeProcess, change: dict[str, object], complaint: str) -> None:
    status, _, body = post(node, "/token/whip", json.dumps({**GOOD, **change}).encode(), auth(node))
    assert status == 400 and body["status"] is False and complaint in body["error"], body


def test_a_good_request_still_gets_a_token_signed_with_the_derived_key(node: NodeProcess) -> None:
    status, _, body = post(node, "/token/whip", json.dumps({**GOOD, "peer": "Zoë 🎥"}).encode(), auth(node))
    assert status == 200 and body["status"] is True
    claims = jwt.decode(body["data"]["token"], token_key(node.secret), algorithms=["HS256"])
    assert claims["peer"] == "Zoë 🎥"


def test_the_body_of_a_wrong_secret_is_never_read(node: NodeProcess) -> None:
    # 401 before the body: a declared 50 MB body with a wrong secret is refused without sending it.
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
        s.sendall(
            b"POST /token/whip HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-secret-xxxxxx\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
        )
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 401"), head


def test_unknown_routes_and_methods_use_the_envelope(node: NodeProcess) -> None:
    status, _, raw = http("GET", node.base + "/api/nope")
    assert status == 404 and json.loads(raw) == {"status": False, "error": "Not Found"}
    status, _, raw = http("GET", node.base + "/token/whip")
    assert status == 405 and json.loads(raw) == {"status": False, "error": "Method Not Allowed"}
    # WHIP/WHEP clients keep their plain-text problems.
    status, headers, raw = http("GET", node.base + "/whip/endpoint")
    assert status == 405 and headers["Content-Type"].startswith("text/plain") and raw == b"Method Not Allowed\n"


def test_whep_limit_is_a_json_route(node: NodeProcess) -> None:
    url = node.base + "/whep/conn/not-a-conn/limit"
    body = b'{"max_spatial": 0}'
    status, _, raw = http("POST", url, body, {"Authorization": "Bearer t", "Content-Type": "text/plain"})
    assert status == 415 and json.loads(raw)["status"] is False
    status, _, raw = http("POST", url, body, {"Authorization": "Bearer t", "Content-Type": "application/json"})
    assert status == 404 and json.loads(raw) == {"status": False, "error": "unknown conn id"}


def test_docs_and_redoc_are_served_without_a_cdn(node: NodeProcess) -> None:
    for path, asset in (("/docs", "/docs-assets/swagger-ui-bundle.js"), ("/redoc", "/docs-assets/redoc.standalone.js")):
        status, _, raw = http("GET", node.base + path)
        page = raw.decode()
        assert status == 200 and asset in page
        assert "cdn" not in page.lower() and "fonts.googleapis" not in page
        status, headers, js = http("GET", node.base + asset)
        assert status == 200 and len(js) > 100_000 and "javascript" in headers["Content-Type"]
    status, _, _ = http("GET", node.base + "/docs-assets/swagger-ui.css")
    assert status == 200


def test_samples_index_links_the_room_and_no_page_reads_a_secret_from_the_url(node: NodeProcess) -> None:
    status, _, raw = http("GET", node.base + "/samples/index.html")
    assert status == 200 and b'href="room.html"' in raw
    for name in ("whip.html", "whep.html", "room.html", "moq.html"):
        status, _, raw = http("GET", node.base + f"/samples/{name}")
        page = raw.decode()
        assert status == 200 and '?secret= is ignored' in page
        assert '"secret", "token"' not in page and '"secret","token"' not in page


def test_failed_secrets_are_throttled_per_client_with_retry_after() -> None:
    n = NodeProcess()
    try:
        n.wait_ready()
        wrong = {"Authorization": "Bearer wrong-secret-guess-000", "Content-Type": "application/json"}
        codes = [post(n, "/token/whip", json.dumps(GOOD).encode(), wrong)[0] for _ in range(10)]
        assert codes == [401] * 10
        status, headers, body = post(n, "/token/whip", json.dumps(GOOD).encode(), wrong)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "retry in" in body["error"]
        # Throttled before the check: even the right secret waits (the guesser cannot tell).
        status, _, _ = post(n, "/token/whip", json.dumps(GOOD).encode(), auth(n))
        assert status == 429
        # A forged forwarded-client header changes nothing; one signed by a cluster member does.
        forged = {**wrong, "X-Trackmesh-Client": "198.51.100.7;" + "0" * 32}
        assert post(n, "/token/whip", json.dumps(GOOD).encode(), forged)[0] == 429
        signed = {**auth(n), "X-Trackmesh-Client": sign_forwarded(n.secret, "198.51.100.7")}
        assert post(n, "/token/whip", json.dumps(GOOD).encode(), signed)[0] == 200
        status, _, raw = http("GET", n.base + "/metrics")
        text = raw.decode()
        assert "trackmesh_auth_failures_total 10.0" in text
        assert "trackmesh_auth_throttled_total 3.0" in text, text
        # Refills at one try per 2 s.
        time.sleep(2.2)
        assert post(n, "/token/whip", json.dumps(GOOD).encode(), auth(n))[0] == 200
    finally:
        assert n.stop(signal.SIGINT) == 0


def test_dev_tokens_atm0s_tokens_and_the_metrics_bearer() -> None:
    n = NodeProcess("--dev", "--atm0s-compatible-tokens", "--metrics-token", "metrics-bearer-0123456789")
    try:
        n.wait_ready()
        status, _, raw = http("GET", n.base + "/dev/token/whip?room=demo&peer=cam")
        body = json.loads(raw)
        assert status == 200 and body["status"] is True
        # atm0s mode: tokens are signed with the app secret itself ...
        claims = jwt.decode(body["data"]["token"], n.secret, algorithms=["HS256"])
        assert (claims["iss"], claims["room"], claims["peer"]) == ("whip", "demo", "cam")
        # ... and tokens minted elsewhere with the secret are accepted (here: a WHEP with a bad body gets past auth).
        minted = jwt.encode({"iss": "whep", "room": "demo", "exp": int(time.time()) + 60}, n.secret)
        headers = {"Authorization": f"Bearer {minted}", "Content-Type": "application/sdp"}
        status, _, raw = http("POST", n.base + "/whep/endpoint", b"v=0", headers)
        assert status == 400, raw
        status, _, raw = http("GET", n.base + "/dev/token/whip?room=demo")
        assert status == 400 and "needs room and peer" in json.loads(raw)["error"]
        for path in ("/metrics", "/api/node/info"):
            status, reply_headers, raw = http("GET", n.base + path)
            assert status == 401 and reply_headers["WWW-Authenticate"] == "Bearer" and b"--metrics-token" in raw
            status, _, _ = http("GET", n.base + path, None, {"Authorization": "Bearer metrics-bearer-0123456789"})
            assert status == 200
        assert http("GET", n.base + "/api/node/health")[0] == 200  # health stays open (load balancers)
    finally:
        assert n.stop(signal.SIGINT) == 0


def test_dev_tokens_are_for_loopback_clients_only_and_absent_without_dev() -> None:
    from fastapi.testclient import TestClient

    from trackmesh.config import resolve
    from trackmesh.http.app import create_app
    from trackmesh.runtime.node import Node

    config = resolve("standalone", {"dev": True, "secret": "a-secret-of-16-chars"}, {})
    app = create_app(Node(config))
    remote = TestClient(app, client=("203.0.113.9", 40000))
    forwarded = {"X-Trackmesh-Client": sign_forwarded(config.secret, "127.0.0.1")}
    resp = remote.get("/dev/token/whep?room=demo", headers=forwarded)
    assert resp.status_code == 403 and resp.json() == {
        "status": False,
        "error": "demo tokens are for loopback clients only (--dev)",
    }
    local = TestClient(app, client=("127.0.0.1", 40000))
    assert local.get("/dev/token/whep?room=demo").status_code == 200
    plain = create_app(Node(resolve("standalone", {"secret": "a-secret-of-16-chars"}, {})))
    resp = TestClient(plain, client=("127.0.0.1", 40000)).get("/dev/token/whep?room=demo")
    assert resp.status_code == 404 and resp.json()["status"] is False


def test_an_unexpected_error_is_500_in_the_same_envelope() -> None:
    from fastapi.testclient import TestClient

    from trackmesh.config import resolve
    from trackmesh.http.app import create_app
    from trackmesh.runtime.node import Node

    app = create_app(Node(resolve("standalone", {"secret": "a-secret-of-16-chars"}, {})))

    @app.get("/api/test-bug")
    async def bug() -> None:
        raise RuntimeError("a bug of ours")

    client = TestClient(app, raise_server_exceptions=False)
    resp = client.get("/api/test-bug")
    assert resp.status_code == 500 and resp.json() == {"status": False, "error": "internal error"}
