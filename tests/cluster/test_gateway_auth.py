"""Through a gateway, wrong app secrets are throttled per real client (the gateway signs the client's
address for the media node), 429 and Retry-After reach the client, and /docs works without internet."""

from __future__ import annotations

import json
import socket
from http.client import HTTPConnection

from tests.cluster.test_roles import SECRET, Cluster, http
from trackmesh.security.keys import sign_forwarded

BODY = json.dumps({"room": "r", "peer": "p", "ttl": 60}).encode()


def post_from(source_ip: str, base: str, secret: str) -> tuple[int, dict[str, str]]:
    """POST /token/whip from a chosen loopback source address (any of 127.0.0.0/8 is ours)."""
    host, port = base.removeprefix("http://").split(":")
    conn = HTTPConnection(host, int(port), timeout=10, source_address=(source_ip, 0))
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        conn.request("POST", "/token/whip", BODY, headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def test_wrong_secrets_through_a_gateway_are_throttled_per_client(cluster: Cluster) -> None:
    gw = cluster.gateway()
    cluster.media()
    cluster.wait_nodes(gw, 1)
    codes = [post_from("127.0.0.1", gw.base, "wrong-secret-guess-000")[0] for _ in range(10)]
    assert codes == [401] * 10
    status, headers = post_from("127.0.0.1", gw.base, "wrong-secret-guess-000")
    assert status == 429 and int(headers["retry-after"]) >= 1, headers
    # Another client behind the same gateway is not locked out by the first one's guesses.
    assert post_from("127.0.0.2", gw.base, SECRET)[0] == 200
    assert post_from("127.0.0.1", gw.base, SECRET)[0] == 429
    # The client cannot claim another address: its own X-Trackmesh-Client is replaced by the gateway's.
    forged = sign_forwarded("not-the-cluster-secret", "127.0.0.9")
    status, _, _ = http("POST", gw.base + "/token/whip", BODY, {"Content-Type": "application/json",
                        "Authorization": f"Bearer {SECRET}", "X-Trackmesh-Client": forged})  # fmt: skip
    assert status == 429
    status, _, raw = http("GET", gw.base + "/docs")
    assert status == 200 and b"/docs-assets/swagger-ui-bundle.js" in raw
    with socket.create_connection(("127.0.0.1", int(gw.base.rsplit(":", 1)[1])), timeout=5) as s:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # head and body may come in separate segments
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 404") and b'{"status":false,"error":"Not Found"}' in answer
