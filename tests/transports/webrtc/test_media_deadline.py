"""``WebRtcPeer.media_deadline``: after an SRTP media packet, only the inbound deadlines can come forward,
so the worker reschedules a connection with them alone (runtime/conn_table.py ``_after_media``). Checked
on a real WHIP peer (ICE, DTLS, SRTP in memory, virtual clock) with gaps, reordering and duplicates."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import VP8_DELTA, VP8_KEY, Net

A_SSRC, V_SSRC, RTX_SSRC = 0x1111, 0x2222, 0x3333


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(-3, 6), st.sampled_from([0.0, 0.004, 0.03, 0.2])), min_size=5, max_size=40))
def test_media_packets_move_no_other_deadline_forward(steps: list[tuple[int, float]]) -> None:
    net = Net()
    net.connect(PeerMode.WHEP)  # a viewer, so the publisher's media is forwarded too
    pub, peer = net.connect(PeerMode.WHIP, peer="alice", ssrcs=(A_SSRC, V_SSRC, RTX_SSRC))
    seq = 100
    for i, (step, wait) in enumerate(steps):
        seq = (seq + step) & 0xFFFF
        body = (VP8_KEY if i == 0 else VP8_DELTA) + bytes([seq & 0xFF]) * 30
        pub.send_rtp(96, seq, 3000 * seq, V_SSRC, body, mid="1", marker=True)
        pub.send_rtp(111, seq, 960 * seq, A_SSRC, b"opus" + bytes([seq & 0xFF]) * 10, mid="0")
        while pub.out:
            before = peer.next_deadline()
            net.server_input(pub.out.popleft(), pub.addr)
            after = peer.next_deadline()
            media = peer.media_deadline()
            # What the scheduler keeps after the packet (the queued deadline, or the media part if earlier)
            # is never later than the connection's real next deadline.
            kept = min((d for d in (before, media) if d is not None), default=None)
            assert after is None or (kept is not None and kept <= after)
            assert media is None or (after is not None and media >= after)
        net.flush()
        net.advance(wait)
