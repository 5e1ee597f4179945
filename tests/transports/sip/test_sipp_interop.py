"""Interop with a real SIP client: sipp sends OPTIONS and runs its built-in ``uac`` call
(INVITE, 100/180/200, ACK, pause, BYE) against a tiny UAS on 127.0.0.1 whose every message
goes through :class:`TransactionLayer`, over UDP and over TCP (:class:`StreamFramer`).
Loopback only (scripts/test.sh runs pytest in a private network namespace); sipp always gets
``-timeout``.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import time
from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from trackmesh.errors import RemoteProtocolError
from trackmesh.net import Address
from trackmesh.sdp.model import SessionDescription, render
from trackmesh.sdp.model import parse as parse_sdp
from trackmesh.transports.sip.dialog import Dialog
from trackmesh.transports.sip.message import Headers, Request, make_response, new_branch, new_tag
from trackmesh.transports.sip.offer_answer import Negotiated, create_offer, negotiated_from_answer
from trackmesh.transports.sip.parser import StreamFramer
from trackmesh.transports.sip.transaction import (
    ParseFailed,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTimeout,
)

HOST = "127.0.0.1"

OPTIONS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options ping">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

SDP_ANSWER = (
    "v=0\r\no=trackmesh 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


class TinyUas(asyncio.DatagramProtocol):
    """A UDP driver around the sans-IO transaction layer that accepts every call."""

    def __init__(self) -> None:
        self.layer = TransactionLayer()
        self.transport: asyncio.DatagramTransport | None = None
        self.seen: Counter[str] = Counter()
        self.timer: asyncio.TimerHandle | None = None
        self.connections: dict[Address, asyncio.Transport] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's selector datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        self.layer.handle_datagram(now, data, (addr[0], addr[1]))
        self.drain(now)

    def on_timer(self) -> None:
        now = time.monotonic()
        self.layer.handle_timeout(now)
        self.drain(now)

    def drain(self, now: float) -> None:
        while (ev := self.layer.poll_event()) is not None:
            if isinstance(ev, RequestReceived):
                self.seen[ev.request.method] += 1
                if ev.key is not None:
                    self.answer(now, ev.request)
            elif isinstance(ev, ParseFailed):
                self.seen["parse-failed"] += 1
        assert self.transport is not None
        while (tx := self.layer.poll_transmit()) is not None:
            if tx.reliable:
                conn = self.connections.get(tx.destination)
                if conn is not None:
                    conn.write(tx.data)
            else:
                self.transport.sendto(tx.data, tx.destination)
        if self.timer is not None:
            self.timer.cancel()
        deadline = self.layer.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_at(loop.time() + max(0.0, deadline - now), self.on_timer)

    def answer(self, now: float, req: Request) -> None:
        tag = new_tag()
        if req.method == "INVITE":
            self.layer.send_response(now, make_response(req, 180, to_tag=tag))
            ok = make_response(req, 200, to_tag=tag, body=SDP_ANSWER.encode())
            ok.headers.add("Contact", f"<sip:room@{HOST}:{self.port}>")
            ok.headers.add("Content-Type", "application/sdp")
            self.layer.send_response(now, ok)
        elif req.method in ("OPTIONS", "BYE"):
            resp = make_response(req, 200, to_tag=tag)
            resp.headers.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")
            self.layer.send_response(now, resp)
        else:
            self.layer.send_response(now, make_response(req, 501, to_tag=tag))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


class TcpConnection(asyncio.Protocol):
    """One TCP connection into the same UAS: bytes -> StreamFramer -> transaction layer."""

    def __init__(self, uas: TinyUas) -> None:
        self.uas = uas
        self.framer = StreamFramer()
        self.peer: Address = ("", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (host, port)
        self.uas.connections[self.peer] = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.uas.connections.pop(self.peer, None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        try:
            self.framer.feed(data)
            while (msg := self.framer.next_message()) is not None:
                self.uas.seen["over tcp"] += 1
                if isinstance(msg, Request):
                    self.uas.layer.handle_request(now, msg, self.peer, reliable=True)
                else:
                    self.uas.layer.handle_response(now, msg, self.peer)
        except RemoteProtocolError:
            self.uas.seen["parse-failed"] += 1  # a stream cannot resynchronise: close it
            self.uas.connections[self.peer].close()
        self.uas.drain(now)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def run_sipp(*args: str, cwd: Path, port: int | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sipp",
        *args,
        "-i",
        HOST,
        "-p",
        str(port or free_udp_port()),
        "-timeout",
        "10s",
        "-nostdin",
        "-trace_err",
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    errors = "".join(p.read_text(errors="replace") for p in cwd.glob("*errors.log"))
    return proc.returncode or 0, out.decode(errors="replace")[-2000:] + errors[-2000:]


def test_sipp_options_and_uac_calls(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    (tmp_path / "options.xml").write_text(OPTIONS_SCENARIO)
    uac = ("-sn", "uac", "-s", "room", "-m", "3", "-r", "10", "-d", "200", "-l", "3")

    async def main() -> tuple[TinyUas, list[tuple[str, int, str]]]:
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, uas = await loop.create_datagram_endpoint(TinyUas, local_addr=(HOST, 0))
            try:  # the same port over TCP, as SIP does: another socket may hold that TCP port
                tcp = await loop.create_server(functools.partial(TcpConnection, uas), HOST, uas.port)
                break
            except OSError:
                udp.close()
        else:
            pytest.fail("no port free for both UDP and TCP in 20 tries")
        results = []
        try:
            target = f"{HOST}:{uas.port}"
            for name, args in [
                ("udp options", ("-sf", "options.xml", target, "-s", "room", "-m", "3")),
                ("udp uac", (*uac, target)),
                ("tcp uac", (*uac, target, "-t", "t1")),
            ]:
                rc, out = await run_sipp(*args, cwd=tmp_path)
                results.append((name, rc, out))
            return uas, results
        finally:
            udp.close()
            tcp.close()

    uas, results = asyncio.run(main())
    for name, rc, out in results:
        assert rc == 0, f"{name}: {out}"  # sipp exits 0 only when every call succeeded
    assert uas.seen["OPTIONS"] == 3
    assert uas.seen["INVITE"] == 6 and uas.seen["ACK"] == 6 and uas.seen["BYE"] == 6
    assert uas.seen["over tcp"] == 9  # the TCP run's INVITE, ACK and BYE x 3 were framed from the stream
    assert uas.seen["parse-failed"] == 0
    assert uas.layer.parse_errors == 0


class TinyUac(asyncio.DatagramProtocol):
    """Calls sipp's built-in ``uas`` through the client transactions and a Dialog: INVITE with
    our SDP offer, ACK to the 2xx (outside any transaction), BYE inside the dialog."""

    def __init__(self, target: Address) -> None:
        self.layer = TransactionLayer()
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.statuses: list[tuple[str, int]] = []
        self.dialog: Dialog | None = None
        self.invite: Request | None = None
        self.offer = SessionDescription()
        self.answer: Negotiated | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def via(self) -> str:
        return f"SIP/2.0/UDP {HOST}:{self.port};branch={new_branch()};rport"

    def call(self) -> None:
        now = time.monotonic()
        offer = create_offer(address=HOST, port=40100, session_id="42", version=1)
        h = Headers()
        h.add("Via", self.via())
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:room@{HOST}:{self.port}>;tag={new_tag()}")
        h.add("To", f"<sip:service@{self.target[0]}:{self.target[1]}>")
        h.add("Call-ID", f"{new_tag()}@{HOST}")
        h.add("CSeq", "1 INVITE")
        h.add("Contact", f"<sip:room@{HOST}:{self.port}>")
        h.add("Content-Type", "application/sdp")
        self.offer = offer
        self.invite = Request("INVITE", f"sip:service@{self.target[0]}:{self.target[1]}", h, render(offer).encode())
        self.layer.send_request(now, self.invite, self.target)
        self.drain(now)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        now = time.monotonic()
        self.layer.handle_datagram(now, data, (addr[0], addr[1]))
        self.drain(now)

    def on_timer(self) -> None:
        now = time.monotonic()
        self.layer.handle_timeout(now)
        self.drain(now)

    def hang_up(self) -> None:
        assert self.dialog is not None
        now = time.monotonic()
        self.layer.send_request(now, self.dialog.create_request("BYE", self.via()), self.target)
        self.drain(now)

    def drain(self, now: float) -> None:
        loop = asyncio.get_running_loop()
        while (ev := self.layer.poll_event()) is not None:
            if isinstance(ev, ResponseReceived):
                resp = ev.response
                method = resp.cseq().method
                self.statuses.append((method, resp.status))
                if method == "INVITE" and resp.status == 200 and self.invite is not None:
                    if self.dialog is None:
                        self.dialog = Dialog.as_uac(self.invite, resp)
                        self.answer = negotiated_from_answer(self.offer, parse_sdp(resp.body))
                        loop.call_later(0.2, self.hang_up)
                    # s13.2.2.4: every 2xx (also retransmissions) gets the ACK, without a transaction.
                    ack = self.dialog.create_request("ACK", self.via(), cseq=1)
                    self.layer.send_stateless(ack, self.target)
                elif method == "BYE" and resp.status >= 200 and not self.done.done():
                    self.done.set_result(None)
            elif isinstance(ev, TransactionTimeout) and not self.done.done():
                self.done.set_exception(AssertionError(f"transaction timed out: {ev}"))
        assert self.transport is not None
        while (tx := self.layer.poll_transmit()) is not None:
            self.transport.sendto(tx.data, tx.destination)
        if self.timer is not None:
            self.timer.cancel()
        deadline = self.layer.next_deadline()
        if deadline is not None:
            self.timer = loop.call_at(loop.time() + max(0.0, deadline - now), self.on_timer)


def test_our_uac_calls_sipp_uas(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    sipp_port = free_udp_port()

    async def main() -> tuple[TinyUac, int, str]:
        sipp = asyncio.create_task(
            run_sipp("-sn", "uas", "-m", "1", cwd=tmp_path, port=sipp_port)  # answers one call, then exits
        )
        await asyncio.sleep(0.3)  # if sipp is not listening yet, Timer A retransmits the INVITE
        loop = asyncio.get_running_loop()
        transport, uac = await loop.create_datagram_endpoint(lambda: TinyUac((HOST, sipp_port)), local_addr=(HOST, 0))
        try:
            uac.call()
            await asyncio.wait_for(uac.done, 10)
            rc, out = await sipp
            return uac, rc, out
        finally:
            transport.close()

    uac, rc, out = asyncio.run(main())
    assert rc == 0, out
    assert ("INVITE", 180) in uac.statuses and ("INVITE", 200) in uac.statuses
    assert ("BYE", 200) in uac.statuses
    assert uac.answer is not None and uac.answer.codec == "PCMU"  # sipp's uas answers PCMU
    assert uac.layer.parse_errors == 0
