"""Phone callers in rooms, with real clients: sipp dials a room on a trackmesh node's --sip-port.

- ``uac_pcap`` (sipp's built-in scenario: PCMA from /usr/share/sip-tester plus RFC 2833 DTMF)
  calls ``sip:<token>@127.0.0.1``: an aiortc WHEP viewer in the room hears the caller (decoded
  Opus with real energy), the node saw the call's RTP and the DTMF digit, and after sipp's BYE the
  call and its peer are gone.
- A hold scenario: re-INVITE with ``a=sendonly`` is answered ``a=recvonly`` (200, the call stays
  up), a second re-INVITE resumes with ``a=sendrecv``, then BYE; a caller without credentials gets
  a 401 challenge.
- sipp REGISTERs and calls with the digest credentials of ``POST /token/sip`` (its own MD5).
- A phone of bare sockets hears an aiortc WHIP publisher through the mixer (PCMU).
- baresip (Debian's 1.0) with the digest account calls in Opus and records what it hears; a
  Chromium WHEP viewer hears a PCMU baresip's tone (WebAudio AnalyserNode, the tone's FFT bin).
- linphonec (Debian's 5.1) calls, pauses (hold) and resumes the call, sends a DTMF digit: the call
  stays up on hold and the digit reaches the room.
- The room dials sipp's ``uas`` through ``POST /api/sip/calls`` and hangs up with ``DELETE``.

Loopback only, inside the private network namespace (scripts/test.sh); sipp always gets -timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.sipp_scenarios import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    check,
    pause,
    recv,
    register,
    request,
    response,
    scenario,
    sdp_audio,
)
from tests.recording.probe import decode_errors, probe

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
SIPP_PCAPS = Path("/usr/share/sip-tester")


def _offer(version: int, direction: str) -> str:
    return sdp_audio(PCMU, TELEPHONE_EVENT, version=version, direction=direction)


_holder = partial(request, user="holder")


def _reinvite(cseq: int, offered: str, answered: str, var: str) -> list[str]:
    """A re-INVITE offering ``offered``, answered ``answered`` (RFC 3264 s8.4), and its ACK."""
    return [
        _holder("INVITE", cseq=cseq, in_dialog=True, sdp=_offer(2353687636 + cseq, offered)),
        recv(response=100, optional=True),
        recv(response=200, checks=[check(f"a={answered}", var, search_in="body")]),
        _holder("ACK", cseq=cseq, in_dialog=True),
    ]


# Hold: the re-INVITE's sendonly is answered recvonly, the next one's sendrecv resumes; the call's
# session timer is the caller's (RFC 4028).
HOLD_SCENARIO = scenario(
    "hold and resume",
    _holder("INVITE", cseq=1, headers=["Session-Expires: 1800", "Supported: timer"],
            sdp=_offer(2353687637, "sendrecv")),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True, checks=[check("a=sendrecv", "d1", search_in="body"),
                                         check("Session-Expires: 1800;refresher=uac", "se")]),
    _holder("ACK", cseq=1, in_dialog=True),
    pause(300),
    *_reinvite(2, "sendonly", "recvonly", "d2"),
    pause(1500),
    *_reinvite(3, "sendrecv", "sendrecv", "d3"),
    pause(300),
    _holder("BYE", cseq=4, in_dialog=True),
    recv(response=200),
    references=["d1", "se", "d2", "d3"],
)  # fmt: skip

# RFC 3262: a caller that requires 100rel. Our 180 must be reliable (RSeq 1, Require: 100rel), the
# caller PRACKs it, and the 200 to the INVITE comes after the PRACK's 200.
_prack = partial(request, user="prack")
PRACK_SCENARIO = scenario(
    "100rel required",
    _prack("INVITE", cseq=1, headers=["Require: 100rel", "Supported: 100rel"], sdp=_offer(2353687637, "sendrecv"),
           start_txn="invite"),
    recv(response=100, optional=True, response_txn="invite"),
    recv(response=180, response_txn="invite", checks=[check("RSeq: 1", "rseq"), check("Require: 100rel", "req")]),
    _prack("PRACK", cseq=2, in_dialog=True, contact=False, rack="1 1 INVITE", retrans=None, start_txn="prack"),
    recv(response=200, response_txn="prack"),
    recv(response=200, response_txn="invite"),
    _prack("ACK", cseq=1, in_dialog=True, contact=False, ack_txn="invite"),
    pause(200),
    _prack("BYE", cseq=3, in_dialog=True, contact=False),
    recv(response=200),
    references=["rseq", "req"],
)  # fmt: skip

# A caller that gives up while it rings (RFC 3261 s9.1): CANCEL with the INVITE's branch, 200 to
# it, 487 to the INVITE, ACK for the 487 (s17.1.1.3: the INVITE's branch again).
_canceller = partial(request, user="canceller")
CANCEL_SCENARIO = scenario(
    "cancel while ringing",
    _canceller("INVITE", cseq=1, sdp=sdp_audio(PCMA, TELEPHONE_EVENT)),
    recv(response=100, optional=True),
    recv(response=180),
    pause(600),
    _canceller("CANCEL", cseq=1, contact=False, branch="[branch-4]"),
    recv(response=200),
    recv(response=487),
    _canceller("ACK", cseq=1, in_dialog=True, contact=False, branch="[branch-7]"),
)


def _digest_register(user: str, contact: str) -> list[str]:
    return [
        register(user, cseq=1, contact=f"<sip:{user}@{contact}>"),
        recv(response=401, auth=True),
        register(user, cseq=2, contact=f"<sip:{user}@{contact}>", authentication=True),
        recv(response=200),
    ]


def register_scenario(user: str, contact: str) -> str:
    """A REGISTER of ``user`` (Contact ``sip:user@contact``) answering a digest challenge."""
    return scenario("register with digest", *_digest_register(user, contact))


# sipp answers challenges for the URI sip:remote_ip:remote_port (its -auth_uri default): the INVITE
# goes there; the room is the one the credentials name.
_digest = partial(request, user="phone", uri="sip:[remote_ip]:[remote_port]", display="")
_DIGEST_OFFER = sdp_audio(PCMA, session_id=1, version=1)
_DIGEST_CALL = [
    _digest("INVITE", cseq=1, sdp=_DIGEST_OFFER),
    recv(response=100, optional=True),
    recv(response=401, auth=True),
    _digest("ACK", cseq=1, in_dialog=True, contact=False),
    _digest("INVITE", cseq=2, authentication=True, sdp=_DIGEST_OFFER),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True),
    _digest("ACK", cseq=2, in_dialog=True, contact=False),
    pause(300),
    _digest("BYE", cseq=3, in_dialog=True, contact=False),
    recv(response=200),
]
DIGEST_SCENARIO = scenario(
    "register, then call with digest", *_digest_register("phone", "[local_ip]:[local_port]"), *_DIGEST_CALL
)
DIGEST_INVITE_SCENARIO = scenario("call with digest", *_DIGEST_CALL)

# A call to no room and without credentials: 401.
_to_nobody = partial(request, user="anon", uri="sip:nobody@[remote_ip]:[remote_port]",
                     to="<sip:nobody@[remote_ip]:[remote_port]>", from_tag="[call_number]")  # fmt: skip
NO_TOKEN_SCENARIO = scenario(
    "refused",
    _to_nobody("INVITE", cseq=1, sdp=sdp_audio(PCMU, session_id=1, version=1)),
    recv(response=100, optional=True),
    recv(response=401),
    _to_nobody("ACK", cseq=1, in_dialog=True, contact=False),
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class HookServer:
    """atm0s 0.1 SIP hooks on 127.0.0.1: /invite accepts to_number "conf1" and user "alice" (into
    rooms of their own), rejects "busy", waits for peers on "wait1", answers {} otherwise; /auth knows
    alice (password "pass"); /register and /unregister accept alice."""

    def __init__(self) -> None:
        import hashlib
        import http.server
        import json
        import threading

        self.seen: list[tuple[str, dict[str, Any]]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.seen.append((self.path, body))
                answer: dict[str, Any] = {}
                if self.path == "/hooks/auth":
                    ha1 = hashlib.md5(f"alice:{body['realm']}:pass".encode()).hexdigest()
                    answer = {"success": body["username"] == "alice", "ha1": ha1}
                elif self.path in ("/hooks/register", "/hooks/unregister"):
                    answer = {"success": body["username"] == "alice"}
                elif body.get("username") == "alice":
                    answer = {"strategy": "Accept", "room_id": "sip-hooked-alice"}
                elif body.get("to_number") == "conf1":
                    answer = {"strategy": "Accept", "room_id": "sip-hooked-conf1"}
                elif body.get("to_number") == "busy":
                    answer = {"strategy": "Reject"}
                elif body.get("to_number") == "wait1":
                    answer = {"strategy": "WaitOtherPeers", "room_id": "sip-wait-room"}
                elif body.get("to_number") == "wait-cancel":
                    answer = {"strategy": "WaitOtherPeers", "room_id": "sip-cancel-room"}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hooks() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def sip_node(netns_guard: None, hooks: HookServer) -> Iterator[tuple[TrackmeshNode, int]]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    port = free_port()
    record_dir = tempfile.mkdtemp(prefix="trackmesh-rec-")
    node = TrackmeshNode("--sip-port", str(port), "--sip-rtp-ports", "42000-42099", "--sip-hook-url", hooks.url,
                         "--record-dir", record_dir)  # fmt: skip
    try:
        yield node, port
    finally:
        rc = node.stop()
        shutil.rmtree(record_dir, ignore_errors=True)
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def run_sipp(cwd: Path, sip_port: int, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    proc = subprocess.run(
        ["sipp", f"{HOST}:{sip_port}", "-i", HOST, "-p", str(free_port()), "-mp", str(free_port() & ~1),
         "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    errors = "".join(p.read_text(errors="replace") for p in cwd.glob("*errors.log"))
    return proc.returncode, (proc.stdout[-1500:] + proc.stderr[-500:] + errors[-2000:])


def sip_calls(node: TrackmeshNode) -> list[dict[str, Any]]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return list(body["data"]["calls"])


async def whep_listen(url: str, token: str, seconds: float) -> dict[str, Any]:
    """An aiortc WHEP viewer of the room: the peak RMS of its decoded audio over ``seconds``."""
    sys.path.insert(0, str(Path(__file__).parent / "clients"))
    import aiortc_client as ac

    ac.restrict_to_loopback()
    pc = ac.new_pc()
    result: dict[str, Any] = {"frames": 0, "peak_rms": 0.0}

    async def consume(track: Any) -> None:
        while True:
            frame = await track.recv()
            samples = array("h")
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
            if samples:
                rms = math.sqrt(sum(s * s for s in samples) / len(samples))
                result["peak_rms"] = max(result["peak_rms"], rms)
            result["frames"] += 1

    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    pc.addTransceiver("audio", direction="recvonly")
    summary: dict[str, Any] = {}
    location = await ac._negotiate(pc, url, token, summary)
    try:
        await ac._wait_connected(pc, 10)
        await asyncio.sleep(seconds)
    finally:
        for t in tasks:
            t.cancel()
        await pc.close()
        await ac._delete(location, token, summary)
    return result


def test_sipp_pcap_call_is_heard_in_the_room(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    node, sip_port = sip_node
    room = "sip-pcap-room"
    # A record:true token (docs/recording.md): the caller's track, Opus in the room, gets a file.
    status, answer = node.proc.json("POST", "/token/sip", {"room": room, "peer": "phone1", "ttl": 600, "record": True},
                                    token=node.secret)  # fmt: skip
    assert status == 200, answer
    sip_token = answer["data"]["token"]
    whep_token = node.token("whep", room)
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)

    async def main() -> tuple[dict[str, Any], tuple[int, str], list[dict[str, Any]]]:
        listen = asyncio.create_task(whep_listen(node.url("/whep/endpoint"), whep_token, 6.0))
        await asyncio.sleep(1.0)
        sipp = asyncio.create_task(asyncio.to_thread(run_sipp, tmp_path, sip_port, "-sn", "uac_pcap", "-s", sip_token))
        snapshots: list[dict[str, Any]] = []
        while not sipp.done():  # the call as the node reports it, while it lasts
            snapshots += await asyncio.to_thread(sip_calls, node)
            await asyncio.sleep(0.3)
        return await listen, await sipp, snapshots

    heard, (rc, out), during = asyncio.run(main())
    assert rc == 0, out  # sipp exits 0 only when its call succeeded (INVITE, 200, ACK, media, BYE, 200)
    assert {c["peer"] for c in during} == {"phone1"}, during
    call = during[-1]
    assert call["room"] == room and call["codec"] == "PCMA"
    assert call["rtp_in"] > 50 and call["uplink_packets"] > 50, call  # PCMA in, Opus into the room
    assert call["dtmf"], call  # the pcap's RFC 2833 events reached the room's "sip-dtmf" channel
    assert heard["frames"] > 50, heard
    assert heard["peak_rms"] > 300, heard  # the pcap's voice, not silence, after G.711 -> Opus -> WebRTC
    deadline = time.monotonic() + 5
    while sip_calls(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sip_calls(node) == []  # the BYE ended the call and its peer
    _status, stats = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert stats["data"]["sip"]["answered"] >= 1
    # The phone's audio was recorded (and finalised when it left): one Opus WebM that plays, named
    # after its peer.
    assert node.record_dir is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, listed = node.proc.json("GET", f"/api/record/list?room={room}", token=node.secret)
        files = listed["data"]["files"]
        if files and all(f["status"] == "complete" for f in files):
            break
        time.sleep(0.2)
    assert [(f["peer"], f["kind"], f["codec"], f["status"]) for f in files] == [
        ("phone1", "audio", "opus", "complete")
    ], files
    media = node.record_dir / files[0]["path"]
    (stream,) = probe(media)["streams"]
    assert stream["codec_name"] == "opus" and float(probe(media)["format"]["duration"]) > 2.0, probe(media)
    assert decode_errors(media) == ""


def test_hold_keeps_the_call_and_no_credentials_get_a_challenge(
    sip_node: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    node, sip_port = sip_node
    token = node.token("sip", "sip-hold-room")
    (tmp_path / "hold.xml").write_text(HOLD_SCENARIO)
    (tmp_path / "refused.xml").write_text(NO_TOKEN_SCENARIO)
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "hold.xml", "-s", token)
    assert rc == 0, out  # every check_it regexp matched: recvonly on hold, sendrecv on resume
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "hold.xml", "-s", token, "-t", "t1")
    assert rc == 0, out  # the same over TCP (one connection, Content-Length framing)
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "refused.xml")
    assert rc == 0, out
    (tmp_path / "prack.xml").write_text(PRACK_SCENARIO)
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "prack.xml", "-s", token)
    assert rc == 0, out  # reliable 180 (RSeq, Require: 100rel), PRACK answered, then the 200
    _, stats = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    sip = stats["data"]["sip"]
    assert sip["reoffers"] >= 2 and sip["ended_by_phone"] >= 1 and sip["refused"] >= 1, sip
    assert sip["pracks"] == 1 and sip["prack_timeouts"] == 0, sip


class RawPhone:
    """A minimal SIP phone written with plain sockets (none of our SIP code): INVITE with a PCMU
    (payload type 0) or G.722 (9) offer, ACK, record the RTP it is sent, BYE. It sends no RTP itself."""

    def __init__(self, sip_port: int, token: str, pt: int = 0) -> None:
        self.pt = pt
        self.server = (HOST, sip_port)
        self.token = token
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((HOST, 0))
        self.sip.settimeout(5)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((HOST, 0))
        self.rtp.settimeout(0.2)
        self.to = f"<sip:{token}@{HOST}:{sip_port}>"
        self.call_id = f"raw-{time.monotonic_ns()}"
        self.events: list[bytes] = []  # RFC 4733 payloads received

    def _send(self, method: str, cseq: int, to: str, body: str = "") -> None:
        port = self.sip.getsockname()[1]
        lines = [
            f"{method} sip:{self.token}@{HOST}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{time.monotonic_ns()};rport",
            "Max-Forwards: 70",
            f"From: <sip:rawphone@{HOST}:{port}>;tag=raw1",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:rawphone@{HOST}:{port}>",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sip.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.server)

    def _final(self) -> str:
        while True:
            data = self.sip.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                assert status == 200, data
                return data

    def call_and_record(self, seconds: float, midway: Callable[[], None] | None = None) -> list[bytes]:
        rtp_port = self.rtp.getsockname()[1]
        codec = "G722" if self.pt == 9 else "PCMU"
        sdp = (f"v=0\r\no=raw 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
               f"m=audio {rtp_port} RTP/AVP {self.pt} 101\r\na=rtpmap:{self.pt} {codec}/8000\r\n"
               "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")  # fmt: skip
        self._send("INVITE", 1, self.to, sdp)
        ok = self._final()
        to_line = next(line for line in ok.split("\r\n") if line.lower().startswith("to:"))
        self.to = to_line.split(":", 1)[1].strip()
        self._send("ACK", 1, self.to)
        payloads = []
        start = time.monotonic()
        end = start + seconds
        while time.monotonic() < end:
            if midway is not None and time.monotonic() > start + seconds / 2:
                midway()
                midway = None
            try:
                data, _ = self.rtp.recvfrom(2048)
            except TimeoutError:
                continue
            if data[1] & 0x7F == self.pt:
                payloads.append(data[12:])
            elif data[1] & 0x7F == 101:
                self.events.append(data[12:])
        self._send("BYE", 2, self.to)
        self._final()
        self.sip.close()
        self.rtp.close()
        return payloads


def test_pcmu_and_g722_phones_hear_a_webrtc_publisher_and_dtmf_from_the_api(
    sip_node: tuple[TrackmeshNode, int],
) -> None:
    from trackmesh.codecs.g711 import ulaw_decode

    node, sip_port = sip_node
    room = "sip-downlink-room"
    sip_token = node.token("sip", room, "listener")
    hd_token = node.token("sip", room, "hd-listener")
    whip_token = node.token("whip", room, "speaker")

    async def main() -> tuple[dict[str, Any], list[bytes], list[bytes], list[bytes]]:
        sys.path.insert(0, str(Path(__file__).parent / "clients"))
        import aiortc_client as ac

        ac.restrict_to_loopback()
        publisher = asyncio.create_task(ac.publish(node.url("/whip/endpoint"), whip_token, duration=5.0))
        await asyncio.sleep(1.5)
        phone = RawPhone(sip_port, sip_token)
        hd_phone = RawPhone(sip_port, hd_token, pt=9)  # a G.722 (HD voice) phone beside it
        hd = asyncio.create_task(asyncio.to_thread(hd_phone.call_and_record, 2.5))

        def send_digits() -> None:  # DTMF toward the phone through the HTTP API
            (call,) = [c for c in sip_calls(node) if c["peer"] == "listener"]
            path = f"/api/sip/calls/{call['session']}/dtmf"
            status, body = node.proc.json("POST", path, {"digits": "1#"}, token=node.secret)
            assert status == 200 and body["data"]["sent"] == 2, body

        heard = await asyncio.to_thread(phone.call_and_record, 2.5, send_digits)
        return await publisher, heard, phone.events, await hd

    summary, heard, events, hd_heard = asyncio.run(main())
    assert summary.get("error") is None, summary
    assert len(heard) > 50, len(heard)  # 20 ms packets of the mix
    loud = [p for p in heard if len(p) == 160]
    samples = array("h")
    for p in loud[-25:]:
        samples.frombytes(ulaw_decode(p))
    rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
    assert rms > 1000, rms  # aiortc's 440 Hz tone (amplitude 8000) through Opus -> mix -> PCMU
    from trackmesh.transports.sip.audio import G722

    decoder = G722()  # the HD phone's decoder (FFmpeg's, through PyAV)
    pcm = b"".join(decoder.decode(p) for p in hd_heard)
    samples = array("h")
    samples.frombytes(pcm[-2 * 16000 // 2 :])  # the last half second at 16 kHz
    hd_rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
    assert len(hd_heard) > 50 and hd_rms > 1000, (len(hd_heard), hd_rms)  # Opus -> mix -> G.722
    # The digits of POST /api/sip/calls/<session>/dtmf: RFC 4733 events 1 and 11 (#), each ended.
    assert sorted({e[0] for e in events}) == [1, 11], events
    assert {e[0] for e in events if e[1] & 0x80} == {1, 11}


def test_softphone_credentials_register_and_call_with_digest(
    sip_node: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    """sipp computes the digest itself (MD5) from the username/password POST /token/sip answered."""
    node, sip_port = sip_node
    status, body = node.proc.json("POST", "/token/sip", {"room": "sip-digest-room", "ttl": 600}, token=node.secret)
    assert status == 200, body
    creds = body["data"]
    assert creds["uri"] == f"sip:sip-digest-room@127.0.0.1:{sip_port}" and creds["realm"] == "trackmesh"
    (tmp_path / "digest.xml").write_text(DIGEST_SCENARIO)
    args = ("-sf", "digest.xml", "-s", "sip-digest-room", "-au", creds["username"], "-ap", creds["password"])
    rc, out = run_sipp(tmp_path, sip_port, *args)
    assert rc == 0, out
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "digest.xml", "-s", "sip-digest-room",
                       "-au", creds["username"], "-ap", "not-the-password")  # fmt: skip
    assert rc != 0  # the REGISTER got 403 where the scenario expects 200
    _, stats = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    sip = stats["data"]["sip"]
    assert sip["digest_ok"] >= 2 and sip["digest_refused"] >= 1 and sip["registrations"] >= 1, sip


BARESIP_CONFIG = """poll_method epoll
sip_listen 127.0.0.1:{sip_port}
net_interface 127.0.0.1
audio_player aubridge,nil
audio_source aufile,{wav}
audio_alert aubridge,nil
rtp_ports 46000-46100
module_path /usr/lib/baresip/modules
module g711.so
module opus.so
module aufile.so
module aubridge.so
module sndfile.so
snd_path {snd}
module_app account.so
module_app menu.so
"""


def tone_amplitude(samples: array[int], rate: int, freq: float, block: float = 0.1) -> float:
    """The median over 100 ms blocks of the Goertzel amplitude of ``freq`` (0 without a full block)."""
    size = int(block * rate)
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    powers = []
    for start in range(0, len(samples) - size + 1, size):
        s1 = s2 = 0.0
        for x in samples[start : start + size]:
            s1, s2 = x + coeff * s1 - s2, s1
        powers.append(math.sqrt(max(s1 * s1 + s2 * s2 - coeff * s1 * s2, 0.0)) * 2 / size)
    return sorted(powers)[len(powers) // 2] if powers else 0.0


def write_tone_wav(path: Path, freq: float, seconds: float, rate: int = 48000, channels: int = 2) -> None:
    """Amplitude 8000; baresip's aufile wants the codec's format (48 kHz stereo for Opus, 8 kHz
    mono for G.711)."""
    import wave

    n = int(rate * seconds)
    samples = array("h")
    for i in range(n):
        v = int(8000 * math.sin(2 * math.pi * freq * i / rate))
        samples.extend((v,) * channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


@pytest.mark.parametrize(
    ("codec", "rtpmap", "rate", "channels"), [("opus", "opus/48000/2", 48000, 2), ("PCMU", "PCMU/8000", 8000, 1)]
)
def test_baresip_softphone_with_digest_talks_and_hears(
    sip_node: tuple[TrackmeshNode, int], tmp_path: Path, codec: str, rtpmap: str, rate: int, channels: int
) -> None:
    """baresip 1.0 (Debian) with the digest account of POST /token/sip calls the room in Opus
    (passed through into the room) or PCMU (transcoded to Opus), and records what it hears: an
    aiortc WHIP publisher's tone."""
    import wave

    if shutil.which("baresip") is None:
        pytest.fail("baresip is missing: scripts/test.sh installs it (scripts/system-packages.txt)")
    node, sip_port = sip_node
    room = f"sip-baresip-{codec.lower()}"
    status, body = node.proc.json("POST", "/token/sip", {"room": room, "peer": "bare", "ttl": 600}, token=node.secret)
    assert status == 200, body
    creds = body["data"]
    cfg = tmp_path / "cfg"
    snd = tmp_path / "snd"
    cfg.mkdir()
    snd.mkdir()
    write_tone_wav(tmp_path / "tone.wav", 1000.0, 8.0, rate, channels)
    (cfg / "config").write_text(BARESIP_CONFIG.format(sip_port=free_port(), wav=tmp_path / "tone.wav", snd=snd))
    (cfg / "accounts").write_text(
        f"<sip:{creds['username']}@127.0.0.1:{sip_port}>;auth_pass={creds['password']};regint=0;audio_codecs={rtpmap}\n"
    )
    whip_token = node.token("whip", room, "speaker")

    async def main() -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
        sys.path.insert(0, str(Path(__file__).parent / "clients"))
        import aiortc_client as ac

        ac.restrict_to_loopback()
        publisher = asyncio.create_task(ac.publish(node.url("/whip/endpoint"), whip_token, duration=6.5))
        await asyncio.sleep(1.0)
        proc = await asyncio.create_subprocess_exec(
            "baresip", "-f", str(cfg), "-t", "5", "-e", f"/dial {creds['uri']}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        snapshots: list[dict[str, Any]] = []
        while proc.returncode is None:
            snapshots += await asyncio.to_thread(sip_calls, node)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.5)
        out = (await proc.stdout.read()).decode(errors="replace") if proc.stdout else ""
        return await publisher, out, snapshots

    summary, log, snapshots = asyncio.run(main())
    assert summary.get("error") is None, summary
    assert "Call established" in log, log[-3000:]
    calls = [c for c in snapshots if c["peer"] == "bare"]
    assert calls and calls[-1]["codec"] == codec, snapshots
    assert calls[-1]["uplink_packets"] > 100, calls[-1]  # baresip's voice into the room, as Opus
    assert calls[-1]["downlink_packets"] > 100, calls[-1]
    (dump,) = snd.glob("*-dec.wav")  # what baresip decoded from us
    with wave.open(str(dump)) as w:
        frames = w.readframes(w.getnframes())
        second = 2 * w.getnchannels() * w.getframerate()
        rate, channels = w.getframerate(), w.getnchannels()
    samples = array("h")
    samples.frombytes(frames[-second:])  # the last second
    rms = math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))
    assert rms > 1000, rms  # the publisher's 440 Hz tone: WebRTC Opus -> mix -> Opus or PCMU -> baresip
    mono = samples[::channels]
    tone, other = tone_amplitude(mono, rate, 440.0), tone_amplitude(mono, rate, 1000.0)
    assert tone > 500 and tone > 10 * other, (tone, other)  # the tone itself, not baresip's own 1000 Hz


