"""atm0s 0.2's RTPengine-style API driven as its SIP gateway drives it, with ffmpeg as the phones.

Two endpoints in one room, one per flow and codec:

- ``POST /rtpengine/answer`` with a phone's offer (PCMA first): our answer, ``Location``;
- ``POST /rtpengine/offer``: our offer; the phone answers Opus, ``PATCH`` on the Location.

Each phone is one ffmpeg process that sends a tone (440 Hz, 1000 Hz) as plain RTP per the SDP
exchanged and records what it receives (an SDP input). The two hear each other through the
rooms' mix-minus (each hears the other's tone, not its own) and an aiortc WHEP viewer hears the
room. Before its first packet an endpoint is not in the room; ``DELETE`` ends one.

ffmpeg sends from one port and receives on another, while the node sends back to the source of
the packets (symmetric RTP): a small UDP relay in the test plays the phone's NAT, one address for
both directions, the one its SDP names.

Loopback only, inside the private network namespace (scripts/test.sh).
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import socket
import statistics
import subprocess
import threading
import wave
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_sip_calls import whep_listen
from tests.runtime.node_process import http

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Nat:
    """One UDP port (the address in the phone's SDP): packets from ffmpeg go on to the node from it,
    packets from the node go on to ffmpeg's receiving port."""

    def __init__(self, receiver: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.receiver = receiver
        self.node: tuple[str, int] | None = None
        self.to_node = self.from_node = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.node is None:
                continue
            if addr == self.node:
                self.from_node += 1
                self.sock.sendto(data, (HOST, self.receiver))
            else:
                self.to_node += 1
                self.sock.sendto(data, self.node)

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


def phone_offer(port: int) -> str:
    return (
        "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def phone_answer(our_offer: str, port: int) -> str:
    """The phone takes our offer's Opus (its payload type) and answers from ``port``."""
    pt = re.search(r"a=rtpmap:(\d+) opus/48000/2", our_offer)
    assert pt is not None, our_offer
    return (
        "v=0\r\no=gw 2 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt.group(1)}\r\na=rtpmap:{pt.group(1)} opus/48000/2\r\na=sendrecv\r\n"
    )


def receive_sdp(port: int, pt: int, rtpmap: str) -> str:
    return (
        f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=phone\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {rtpmap}\r\n"
    )


def node_port(sdp: str) -> int:
    m = re.search(r"m=audio (\d+) RTP/AVP", sdp)
    assert m is not None and int(m.group(1)) > 0, sdp
    return int(m.group(1))


def start_phone(
    tmp: Path, name: str, *, nat: Nat, freq: int, pt: int, rtpmap: str, encoder: list[str]
) -> subprocess.Popen[bytes]:
    """ffmpeg: the tone as RTP to the NAT's port, what the node sends (through the NAT) to a WAV."""
    sdp = tmp / f"{name}.sdp"
    sdp.write_text(receive_sdp(nat.receiver, pt, rtpmap))
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
         "-protocol_whitelist", "file,udp,rtp", "-analyzeduration", "200000", "-i", str(sdp),
         "-re", "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000:duration=6",
         "-map", "1:a", *encoder, "-payload_type", str(pt), "-f", "rtp", f"rtp://{HOST}:{nat.port}",
         "-map", "0:a", "-ac", "1", "-ar", "8000", "-t", "4.5", "-y", str(tmp / f"{name}.wav")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def tone_power(path: Path, freq: float, skip: float = 1.5, block: float = 0.1) -> float:
    """Amplitude of ``freq`` in the WAV after ``skip`` s: the median over 100 ms blocks of each
    block's Goertzel power per sample. Per block, so a phase jump where a packet was lost or
    concealed on a loaded machine does not cancel the tone out of one long window; the median, so
    at least half the blocks must carry it."""
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        samples = array("h")
        samples.frombytes(w.readframes(w.getnframes()))
    samples = samples[int(skip * rate) :]
    assert len(samples) > rate, f"only {len(samples)} samples recorded in {path.name}"
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    size = int(block * rate)
    powers = []
    for start in range(0, len(samples) - size + 1, size):
        s1 = s2 = 0.0
        for x in samples[start : start + size]:
            s1, s2 = x + coeff * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coeff * s1 * s2
        powers.append(math.sqrt(max(power, 0.0)) * 2 / size)
    return statistics.median(powers)


def calls(node: TrackmeshNode) -> dict[str, dict[str, Any]]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return {c["peer"]: c for c in body["data"]["calls"]}


@pytest.fixture(scope="module")
def node(netns_guard: None) -> Iterator[TrackmeshNode]:
    if shutil.which("ffmpeg") is None:
        pytest.fail("ffmpeg is missing (scripts/system-packages.txt)")
    # SIP signalling off: the RTPengine-style API needs only the media path.
    n = TrackmeshNode("--sip-port", "0", "--sip-rtp-ports", "42200-42299")
    try:
        yield n
    finally:
        rc = n.stop()
        tail = n.log_tail(200)
        assert "Traceback" not in "\n".join(n.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def test_gateway_flows_pcma_and_opus_phones_hear_each_other_and_the_room_hears_them(
    node: TrackmeshNode, tmp_path: Path
) -> None:
    room = "rtpengine-room"
    gw_a = node.token("rtpengine", room, "phone-pcma")
    gw_b = node.token("rtpengine", room, "phone-opus")
    nat_a, nat_b = Nat(free_port()), Nat(free_port())
    try:
        # Inbound call: the phone offered (PCMA first); we answer.
        status, headers, body = http(
            "POST", node.url("/rtpengine/answer"), phone_offer(nat_a.port).encode(),
            {"Authorization": f"Bearer {gw_a}", "Content-Type": "application/sdp"},
        )  # fmt: skip
        assert status == 201, body
        assert headers["Content-Type"].startswith("application/sdp")
        answer = body.decode()
        assert "a=rtpmap:8 PCMA/8000" in answer and "telephone-event/8000" in answer, answer
        location_a = headers["Location"]
        assert location_a.startswith("/rtpengine/conn/")
        nat_a.node = (HOST, node_port(answer))

        # Outbound call: we offer every codec; the phone answers Opus; PATCH brings its answer.
        status, headers, body = http("POST", node.url("/rtpengine/offer"), None, {"Authorization": f"Bearer {gw_b}"})
        assert status == 201, body
        offer = body.decode()
        for codec in ("opus/48000/2", "G722/8000", "PCMU/8000", "PCMA/8000", "telephone-event"):
            assert codec in offer, offer
        location_b = headers["Location"]
        nat_b.node = (HOST, node_port(offer))
        status, _, body = http("PATCH", node.url(location_b), phone_answer(offer, nat_b.port).encode(),
                               {"Content-Type": "text/html"})  # fmt: skip
        assert status == 415, body
        status, _, body = http("PATCH", node.url(location_b), phone_answer(offer, nat_b.port).encode(),
                               {"Content-Type": "application/sdp"})  # fmt: skip
        assert status == 200, body
        status, _, _ = http("PATCH", node.url(location_b), phone_answer(offer, nat_b.port).encode(),
                            {"Content-Type": "application/sdp"})  # fmt: skip
        assert status == 409  # answered already

        # Not in the room before the first packet (atm0s joins on the first RTP packet).
        before = calls(node)
        assert before["phone-pcma"]["joined"] is False and before["phone-opus"]["joined"] is False, before
        assert before["phone-pcma"]["kind"] == "rtpengine" and before["phone-opus"]["codec"] == "opus", before

        opus_pt = int(re.search(r"a=rtpmap:(\d+) opus", offer).group(1))  # type: ignore[union-attr]
        phone_a = start_phone(tmp_path, "a", nat=nat_a, freq=440, pt=8, rtpmap="PCMA/8000",
                              encoder=["-c:a", "pcm_alaw", "-ar", "8000", "-ac", "1"])  # fmt: skip
        phone_b = start_phone(tmp_path, "b", nat=nat_b, freq=1000, pt=opus_pt, rtpmap="opus/48000/2",
                              encoder=["-c:a", "libopus", "-ar", "48000", "-ac", "2", "-b:a", "32k"])  # fmt: skip
        whep = asyncio.run(_listen_after(node, room, 1.0, 2.5))
        out_a = phone_a.communicate(timeout=30)[1].decode(errors="replace")
        out_b = phone_b.communicate(timeout=30)[1].decode(errors="replace")
        assert phone_a.returncode == 0 and phone_b.returncode == 0, (out_a[-800:], out_b[-800:])
        during = calls(node)
    finally:
        nat_a.close()
        nat_b.close()
    assert whep["frames"] > 50 and whep["peak_rms"] > 1000, whep  # the room hears the phones
    for peer in ("phone-pcma", "phone-opus"):
        c = during[peer]
        assert c["joined"] is True and c["uplink_packets"] > 150 and c["rtp_out"] > 150, c
    # Each phone hears the other one's tone through the mix-minus, not its own.
    a440, a1000 = tone_power(tmp_path / "a.wav", 440), tone_power(tmp_path / "a.wav", 1000)
    b440, b1000 = tone_power(tmp_path / "b.wav", 440), tone_power(tmp_path / "b.wav", 1000)
    print(f"whep {whep}; a: 1000 Hz {a1000:.0f} 440 Hz {a440:.0f}; b: 440 Hz {b440:.0f} 1000 Hz {b1000:.0f}")
    assert a1000 > 1000 and a1000 > 10 * a440, (a1000, a440)  # PCMA phone hears the Opus phone
    assert b440 > 1000 and b440 > 10 * b1000, (b440, b1000)  # Opus phone hears the PCMA phone

    status, _, _ = http("DELETE", node.url(location_a), None, {})
    assert status == 200
    status, _, _ = http("DELETE", node.url(location_b), None, {"Authorization": f"Bearer {gw_a}"})
    assert status == 403  # a token given must be the conn's
    status, _, _ = http("DELETE", node.url(location_b), None, {"Authorization": f"Bearer {gw_b}"})
    assert status == 200
    status, _, _ = http("DELETE", node.url(location_b), None, {})
    assert status == 404
    assert not {"phone-pcma", "phone-opus"} & set(calls(node))


async def _listen_after(node: TrackmeshNode, room: str, delay: float, seconds: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    return await whep_listen(node.url("/whep/endpoint"), node.token("whep", room), seconds)


def test_refusals(node: TrackmeshNode) -> None:
    sdp = {"Content-Type": "application/sdp"}
    status, _, body = http("POST", node.url("/rtpengine/offer"), None, {})
    assert status == 401, body
    whep = node.token("whep", "r")
    status, _, body = http("POST", node.url("/rtpengine/offer"), None, {"Authorization": f"Bearer {whep}"})
    assert status == 401, body  # another kind of token
    token = node.token("rtpengine", "refusals", "p")
    auth = {"Authorization": f"Bearer {token}", **sdp}
    video_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n"
    status, _, body = http("POST", node.url("/rtpengine/answer"), video_only.encode(), auth)
    assert status == 488, body
    status, _, body = http("POST", node.url("/rtpengine/answer"), b"not sdp", auth)
    assert status == 400, body
    status, _, body = http("PATCH", node.url("/rtpengine/conn/forged"), phone_offer(5000).encode(), sdp)
    assert status == 404, body
    # An offer whose answer picks nothing of it: 488, and the conn is gone.
    status, headers, _ = http("POST", node.url("/rtpengine/offer"), None, auth)
    assert status == 201
    status, _, body = http("PATCH", node.url(headers["Location"]), phone_offer(5000).replace("8 0 101", "18").encode(),
                           sdp)  # fmt: skip
    assert status == 488, body
    status, _, body = http("DELETE", node.url(headers["Location"]), None, {})
    assert status == 404, body
