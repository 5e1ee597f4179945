"""A viewer joining after the key frame a publisher was asked for went by starts on a replay of it
(core/tracks.py's key-frame cache) instead of waiting out the key-frame request interval; viewers
already playing skip the copies. In memory, on a virtual clock (peer_client.py)."""

from __future__ import annotations

import pytest

from trackmesh.core.tracks import KEYFRAME_MIN_INTERVAL
from trackmesh.rtp.rtcp import Pli
from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import VP8_DELTA, VP8_KEY, Client, Net

A_SSRC, V_SSRC, RTX_SSRC = 0x1111, 0x2222, 0x3333


@pytest.fixture
def net() -> Net:
    return Net()


def video_plis(client: Client) -> int:
    return sum(p.media_ssrc == V_SSRC for p in client.rtcp_of(Pli))


def send_video(net: Net, client: Client, seqs: range, key: int | None = None) -> None:
    """One VP8 packet per frame at 30 fps; ``key``: the sequence number that is a key frame."""
    for seq in seqs:
        body = (VP8_KEY if seq == key else VP8_DELTA) + bytes([seq & 0xFF]) * 40
        client.send_rtp(96, seq, 3000 * seq, V_SSRC, body, mid="1", marker=True)
        net.flush()
        net.advance(1 / 30)


def test_a_late_viewer_starts_at_once_on_the_cached_key_frame(net: Net) -> None:
    first, fpeer = net.connect(PeerMode.WHEP)
    pub, _ = net.connect(PeerMode.WHIP, peer="alice", ssrcs=(A_SSRC, V_SSRC, RTX_SSRC))
    assert video_plis(pub) == 1  # the first viewer's request
    asked = net.now
    send_video(net, pub, range(1, 7), key=1)  # the encoder's key frame, then five frames: 0.2 s
    late, lpeer = net.connect(PeerMode.WHEP)
    assert net.now - asked < KEYFRAME_MIN_INTERVAL  # the publisher may not be asked again yet
    net.advance(0)
    late_ssrc = late.local_ssrc("1")
    assert [p[-1] for _, p in late.media(late_ssrc)] == [1, 2, 3, 4, 5, 6]  # from the key frame, at once
    send_video(net, pub, range(7, 9))
    got = late.media(late_ssrc)
    assert [p[-1] for _, p in got] == [1, 2, 3, 4, 5, 6, 7, 8]
    first_seq = got[0][0].sequence_number
    assert [h.sequence_number for h, _ in got] == [(first_seq + i) & 0xFFFF for i in range(8)]
    # The viewer already playing got every packet once.
    assert [p[-1] for _, p in first.media(first.local_ssrc("1"))] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert fpeer.outbound["1"].counters["replay_skipped"] == 6
    assert lpeer.outbound["1"].counters["waiting_keyframe"] == 0
    # The publisher is still asked once more when the interval ends (the late request came after the
    # last key frame), and no more than that.
    net.advance(1.0)
    assert video_plis(pub) == 2
