"""Microbenchmark of the sans-IO SIP stack (trackmesh.transports.sip).

Run with ``taskset -c 1 .venv/bin/python bench/sip_signalling.py``; prints microseconds of CPU:

- parse: one INVITE with an SDP offer as sipp/baresip send it (about 900 bytes);
- serialize: the same message back to bytes;
- call: the whole UAS side of one call through ``TransactionLayer`` in memory (INVITE in,
  100/180/200 out, ACK in, BYE in, 200 out), including every parse and serialize, without sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from trackmesh.transports.sip.message import Request, make_response
from trackmesh.transports.sip.parser import parse_message, serialize
from trackmesh.transports.sip.transaction import RequestReceived, TransactionLayer

REPEATS = 7  # best of: the box is shared, the minimum is the least disturbed run
N = 2000
SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 96 0 8 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def invite(i: int) -> bytes:
    return (
        f"INVITE sip:room@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{i}-1-0;rport\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5070>;tag={i}SIPpTag001\r\n"
        f"To: room <sip:room@127.0.0.1:5060>\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: sip:sipp@127.0.0.1:5070\r\n"
        f"Max-Forwards: 70\r\n"
        f"Subject: Performance Test\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


def in_dialog(i: int, method: str, cseq: int, to_tag: str) -> bytes:
    return (
        f"{method} sip:room@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{i}-{cseq}-{method}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5070>;tag={i}SIPpTag001\r\n"
        f"To: room <sip:room@127.0.0.1:5060>;tag={to_tag}\r\n"
        f"Call-ID: {i}-1234@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def best(fn: Callable[[int], object], n: int) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.process_time()
        fn(n)
        times.append((time.process_time() - t0) / n * 1e6)
    return min(times)


def bench_parse(n: int) -> None:
    data = invite(1)
    for _ in range(n):
        parse_message(data)


MSG = parse_message(invite(1))


def bench_serialize(n: int) -> None:
    for _ in range(n):
        serialize(MSG)


def bench_calls(n: int) -> None:
    layer = TransactionLayer()
    src = ("127.0.0.1", 5070)
    now = 0.0
    for i in range(n):
        layer.handle_datagram(now, invite(i), src)
        while (ev := layer.poll_event()) is not None:
            if isinstance(ev, RequestReceived) and ev.key is not None:
                req = ev.request
                assert isinstance(req, Request)
                layer.send_response(now, make_response(req, 180, to_tag="t"))
                layer.send_response(now, make_response(req, 200, to_tag="t", body=SDP.encode()))
        layer.handle_datagram(now, in_dialog(i, "ACK", 1, "t"), src)
        layer.handle_datagram(now, in_dialog(i, "BYE", 2, "t"), src)
        while (ev := layer.poll_event()) is not None:
            if isinstance(ev, RequestReceived) and ev.key is not None and ev.request.method == "BYE":
                layer.send_response(now, make_response(ev.request, 200))
        while layer.poll_transmit() is not None:
            pass
        now += 0.001
    layer.handle_timeout(now + 100)


if __name__ == "__main__":
    print(f"parse INVITE+SDP ({len(invite(1))} B): {best(bench_parse, N):.1f} us")
    print(f"serialize:                    {best(bench_serialize, N):.1f} us")
    print(f"UAS call through the layer:   {best(bench_calls, N // 4):.1f} us per call")
