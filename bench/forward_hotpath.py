"""CPU cost of forwarding one published packet to N WebRTC viewers, in memory.

One WHIP publisher and N WHEP viewers connect through one MediaWorker (real ICE, DTLS and
SRTP with AEAD_AES_128_GCM, see tests/transports/webrtc/peer_client.py); then the publisher's
packets, SRTP-protected in advance, are fed to ``WebRtcPeer.handle_datagram`` and the outbox
is cleared after each. The timed part is exactly the server's work: receive + unprotect once,
then per viewer rewrite + protect + outbox append. Time is CPU time (``time.process_time``).

Run with ``taskset -c 1 python bench/forward_hotpath.py [viewers] [packets]``. On the
development box (CPython 3.11, 2 shared cores, busy) 20000 packets of 1042 bytes with 10
viewers measured 4.2-5.4 us per forwarded copy (7-8 us before the forwarding-path work that
moved GCM protect to a per-SSRC AESGCM sender and dropped the per-viewer payload copy) and
14.5-15.5 us per packet with one viewer, most of it the receive side (unprotect, parse,
TWCC/NACK bookkeeping, key-frame check, MediaPacket). docs/benchmarks.md has the runs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.transports.webrtc.peer_client import VP8_DELTA, VP8_KEY, Net

from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.demux import PacketKind
from trackmesh.transports.whip_whep.session import PeerMode

V_SSRC = 0x2222


def main() -> None:
    viewers = max(1, int(sys.argv[1])) if len(sys.argv) > 1 else 10
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 30_000
    net = Net()
    clients = [net.connect(PeerMode.WHEP) for _ in range(viewers)]
    pub, ppeer = net.connect(PeerMode.WHIP, peer="pub", ssrcs=(0x1111, V_SSRC, 0x3333))
    assert ppeer.srtp is not None and ppeer.srtp.profile is SrtpProfile.AEAD_AES_128_GCM
    # Start the viewers on a key frame, then prepare the timed packets.
    pub.send_rtp(96, 0, 0, V_SSRC, VP8_KEY + bytes(1000), mid="1", marker=True)
    net.flush()
    assert all(len(c.rtp) == 1 for c, _ in clients), "viewers did not get the key frame"
    packets = []
    for i in range(1, count + 1):
        pub.send_rtp(96, i & 0xFFFF, 3000 * (i // 3), V_SSRC, VP8_DELTA + bytes(1000), mid="1", marker=i % 3 == 0)
        packets.append(pub.out.popleft())
    size = len(packets[0])
    outbox = net.outbox
    addr = pub.addr
    handle = ppeer.handle_datagram
    RTP = PacketKind.RTP
    now = net.now
    start = time.process_time()
    for data in packets:
        now += 0.001
        handle(now, data, addr, RTP)  # as the port's demultiplexer classified it
        outbox.clear()
    cpu = time.process_time() - start
    sent = sum(p.outbound["1"].packets for _, p in clients) - viewers
    assert sent == count * viewers, (sent, count * viewers)
    per_in = cpu / count * 1e6
    print(f"{count} packets of {size} bytes in, {viewers} viewers, SRTP {ppeer.srtp.profile.value}")
    print(f"CPU per incoming packet (unprotect once + {viewers} x rewrite/protect/queue): {per_in:7.2f} us")
    print(f"CPU per forwarded packet (amortised over the {viewers} copies):            {per_in / viewers:7.2f} us")


if __name__ == "__main__":
    main()
