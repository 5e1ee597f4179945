"""Loss, jitter and RTT of an outgoing stream from the viewer's report blocks (RFC 3550 s6.4)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.rtp.reports import ReceptionReport
from trackmesh.rtp.rtcp import ReportBlock


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