# The received audio track's power spectrum in Chromium, through a WebAudio AnalyserNode: the
# strongest bin within 12 Hz of the tone against the median of its neighbours 150-450 Hz away on
# both sides, in dB, averaged over ``frames`` snapshots 100 ms apart.
TONE_SPECTRUM_JS = """async ([name, freq, frames]) => {
  const pc = window.__tm.pcs[name];
  const track = pc.getReceivers().map((r) => r.track).find((t) => t.kind === "audio");
  const ctx = new AudioContext();
  await ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  const hz = ctx.sampleRate / analyser.fftSize;
  const power = new Float64Array(analyser.frequencyBinCount);
  const db = new Float32Array(analyser.frequencyBinCount);
  for (let i = 0; i < frames; i++) {
    await new Promise((r) => setTimeout(r, 100));
    analyser.getFloatFrequencyData(db);
    for (let b = 0; b < db.length; b++) power[b] += Math.pow(10, db[b] / 10) / frames;
  }
  const dB = (p) => 10 * Math.log10(p + 1e-20);
  let tone = 0;
  const neighbours = [];
  for (let b = 0; b < power.length; b++) {
    const off = Math.abs(b * hz - freq);
    if (off <= 12) tone = Math.max(tone, power[b]);
    else if (off >= 150 && off <= 450) neighbours.push(power[b]);
  }
  neighbours.sort((a, b) => a - b);
  const floor = neighbours[Math.floor(neighbours.length / 2)];
  await ctx.close();
  return { tone_db: dB(tone), neighbours_db: dB(floor), hz, rate: ctx.sampleRate, state: track.readyState };
}"""


