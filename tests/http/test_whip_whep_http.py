"""WHIP/WHEP HTTP refusals, on a real node process: each bad request gets a clear 4xx."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import jwt
import pytest

from tests.runtime.node_process import NodeProcess, http
from trackmesh.security.keys import token_key

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
WHIP_OFFER = (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes()
WHEP_OFFER = (FIXTURES / "chrome_whep_recvonly.sdp").read_bytes()


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    n = NodeProcess()
    n.wait_ready()
    yield n
    assert n.stop(signal.SIGINT) == 0


def token(node: NodeProcess, kind: str, room: str = "room-h", peer: str | None = "pub", ttl: int = 600) -> str:
    body = {"room": room, "ttl": ttl} | ({"peer": peer} if peer else {})
    status, data = node.json("POST", f"/token/{kind}", body, token=node.secret)
    assert status == 200
    return str(data["data"]["token"])


def post(
    node: NodeProcess, kind: str, offer: bytes, tok: str | None, ctype: str = "application/sdp"
) -> tuple[int, Message, bytes]:
    headers = {"Content-Type": ctype}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    return http("POST", f"{node.base}/{kind}/endpoint", offer, headers)


def test_whip_post_answers_201_with_location_etag_and_cors(node: NodeProcess) -> None:
    tok = token(node, "whip", peer="pub-ok")
    status, headers, body = http(
        "POST",
        f"{node.base}/whip/endpoint",
        WHIP_OFFER,
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}", "Origin": "http://example.test"},
    )
    assert status == 201, body
    assert headers["Content-Type"].startswith("application/sdp")
    assert headers["Location"].startswith("/whip/conn/")
    assert headers["ETag"].startswith('"')
    assert "Location" in headers["Access-Control-Expose-Headers"]
    assert headers["Access-Control-Allow-Origin"] in ("*", "http://example.test")
    answer = body.decode()
    assert "a=ice-lite" in answer and "a=setup:passive" in answer and "127.0.0.1" in answer
    # The answer accepts the three simulcast layers of the offer.
    assert "a=simulcast:recv" in answer
    status, _, _ = http("DELETE", node.base + headers["Location"], None, {"Authorization": f"Bearer {tok}"})
    assert status == 200


def test_cors_preflight(node: NodeProcess) -> None:
    status, headers, _ = http(
        "OPTIONS",
        f"{node.base}/whip/endpoint",
        None,
        {
            "Origin": "http://example.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert status == 200
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "authorization" in headers["Access-Control-Allow-Headers"].lower()


def test_token_refusals(node: NodeProcess) -> None:
    status, _, body = post(node, "whip", WHIP_OFFER, None)
    assert status == 401 and b"missing bearer whip token" in body
    status, _, body = post(node, "whip", WHIP_OFFER, token(node, "whep"))
    assert status == 401 and b"not 'whip'" in body
    forged = jwt.encode({"iss": "whip", "room": "r", "peer": "p", "exp": int(time.time()) + 60}, "other-secret-1")
    status, _, body = post(node, "whip", WHIP_OFFER, forged)
    assert status == 401 and b"signature" in body
    expired = jwt.encode({"iss": "whip", "room": "r", "peer": "p", "exp": int(time.time()) - 1}, token_key(node.secret))
    status, _, body = post(node, "whip", WHIP_OFFER, expired)
    assert status == 401 and b"expired" in body
    status, _, body = post(node, "whep", WHEP_OFFER, token(node, "webrtc"))
    assert status == 401 and b"not 'whep'" in body


def test_body_refusals(node: NodeProcess) -> None:
    tok = token(node, "whip")
    status, _, body = post(node, "whip", WHIP_OFFER, tok, ctype="application/json")
    assert status == 415 and b"application/sdp" in body
    status, _, body = post(node, "whip", b"v=0\r\n" + b"a=x\r\n" * 20000, tok)
    assert status == 413
    status, _, body = post(node, "whip", b"\xff\xfe garbage", tok)
    assert status == 400 and b"UTF-8" in body
    status, _, body = post(node, "whip", b"v=0\r\nthis is not sdp\r\n", tok)
    assert status == 400 and body.startswith(b"cannot accept the offer: ")
    no_bundle = WHIP_OFFER.replace(b"a=group:BUNDLE", b"a=group:NOTBUNDLE")
    status, _, body = post(node, "whip", no_bundle, tok)
    assert status == 400 and b"BUNDLE" in body
    # A WHEP (recvonly) offer sent to WHIP has nothing WHIP can accept.
    status, _, body = post(node, "whip", WHEP_OFFER, tok)
    assert status == 400, body


def test_patch_and_delete_need_the_sessions_own_token(node: NodeProcess) -> None:
    tok = token(node, "whip", peer="pub-patch")
    status, headers, _ = post(node, "whip", WHIP_OFFER, tok)
    assert status == 201
    loc, etag = node.base + headers["Location"], headers["ETag"]
    other = token(node, "whip", peer="pub-patch", ttl=601)  # same room and peer, another token
    assert other != tok
    frag = b"a=ice-ufrag:ZzZz\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag"}

    status, _, _ = http("PATCH", loc, frag, sdpfrag)
    assert status == 401
    status, _, body = http("PATCH", loc, frag, sdpfrag | {"Authorization": f"Bearer {other}"})
    assert status == 403 and b"did not create" in body
    status, _, _ = http("DELETE", loc, None, {"Authorization": f"Bearer {other}"})
    assert status == 403
    status, _, body = http("PATCH", loc, frag, sdpfrag | {"Authorization": f"Bearer {tok}", "If-Match": '"nope"'})
    assert status == 412
    status, _, _ = http("PATCH", loc, b"garbage line\r\n", sdpfrag | {"Authorization": f"Bearer {tok}"})
    assert status == 400
    status, _, _ = http("PATCH", loc, frag, {"Content-Type": "text/plain", "Authorization": f"Bearer {tok}"})
    assert status == 415

    # An ICE restart (new ufrag/pwd) answers 200 with our new credentials and a new ETag.
    status, headers2, body = http("PATCH", loc, frag, sdpfrag | {"Authorization": f"Bearer {tok}", "If-Match": etag})
    assert status == 200, body
    assert b"a=ice-ufrag:" in body and b"a=ice-pwd:" in body and b"candidate" in body
    assert headers2["ETag"] != etag
    # Trickled candidates with the same credentials: 204.
    cand = frag + b"a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host\r\n"
    status, _, _ = http("PATCH", loc, cand, sdpfrag | {"Authorization": f"Bearer {tok}"})
    assert status == 204

    status, _, _ = http("DELETE", loc, None, {"Authorization": f"Bearer {tok}"})
    assert status == 200
    status, _, _ = http("DELETE", loc, None, {"Authorization": f"Bearer {tok}"})
    assert status == 404


def test_unknown_and_forged_conn_ids_are_404(node: NodeProcess) -> None:
    tok = token(node, "whip", peer="pub-404")
    status, headers, _ = post(node, "whip", WHIP_OFFER, tok)
    assert status == 201
    conn = headers["Location"].rsplit("/", 1)[1]
    forged = conn[:-3] + ("AAA" if conn[-3:] != "AAA" else "BBB")
    auth = {"Authorization": f"Bearer {tok}"}
    for bad in (forged, "nope", "A" * len(conn)):
        status, _, body = http("DELETE", f"{node.base}/whip/conn/{bad}", None, auth)
        assert status == 404, (bad, body)
    # A WHIP conn id is not a WHEP resource.
    status, _, _ = http("DELETE", f"{node.base}/whep/conn/{conn}", None, auth)
    assert status == 404
    status, _, _ = http("DELETE", node.base + headers["Location"], None, auth)
    assert status == 200


def test_gateway_without_media_nodes_answers_503() -> None:
    import subprocess

    from tests.runtime.node_process import TRACKMESH, free_port

    port = free_port()
    proc = subprocess.Popen(
        [TRACKMESH, "gateway", "--http-port", str(port), "--secret", "test-secret-12345"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if http("GET", base + "/api/node/health")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        tok = jwt.encode({"iss": "whip", "room": "r", "peer": "p", "exp": int(time.time()) + 60}, "test-secret-12345")
        status, _, body = http(
            "POST",
            base + "/whip/endpoint",
            WHIP_OFFER,
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {tok}"},
        )
        assert status == 503 and b"no media node available in zone 0" in body
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
