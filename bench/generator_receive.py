"""The load generator's receive path alone: CPU per received packet, verifying against header-only subscribers.

    python bench/generator_receive.py --subs 200 --seconds 8

No server, no ICE/DTLS: a sender process (pinned to the first CPU) replays the recording as SRTP (GCM, one
fixed key) to ``--subs`` generator transports on 127.0.0.1 at the recording's pace, the way an SFU fans
out one publisher (S1); the measured process (pinned to the last CPU) receives them as the load generator
does, once with every subscriber verifying (media.Sink: decrypt, hash, look up, latency) and once with
every subscriber counting headers (headers.HeaderSink through client.HeaderReceiver). Reported: the
receiving process's CPU (``process_time``) per packet received, which does not depend on what else
runs on the box as much as wall-clock figures do. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import time
from datetime import UTC, datetime

from trackmesh.loadtest.client import HeaderReceiver, Transport, check_loopback
from trackmesh.loadtest.headers import HeaderSink
from trackmesh.loadtest.media import AUDIO_PT, VIDEO_PT, SendLog, Sink
from trackmesh.loadtest.recording import AUDIO, VIDEO, load
from trackmesh.rtp.packet import build_rtp_packet
from trackmesh.rtp.srtp import SrtpProfile, SrtpSession
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate

PROFILE = SrtpProfile.AEAD_AES_128_GCM
KEY = bytes(range(28))  # GCM master key (16) + salt (12), the same both ways


def _send(addrs: list[tuple[str, int]], seconds: float, cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})
    for host, _ in addrs:
        check_loopback(host)
    rec = load()
    sessions = [SrtpSession(PROFILE, KEY, KEY) for _ in addrs]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    seq = [0, 0]
    t0 = time.monotonic() + 0.2
    for p in rec.packets:
        if p.offset >= seconds:
            break
        pt = VIDEO_PT if p.kind == VIDEO else AUDIO_PT
        plain = build_rtp_packet(pt, seq[p.kind], p.ts_offset, 0x1000 + p.kind, p.payload, marker=p.marker)
        seq[p.kind] += 1
        delay = t0 + p.offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for sess, addr in zip(sessions, addrs, strict=True):
            with contextlib.suppress(OSError):
                sock.sendto(sess.protect_rtp(plain), addr)


async def _receive(subs: int, seconds: float, headers: bool) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    cert = DtlsCertificate.generate(datetime.now(UTC).replace(microsecond=0))
    rec = load()
    log = SendLog()
    now = time.time()
    for p in rec.packets:
        log.record(p.key, p.kind, now)
    pt_kind = {AUDIO_PT: AUDIO, VIDEO_PT: VIDEO}
    receiver = HeaderReceiver(loop)
    transports = []
    sinks: list[Sink | HeaderSink] = []
    for _ in range(subs):
        tr = Transport(loop, "127.0.0.1", PROFILE, cert, rcvbuf=1 << 20)
        tr.srtp = SrtpSession(PROFILE, KEY, KEY)
        sink: Sink | HeaderSink
        if headers:
            sink = HeaderSink(pt_kind, (AUDIO, VIDEO))
            tr.count_headers_only(receiver, sink)
            tr.switch_to_headers()
        else:
            sink = Sink(log, pt_kind)
            tr.on_rtp = sink.on_rtp
        transports.append(tr)
        sinks.append(sink)
    sender = multiprocessing.get_context("spawn").Process(
        target=_send, args=([tr.local_addr for tr in transports], seconds, min(os.sched_getaffinity(0)))
    )
    sender.start()
    await asyncio.sleep(1.2)  # the first second: sockets warm, caches filled
    n0, c0 = sum(s.received for s in sinks), time.process_time()
    await asyncio.sleep(seconds - 1.5)
    n1, c1 = sum(s.received for s in sinks), time.process_time()
    await loop.run_in_executor(None, sender.join)
    for tr in transports:
        tr.close()
    receiver.close()
    return c1 - c0, n1 - n0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--subs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", choices=["both", "verify", "headers"], default="both")
    args = ap.parse_args()
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    results: dict[str, list[float]] = {"verify": [], "headers": []}
    for _ in range(args.repeats):
        for mode in ("verify", "headers") if args.mode == "both" else (args.mode,):  # alternated
            cpu, n = asyncio.run(_receive(args.subs, args.seconds, mode == "headers"))
            us = cpu / n * 1e6 if n else float("nan")
            results[mode].append(us)
            print(f"{mode:8s} {args.subs} subs: {n} packets received, {cpu:.2f} s CPU, {us:.2f} us per packet, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    for mode, v in results.items():
        if not v:
            continue
        print(f"{mode}: median {sorted(v)[len(v) // 2]:.2f} us per received packet (runs: "
              f"{', '.join(f'{x:.2f}' for x in v)})")


if __name__ == "__main__":
    main()