def test_chromium_whep_viewer_hears_the_phones_tone(
    sip_node: tuple[TrackmeshNode, int], page: Any, tmp_path: Path
) -> None:
    """baresip (PCMU, a 1000 Hz tone from aufile) calls the room; a Chromium WHEP viewer of the room
    hears it: G.711 -> Opus in the node -> WebRTC -> Chromium's decoder, measured at the tone's
    frequency with a WebAudio AnalyserNode."""
    from tests.e2e.clients import browser

    if shutil.which("baresip") is None:
        pytest.fail("baresip is missing: scripts/test.sh installs it (scripts/system-packages.txt)")
    node, sip_port = sip_node
    room = "sip-chromium-tone"
    status, body = node.proc.json("POST", "/token/sip", {"room": room, "peer": "tone", "ttl": 600}, token=node.secret)
    assert status == 200, body
    creds = body["data"]
    cfg, snd = tmp_path / "cfg", tmp_path / "snd"
    cfg.mkdir()
    snd.mkdir()
    write_tone_wav(tmp_path / "tone.wav", 1000.0, 8.0, 8000, 1)
    (cfg / "config").write_text(BARESIP_CONFIG.format(sip_port=free_port(), wav=tmp_path / "tone.wav", snd=snd))
    (cfg / "accounts").write_text(
        f"<sip:{creds['username']}@127.0.0.1:{sip_port}>;auth_pass={creds['password']};regint=0;audio_codecs=PCMU/8000\n"
    )
    out = browser.play_whep(page, node.url("/whep/endpoint"), node.token("whep", room), video=False)
    assert out["status"] == 201 and out["connectionState"] == "connected", out
    phone = subprocess.Popen(
        ["baresip", "-f", str(cfg), "-t", "6", "-e", f"/dial {creds['uri']}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        calls: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not [c for c in calls if c["uplink_packets"] > 25]:
            time.sleep(0.2)
            calls = [c for c in sip_calls(node) if c["peer"] == "tone"]
        assert calls and calls[-1]["codec"] == "PCMU", calls  # the tone flows into the room, as Opus
        heard = page.evaluate(TONE_SPECTRUM_JS, ["whep", 1000.0, 15])
        silent = page.evaluate(TONE_SPECTRUM_JS, ["whep", 2500.0, 3])  # where the tone is not
        log, _ = phone.communicate(timeout=10)
    finally:
        if phone.poll() is None:
            phone.kill()
            phone.wait()
    print("chromium hears the phone:", heard, "elsewhere:", silent)
    assert "Call established" in log, log[-3000:]
    assert heard["state"] == "live" and heard["hz"] < 6, heard
    assert heard["tone_db"] > -60, heard  # the tone is loud (aufile's 8000/32768 sine), not a whisper
    assert heard["tone_db"] - heard["neighbours_db"] > 25, heard  # a line at 1000 Hz, not noise
    assert silent["tone_db"] - silent["neighbours_db"] < 10, silent  # and no line where there is no tone
    deadline = time.monotonic() + 5
    while [c for c in sip_calls(node) if c["peer"] == "tone"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [c for c in sip_calls(node) if c["peer"] == "tone"]  # baresip's BYE ended the call


def test_the_room_dials_out_to_sipp_and_hangs_up(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    """POST /api/sip/calls calls sipp's built-in ``uas`` (which echoes our RTP back with -rtp_echo):
    the call joins the room, RTP flows both ways, DELETE sends the BYE sipp waits for."""
    node, _ = sip_node
    uas_port = free_port()
    sipp = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", HOST, "-p", str(uas_port), "-mp", str(free_port() & ~1), "-rtp_echo",
         "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        body = {"room": "sip-dialout-room", "to": f"sip:service@{HOST}:{uas_port}"}
        status, resp = node.proc.json("POST", "/api/sip/calls", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session"]
        assert resp["data"]["peer"] == "sip-service"
        call: dict[str, Any] = {}
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            found = [c for c in sip_calls(node) if c["session"] == session]
            if found and found[0]["rtp_in"] > 25 and found[0]["rtp_out"] > 25:
                call = found[0]
                break
            time.sleep(0.2)
        assert call, sip_calls(node)
        assert call["room"] == "sip-dialout-room" and call["codec"] == "PCMU", call  # sipp's uas answers PCMU
        status, _ = node.proc.json("DELETE", f"/api/sip/calls/{session}", token=node.secret)
        assert status == 200
        out, _ = sipp.communicate(timeout=15)
        assert sipp.returncode == 0, out[-2000:]  # its one call ended with our BYE
        assert [c for c in sip_calls(node) if c["session"] == session] == []
        status, _ = node.proc.json("DELETE", f"/api/sip/calls/{session}", token=node.secret)
        assert status == 404
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()


def test_the_console_mutes_and_kicks_a_call_and_sipp_gets_our_bye(
    sip_node: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    """The console (docs/console.md) lists a call with its track, mutes it (no longer forwarded to the
    room) and kicks it: the call ends with our BYE, in sipp's ``uas`` message trace (sipp itself would
    exit 0 only after its scenario's 4 s time-wait: not waited for)."""
    from tests.e2e.test_console import Console

    node, _ = sip_node
    uas_port = free_port()
    sipp = subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", HOST, "-p", str(uas_port), "-mp", str(free_port() & ~1), "-rtp_echo",
         "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err", "-trace_msg"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        body = {"room": "sip-console-room", "to": f"sip:service@{HOST}:{uas_port}"}
        status, resp = node.proc.json("POST", "/api/sip/calls", body, token=node.secret)
        assert status == 200, resp
        session = str(resp["data"]["session"])
        console = Console(node)

        def listed() -> dict[str, Any] | None:
            peers = [p for p in console.peers("sip-console-room") if p["session"] == session]
            return peers[0] if peers and peers[0]["connected"] and peers[0]["tracks"] else None

        deadline = time.monotonic() + 8
        while (call := listed()) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert call is not None, console.get("/api/console/rooms")
        assert (call["peer"], call["transport"]) == ("sip-service", "sip"), call
        [track] = [t for t in call["tracks"] if t["direction"] == "publish"]
        assert track["kind"] == "audio" and track["muted"] is False, track
        status, muted = console.post(f"/api/console/sessions/{session}/tracks/{track['name']}/mute")
        assert (status, muted["data"]) == (200, {"muted": True, "changed": True}), muted
        status, kicked = console.post(f"/api/console/sessions/{session}/kick")
        assert (status, kicked["data"]) == (200, {"kicked": 1}), kicked
        assert [c for c in sip_calls(node) if c["session"] == int(session)] == []

        def bye_received() -> bool:  # the uas never sends a BYE: one in its trace is ours
            return any("BYE sip:" in p.read_text(errors="replace") for p in tmp_path.glob("*messages.log"))

        deadline = time.monotonic() + 10
        while not bye_received() and time.monotonic() < deadline and sipp.poll() is None:
            time.sleep(0.1)
        assert bye_received(), "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))[-3000:]
        assert console.peers("sip-console-room") == []
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()


def test_a_far_end_that_requires_100rel_gets_our_prack(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    """A dial-out to sipp as a UAS requiring 100rel (RFC 3262): our INVITE says Supported: 100rel,
    the reliable 180 is PRACKed (RAck checked by sipp), the call is answered and DELETE's BYE ends it."""
    node, _ = sip_node
    (tmp_path / "uas_prack.xml").write_text(UAS_PRACK_SCENARIO)
    uas_port = free_port()
    sipp = subprocess.Popen(
        ["sipp", "-sf", "uas_prack.xml", "-i", HOST, "-p", str(uas_port), "-mp", str(free_port() & ~1),
         "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        body = {"room": "sip-prack-room", "to": f"sip:service@{HOST}:{uas_port}"}
        status, resp = node.proc.json("POST", "/api/sip/calls", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session"]
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not [c for c in sip_calls(node) if c["session"] == session]:
            time.sleep(0.1)
        assert [c for c in sip_calls(node) if c["session"] == session], sip_calls(node)
        status, _ = node.proc.json("DELETE", f"/api/sip/calls/{session}", token=node.secret)
        assert status == 200
        out, _ = sipp.communicate(timeout=15)
        assert sipp.returncode == 0, out[-3000:]  # PRACK with the right RAck, then our BYE
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()


# RFC 3262 on a dial-out: the far end (sipp as UAS) requires 100rel. Its 180 is reliable (RSeq 1);
# our PRACK must come with RAck "1 <INVITE CSeq> INVITE" before its 200 answers the INVITE.
_UAS_TAG = "[pid]SIPpTag01[call_number]"
_UAS_CONTACT = "Contact: <sip:[local_ip]:[local_port];transport=[transport]>"
UAS_PRACK_SCENARIO = scenario(
    "uas requiring 100rel",
    recv(request="INVITE", crlf=True, checks=[
        check("100rel", "sup", search_in="hdr", header="Supported:"),
        *(check(".*", f"inv_{var}", search_in="hdr", header=f"{name}:")
          for var, name in [("via", "Via"), ("from", "From"), ("to", "To"), ("cseq", "CSeq")]),
    ]),
    response("180 Ringing", to_tag=_UAS_TAG, headers=[_UAS_CONTACT, "Require: 100rel", "RSeq: 1"]),
    recv(request="PRACK", crlf=True, checks=[check("RAck: 1 [0-9]+ INVITE", "rack")]),
    response("200 OK"),
    # The INVITE's 200, after the PRACK's: its dialog headers are the INVITE's, kept above.
    response("200 OK", echoed=["Via:[$inv_via]", "From:[$inv_from]", f"To:[$inv_to];tag={_UAS_TAG}",
                               "[last_Call-ID:]", "CSeq:[$inv_cseq]"],
             headers=[_UAS_CONTACT], sdp=sdp_audio(PCMU), retrans=500),
    recv(request="ACK", crlf=True),
    recv(request="BYE"),
    response("200 OK"),
    references=["sup", "rack"],
)  # fmt: skip


LINPHONERC = """[sip]
sip_port={sip_port}
sip_tcp_port=-1
sip_tls_port=-1
use_ipv6=0
bind_address=127.0.0.1
use_info=0
use_rfc2833=1
[sound]
use_files=1
echocancellation=0
[rtp]
audio_rtp_port=46200-46300
"""


def test_linphone_holds_resumes_and_sends_dtmf(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    if shutil.which("linphonec") is None:
        pytest.fail("linphonec is missing: scripts/test.sh installs linphone-cli (scripts/system-packages.txt)")
    node, sip_port = sip_node
    token = node.token("sip", "sip-linphone-room", "lin")
    home = tmp_path / "home"
    (home / ".local/share/linphone").mkdir(parents=True)
    (tmp_path / "linphonerc").write_text(LINPHONERC.format(sip_port=free_port()))
    write_tone_wav(tmp_path / "tone.wav", 440.0, 10.0)  # linphone resamples what it plays
    proc = subprocess.Popen(
        ["linphonec", "-c", str(tmp_path / "linphonerc"), "-s", f"sip:{token}@{HOST}:{sip_port}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "HOME": str(home)},
    )  # fmt: skip
    assert proc.stdin is not None

    def say(command: str, wait: float) -> list[dict[str, Any]]:
        assert proc.stdin is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        time.sleep(wait)
        return [c for c in sip_calls(node) if c["peer"] == "lin"]

    try:
        time.sleep(1.5)
        talking = say(f"play {tmp_path / 'tone.wav'}", 1.0)
        held = say("pause", 1.2)
        resumed = say("resume", 1.0)
        digits = say("5", 1.0)
        say("terminate", 0.5)
        out, _ = proc.communicate("quit\n", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert talking and talking[0]["direction"] == "sendrecv" and talking[0]["codec"] == "opus", (talking, out[-2000:])
    assert held and held[0]["direction"] == "recvonly", held  # linphone's a=sendonly: still in the room
    assert resumed and resumed[0]["direction"] == "sendrecv", resumed
    assert resumed[0]["session"] == talking[0]["session"]  # one call all along
    assert digits and digits[0]["dtmf"] == "5", digits  # RFC 4733 from linphone, on the room's channel
    assert digits[0]["rtp_in"] > 100 and digits[0]["rtp_out"] > 50, digits
    deadline = time.monotonic() + 5
    while [c for c in sip_calls(node) if c["peer"] == "lin"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [c for c in sip_calls(node) if c["peer"] == "lin"] == []


def test_atm0s_hooks_name_the_room_or_refuse(
    sip_node: tuple[TrackmeshNode, int], hooks: HookServer, tmp_path: Path
) -> None:
    """Calls without our token or credentials go to --sip-hook-url: URL/invite accepts one (its
    room), rejects another (603); a digest user of URL/auth is checked against the HA1 it answers."""
    node, sip_port = sip_node
    uac = ("-sn", "uac", "-d", "300")
    rc, out = run_sipp(tmp_path, sip_port, *uac, "-s", "conf1")
    assert rc == 0, out
    rc, _ = run_sipp(tmp_path, sip_port, *uac, "-s", "busy")
    assert rc != 0  # 603 Decline where sipp's uac expects 180/200
    (tmp_path / "digest-invite.xml").write_text(DIGEST_INVITE_SCENARIO)
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "digest-invite.xml", "-au", "alice", "-ap", "pass")
    assert rc == 0, out
    rc, _ = run_sipp(tmp_path, sip_port, "-sf", "digest-invite.xml", "-au", "alice", "-ap", "wrong")
    assert rc != 0
    invites = [body for path, body in hooks.seen if path == "/hooks/invite"]
    conf1 = [b for b in invites if b["to_number"] == "conf1"]
    assert conf1 and {"username": None, "from_number": "sipp", "source": HOST}.items() <= conf1[0].items()
    assert any(b["to_number"] == "busy" for b in invites)
    assert [b["username"] for b in invites if b["username"] is not None] == ["alice"]  # after the digest only
    assert [b["username"] for p, b in hooks.seen if p == "/hooks/auth"] == ["alice", "alice"]
    _, stats = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert stats["data"]["sip"]["hook_failures"] == 0, stats


def test_wait_other_peers_rings_until_someone_joins(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    """URL/invite answers WaitOtherPeers: sipp's uac hears 180 Ringing, and the 200 only once a WHIP
    publisher is in the room too (the caller is in the room meanwhile, as atm0s does)."""
    node, sip_port = sip_node
    sys.path.insert(0, str(Path(__file__).parent / "clients"))
    import aiortc_client as ac

    ac.restrict_to_loopback()
    _, before = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    answered = before["data"]["sip"]["answered"]

    async def main() -> tuple[tuple[int, str], dict[str, Any], dict[str, Any]]:
        call = asyncio.ensure_future(asyncio.to_thread(run_sipp, tmp_path, sip_port, "-sn", "uac", "-d", "500",
                                                       "-s", "wait1"))  # fmt: skip
        await asyncio.sleep(2.0)
        _, ringing = node.proc.json("GET", "/api/sip/calls", token=node.secret)
        token = node.token("whip", "sip-wait-room", "speaker")
        publisher = asyncio.ensure_future(ac.publish(node.url("/whip/endpoint"), token, duration=2.0))
        result = await call
        return result, ringing, await publisher

    (rc, out), ringing, summary = asyncio.run(main())
    assert rc == 0, out
    assert summary.get("error") is None, summary
    # While it rang: the caller was in the room, not answered.
    assert ringing["data"]["sip"]["answered"] == answered, ringing
    assert any(c["room"] == "sip-wait-room" for c in ringing["data"]["calls"]), ringing
    _, after = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert after["data"]["sip"]["answered"] == answered + 1, after  # answered once the publisher came


def test_cancel_while_it_rings_ends_the_call_and_its_media(sip_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    """WaitOtherPeers keeps sipp ringing (the caller is in the room already, its RTP ports open);
    sipp's CANCEL gets 200, the INVITE 487, and the call and its peer are gone."""
    node, sip_port = sip_node
    _, before = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    (tmp_path / "cancel.xml").write_text(CANCEL_SCENARIO)
    result: list[tuple[int, str]] = []
    caller = threading.Thread(target=lambda: result.append(run_sipp(tmp_path, sip_port, "-sf", "cancel.xml",
                                                                    "-s", "wait-cancel")))  # fmt: skip
    caller.start()
    deadline = time.monotonic() + 5
    ringing: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not ringing:
        ringing = [c for c in sip_calls(node) if c["room"] == "sip-cancel-room"]
        time.sleep(0.05)
    caller.join(30)
    ((rc, out),) = result
    assert rc == 0, out  # 180, then 200 to the CANCEL and 487 to the INVITE
    assert ringing, "the ringing caller was never in the room"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [c for c in sip_calls(node) if c["room"] == "sip-cancel-room"]:
        time.sleep(0.1)
    assert [c for c in sip_calls(node) if c["room"] == "sip-cancel-room"] == []  # its media closed
    _, after = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert after["data"]["sip"]["cancelled"] == before["data"]["sip"]["cancelled"] + 1, after
    assert after["data"]["sip"]["answered"] == before["data"]["sip"]["answered"], after


def test_atm0s_register_hook_then_the_room_calls_the_softphone(
    sip_node: tuple[TrackmeshNode, int], hooks: HookServer, tmp_path: Path
) -> None:
    """A softphone REGISTERs as alice (URL/auth's HA1, then URL/register with a session id); atm0s'
    POST /sip/invite/client {dest_session_id} rings it (sipp's uas on the Contact's port), the call
    joins the room, POST /sip/call/<id>/dtmf and DELETE /sip/call/<id> end it; POST
    /sip/invite/server calls sipp's uas by address, over UDP and then over TCP. Each uas lingers 4 s
    after its BYE (sipp's time-wait), so the next one listens on its own port meanwhile."""
    node, sip_port = sip_node
    uas_port, trunk_port, tcp_port = free_port(), free_port(), free_port()
    (tmp_path / "register.xml").write_text(register_scenario("alice", f"{HOST}:{uas_port}"))
    phones: list[subprocess.Popen[str]] = []

    def uas(port: int, *extra: str) -> subprocess.Popen[str]:
        phones.append(subprocess.Popen(
            ["sipp", "-sn", "uas", "-i", HOST, "-p", str(port), "-mp", str(free_port() & ~1), "-rtp_echo",
             "-m", "1", "-timeout", "20s", "-nostdin", "-trace_err", *extra],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))  # fmt: skip
        return phones[-1]

    def answered(session: int) -> dict[str, Any]:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            found = [c for c in sip_calls(node) if c["session"] == session and c["rtp_in"] > 10]
            if found:
                return found[0]  # answered, and sipp's echo of our RTP came back
            time.sleep(0.2)
        raise AssertionError(sip_calls(node))

    def ended_by_our_bye(phone: subprocess.Popen[str]) -> None:
        out, _ = phone.communicate(timeout=15)
        assert phone.returncode == 0, out[-2000:]  # its one call ended with our BYE

    try:
        softphone = uas(uas_port)
        rc, out = run_sipp(tmp_path, sip_port, "-sf", "register.xml", "-au", "alice", "-ap", "pass")
        assert rc == 0, out
        (reg,) = [b for p, b in hooks.seen if p == "/hooks/register"]
        assert reg["username"] == "alice" and reg["session_id"], reg
        body: dict[str, Any] = {"room_id": "sip-atm0s-out", "dest_session_id": reg["session_id"], "from_number": "100"}
        status, resp = node.proc.json("POST", "/sip/invite/client", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session_id"]
        call = answered(session)
        assert call["room"] == "sip-atm0s-out" and call["peer"] == "sip-alice", call
        trunk = uas(trunk_port)  # a trunk by address, listening while the softphone hangs up
        status, resp = node.proc.json("DELETE", f"/sip/call/{session}", token=node.secret)
        assert status == 200, resp
        body = {"room_id": "sip-atm0s-out", "dest_session_id": "no-such", "from_number": "100"}
        status, resp = node.proc.json("POST", "/sip/invite/client", body, token=node.secret)
        assert status == 404, resp

        body = {"room_id": "sip-atm0s-out", "dest_addr": f"{HOST}:{trunk_port}", "from_number": "100",
                "to_number": "4930123"}  # fmt: skip
        status, resp = node.proc.json("POST", "/sip/invite/server", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session_id"]
        assert answered(session)["peer"] == "sip-4930123"
        status, resp = node.proc.json("POST", f"/sip/call/{session}/dtmf", {"digits": "1"}, token=node.secret)
        assert status == 200, resp
        tcp_trunk = uas(tcp_port, "-t", "t1")  # the trunk over TCP: we connect; INVITE, ACK, BYE on it
        status, resp = node.proc.json("DELETE", f"/sip/call/{session}", token=node.secret)
        assert status == 200, resp

        time.sleep(0.3)  # sipp listening on TCP (UDP would have been retransmitted to; a refused connect is not)
        _, before = node.proc.json("GET", "/api/sip/calls", token=node.secret)
        body = {**body, "dest_addr": f"{HOST}:{tcp_port}", "transport": "tcp"}
        status, resp = node.proc.json("POST", "/sip/invite/server", body, token=node.secret)
        assert status == 200, resp
        session = resp["data"]["session_id"]
        assert answered(session)["peer"] == "sip-4930123"  # answered over TCP, RTP echoed back
        status, resp = node.proc.json("DELETE", f"/sip/call/{session}", token=node.secret)
        assert status == 200, resp
        for phone in (softphone, trunk, tcp_trunk):
            ended_by_our_bye(phone)
        _, stats = node.proc.json("GET", "/api/sip/calls", token=node.secret)
        assert stats["data"]["sip"]["tcp_connect_failures"] == 0, stats
        assert stats["data"]["sip"]["tcp_rx"] >= before["data"]["sip"]["tcp_rx"] + 3, stats  # 100/180/200, BYE's 200
    finally:
        for phone in phones:
            if phone.poll() is None:
                phone.kill()
                phone.wait()
