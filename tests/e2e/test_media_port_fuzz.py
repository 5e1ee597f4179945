"""Hostile datagrams on the media port while real clients stream: dropped and counted, the
worker survives and the viewer keeps decoding (issue: bad input never disturbs other peers)."""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
import time

from .conftest import CLIENTS_DIR, TrackmeshNode


def hostile_datagrams(rng: random.Random, n: int) -> list[bytes]:
    """Shapes that reach every parser: STUN (with and without a plausible USERNAME), DTLS
    records, RTP/RTCP headers with nonsense, and plain noise (RFC 7983 first-byte ranges)."""
    out: list[bytes] = []
    for i in range(n):
        kind = i % 6
        body = rng.randbytes(rng.randint(0, 1300))
        if kind == 0:  # STUN binding request header + random attributes
            out.append(struct.pack("!HHI", 0x0001, len(body) & 0xFFFC, 0x2112A442) + rng.randbytes(12) + body)
        elif kind == 1:  # STUN with a USERNAME attribute of random ufrags
            user = rng.randbytes(rng.randint(1, 40))
            attr = struct.pack("!HH", 0x0006, len(user)) + user + b"\0" * (-len(user) % 4)
            out.append(struct.pack("!HHI", 0x0001, len(attr), 0x2112A442) + rng.randbytes(12) + attr)
        elif kind == 2:  # DTLS record header (handshake / app data) + junk
            out.append(bytes([rng.choice((22, 23, 20, 21)), 0xFE, 0xFD]) + body)
        elif kind == 3:  # RTP-looking
            out.append(bytes([0x80, rng.randint(0, 127)]) + body)
        elif kind == 4:  # RTCP-looking
            out.append(bytes([0x80 | rng.randint(0, 31), rng.randint(192, 223)]) + body)
        else:
            out.append(body)
    return out


def test_fuzzed_media_port_while_streaming(trackmesh_node: TrackmeshNode) -> None:
    node = trackmesh_node
    room = "fuzz-room"
    pub_tok = node.token("whip", room, "pub")
    view_tok = node.token("whep", room)
    udp_port = node.info()["workers"][0]["udp_port"]
    py = sys.executable
    client = str(CLIENTS_DIR / "aiortc_client.py")
    publisher = subprocess.Popen(
        [py, client, "whip", node.url("/whip/endpoint"), "--token", pub_tok, "--duration", "14"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2.0)
        viewer = subprocess.Popen(
            [
                py,
                client,
                "whep",
                node.url("/whep/endpoint"),
                "--token",
                view_tok,
                "--duration",
                "9",
                "--min-frames",
                "90",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        before = node.info()["workers"][0]["counters"]
        rng = random.Random(1234)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        try:
            for _ in range(30):
                for data in hostile_datagrams(rng, 1000):
                    sock.sendto(data, ("127.0.0.1", udp_port))
                    sent += 1
                time.sleep(0.1)  # ~10 k datagrams/s for 3 s, while media flows
        finally:
            sock.close()
        out, err = viewer.communicate(timeout=60)
    finally:
        _, pub_err = publisher.communicate(timeout=60)
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert viewer.returncode == 0, (summary, err[-2000:])
    assert publisher.returncode == 0, pub_err[-2000:]
    # The viewer decoded the publisher's video throughout (30 fps for ~7 s).
    assert summary["frames"] >= 90, summary
    assert (summary["width"], summary["height"]) == (640, 480)
    after = node.info()["workers"][0]["counters"]
    assert after["handler_errors"] == 0
    received = after["udp_rx"] - before["udp_rx"]
    # Loopback does not lose datagrams at this rate; media packets come on top of the fuzz.
    assert received >= sent * 0.99, (received, sent)
    dropped = after["udp_rx_unrouted"] - before["udp_rx_unrouted"]
    assert dropped >= sent * 0.9, (dropped, sent)
    status = node.proc.json("GET", "/api/node/health")[0]
    assert status == 200
