"""Loss, jitter and RTT of an outgoing stream from the viewer's report blocks (RFC 3550 s6.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.webrtc.receiver_stats import ReceptionReport
from trackmesh.transports.webrtc.rtcp import ReportBlock, SenderReport, build_rr
from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import Net
from .test_peer import net, publish, send_frames

__all__ = ["net"]  # the fixture, shared with test_peer


def _mid(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF


def test_rtt_is_arrival_minus_sr_send_time_minus_dlsr() -> None:
    r = ReceptionReport(90000)
    ntp = 0xE000_0000_8000_0000
    r.on_sr_sent(ntp, 10.0)
    r.on_sr_sent(ntp + (1 << 32), 11.0)  # a later SR, one second on
    # The viewer got the first SR, held it 0.25 s (DLSR in 1/65536 s) and reported at 10.3 s.
    r.on_block(ReportBlock(1, fraction_lost=64, packets_lost=7, jitter=900, lsr=_mid(ntp), dlsr=16384), 10.3)
    assert r.rtt is not None and abs(r.rtt - 0.05) < 1e-4
    assert abs(r.rtt_ms - 50.0) < 0.1
    assert r.fraction_lost == 0.25 and r.packets_lost == 7
    assert abs(r.jitter_ms - 10.0) < 1e-9  # 900 ticks of a 90 kHz clock
    assert r.blocks == 1 and r.updated_at == 10.3


def test_no_rtt_without_lsr_or_for_an_unknown_sr() -> None:
    r = ReceptionReport(48000)
    r.on_block(ReportBlock(1, jitter=480), 1.0)
    assert r.rtt is None and r.rtt_ms == 0.0 and abs(r.jitter_ms - 10.0) < 1e-9
    r.on_sr_sent(0x1234_5678_9ABC_DEF0, 2.0)
    r.on_block(ReportBlock(1, lsr=0xDEAD_BEEF, dlsr=10), 2.5)  # names no SR of ours
    assert r.rtt is None


@given(st.floats(0.0, 5.0), st.integers(0, 65536 * 3))
def test_rtt_is_never_negative(delay: float, dlsr: int) -> None:
    r = ReceptionReport(90000)
    r.on_sr_sent(1 << 40, 100.0)
    r.on_block(ReportBlock(1, lsr=_mid(1 << 40), dlsr=dlsr), 100.0 + delay)
    assert r.rtt is not None and r.rtt >= 0.0


def test_viewer_reports_reach_the_outgoing_stream_with_rtt(net: Net) -> None:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 1, 40)
    net.advance(1.0)
    assert isinstance(vpeer, WebRtcPeer)
    video_ssrc = viewer.local_ssrc("1")
    srs = [sr for sr in viewer.rtcp_of(SenderReport) if sr.ssrc == video_ssrc]
    assert srs  # we send SRs to viewers, so their LSR can be non-zero
    sr = srs[-1]
    # The network here delivers at once: the viewer held the SR for all the time since it was
    # sent, less 30 ms it "spent on the way", so the RTT comes out as those 30 ms.
    net.advance(0.2, keepalive=False)
    held = (_mid(vpeer.ctx.ntp(net.now)) - _mid(sr.ntp_timestamp)) & 0xFFFFFFFF
    dlsr = held - round(0.03 * 65536)
    lsr = _mid(sr.ntp_timestamp)
    block = ReportBlock(video_ssrc, fraction_lost=26, packets_lost=3, jitter=1800, lsr=lsr, dlsr=dlsr)
    viewer.send_rtcp(build_rr(0x7777, [block]))
    net.flush()
    rep = vpeer.outbound["1"].reception
    assert rep.blocks == 1
    assert rep.packets_lost == 3 and abs(rep.fraction_lost - 26 / 256) < 1e-9
    assert abs(rep.jitter_ms - 20.0) < 1e-9
    assert rep.rtt is not None and abs(rep.rtt - 0.03) < 1e-3
    assert vpeer.outbound["0"].reception.blocks == 0  # the audio stream got no report
    rtx = vpeer.outbound["1"].rtx_ssrc
    assert rtx is not None
    viewer.send_rtcp(build_rr(0x7777, [ReportBlock(rtx, fraction_lost=255, jitter=90000)]))
    net.flush()
    assert rep.blocks == 1 and abs(rep.jitter_ms - 20.0) < 1e-9  # the RTX stream's report is not the media's
