"""rtp/streams on plain RTP, with no WebRTC in sight: what a SIP (RTP/AVP) session uses.

Receive: packets with a gap and a duplicate -> the NACK and the RR report block (RFC 3550
s6.4.1, RFC 4585 s6.2.1), LSR/DLSR from the sender's SR. Send: rewritten numbering, the header
template, a NACK answered as RTX (RFC 4588 s4) or as the same packet, the SR's counts.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.core.model import MediaCodec
from trackmesh.rtp.packet import RtpHeader, build_rtp_packet, find_extension
from trackmesh.rtp.rtcp import Nack, ReceiverReport, SenderReport, parse_rtcp
from trackmesh.rtp.streams.inbound import REPORT_INTERVAL, SEEN_WINDOW, InboundStream, InboundStreams
from trackmesh.rtp.streams.outbound import OutboundStream, ntp_timestamp

OURS = 0x5EED
THEIRS = 0xCAFE


def _receiver(nack: bool = True) -> tuple[InboundStreams[InboundStream], InboundStream, list[bytes]]:
    sent: list[bytes] = []
    table: InboundStreams[InboundStream] = InboundStreams(OURS, sent.append)
    stream = InboundStream(nack)
    table.bind(stream, THEIRS)
    return table, stream, sent


def _feed(table: InboundStreams[InboundStream], data: bytes, now: float) -> bool:
    h = RtpHeader.parse(data)
    stream = table.by_ssrc.get(h.ssrc)
    assert stream is not None
    return table.receive(stream, h.sequence_number, now)


def test_plain_rtp_receive_gives_nack_and_report_block() -> None:
    table, stream, sent = _receiver()
    now = 10.0
    # 65530..65535 then 0..9 across the wrap, with 2 and 3 lost and 5 arriving twice.
    seqs = [*range(65530, 65536), 0, 1, 4, 5, 5, 6, 7, 8, 9]
    accepted = []
    for seq in seqs:
        now += 0.02
        accepted.append(_feed(table, build_rtp_packet(0, seq, 160 * seq, THEIRS, bytes(160)), now))
    assert accepted.count(False) == 1 and not accepted[seqs.index(5) + 1]  # the second 5 is a duplicate
    assert table.by_ssrc[THEIRS] is stream and table.streams() == [stream]

    # The sender's SR: the next report block names it (LSR) and the time since (DLSR).
    ntp = 0xE1A2_B3C4_D5E6_F708
    table.on_sender_report(SenderReport(THEIRS, ntp, 0, 10, 1600, []), now)
    # Driven as a worker does: at each deadline, until the first RR (the first packet started
    # its timer) is out.
    report_at = 10.02 + REPORT_INTERVAL
    for _ in range(100):
        deadline = table.next_deadline()
        assert deadline is not None
        table.handle_timeout(deadline)
        if deadline >= report_at:
            break
    assert deadline is not None
    report_at = deadline

    packets = [p for data in sent for p in parse_rtcp(data)]
    nacks = [p for p in packets if isinstance(p, Nack)]
    assert nacks and {seq for n in nacks for seq in n.lost} == {2, 3}
    assert table.next_deadline() is not None  # the next RR (and NACK retries) stay scheduled
    assert all(n.sender_ssrc == OURS and n.media_ssrc == THEIRS for n in nacks)
    rrs = [p for p in packets if isinstance(p, ReceiverReport)]
    assert len(rrs) == 1 and rrs[0].ssrc == OURS
    (block,) = rrs[0].reports
    assert block.ssrc == THEIRS
    assert block.packets_lost == 2  # 16 expected, 14 distinct received
    assert block.fraction_lost == (2 << 8) // 16
    assert block.highest_seq == (1 << 16) | 9  # one wrap counted from the first packet
    assert block.lsr == (ntp >> 16) & 0xFFFFFFFF
    assert abs(block.dlsr / 65536 - (report_at - now)) < 1 / 65536 + 1e-9


def test_a_new_ssrc_restarts_the_stream() -> None:
    table, stream, _ = _receiver(nack=False)
    for seq in range(100, 110):
        assert _feed(table, build_rtp_packet(0, seq, 0, THEIRS), 1.0)
    table.bind(stream, 0xBEEF)  # the sender restarted (RFC 3550 s8.2)
    assert THEIRS not in table.by_ssrc and table.by_ssrc[0xBEEF] is stream
    assert stream.received == 0 and stream.nack is None
    assert _feed(table, build_rtp_packet(0, 7, 0, 0xBEEF), 1.1)
    table.unbind(stream)
    assert not table.by_ssrc


def _sender(rtx: bool, twcc_id: int = 0, abs_id: int = 0) -> OutboundStream:
    return OutboundStream(
        0x1000,
        0x2000 if rtx else None,
        {MediaCodec.VP8: 96},
        {96: 97},
        90000,
        ring_size=64,
        twcc_id=twcc_id,
        abs_id=abs_id,
    )


def test_plain_rtp_send_rewrites_keeps_and_reports() -> None:
    out = _sender(rtx=True)
    assert out.header_length == 12
    payloads = [bytes([i]) * 100 for i in range(5)]
    sent = []
    for i, payload in enumerate(payloads):
        now = 1.0 + 0.033 * i
        # Source A from seq 5000; a switch to source B keeps our numbering continuous.
        source, seq, ts = (1, 5000 + i, 1000 + 3000 * i) if i < 3 else (2, 40 + i, 777 + 3000 * i)
        written = out.send(now, source, seq, ts, 96, i == 4)
        assert written is not None
        header, oseq = written
        h = RtpHeader.parse(header + payload)
        assert (h.ssrc, h.payload_type, h.marker, h.sequence_number) == (0x1000, 96, i == 4, oseq)
        out.sent(oseq, header, payload, h.timestamp, now)
        sent.append((oseq, h.timestamp))
    seqs = [s for s, _ in sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(5)]
    assert all(b[1] > a[1] for a, b in itertools.pairwise(sent))

    # A NACK for the second packet: RTX with the OSN before the original payload.
    rtx = out.retransmission(seqs[1], 1.2)
    assert rtx is not None
    ssrc, rseq, hdr, body = rtx
    h = RtpHeader.parse(bytes(hdr) + bytes(body))
    assert (ssrc, h.ssrc, h.payload_type, rseq) == (0x2000, 0x2000, 97, 0)
    assert h.timestamp == sent[1][1] and bytes(body) == seqs[1].to_bytes(2, "big") + payloads[1]
    assert out.retransmission((seqs[0] - 10) & 0xFFFF, 1.2) is None  # never sent

    # The SR carries what was sent and is remembered for the receiver's LSR.
    now = 2.0
    sr_bytes = out.sender_report(now, ntp_timestamp(now, 1000.0))
    assert sr_bytes is not None
    (sr,) = parse_rtcp(sr_bytes)
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (0x1000, 5, 500)
    assert sr.rtp_timestamp == (sent[-1][1] + round((now - 1.132) * 90000)) & 0xFFFFFFFF
    assert sr.ntp_timestamp >> 32 == int(now + 1000.0 + 2208988800)


def test_without_rtx_a_nack_gets_the_same_packet() -> None:
    out = _sender(rtx=False)
    assert out.sender_report(0.0, 0) is None  # nothing sent yet
    written = out.send(0.5, 1, 300, 9000, 96, True)
    assert written is not None
    header, oseq = written
    out.sent(oseq, header, b"abc", 9000, 0.5)
    again = out.retransmission(oseq, 0.6)
    assert again is not None
    assert again[0] == 0x1000 and again[1] == oseq and bytes(again[2]) == header and again[3] == b"abc"


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF), st.sampled_from([(0, 0), (3, 0), (0, 5), (3, 5)]))
def test_header_template_writes_the_negotiated_extensions(tseq: int, abs_time: int, ids: tuple[int, int]) -> None:
    twcc_id, abs_id = ids
    out = _sender(rtx=False, twcc_id=twcc_id, abs_id=abs_id)
    header = out.header(96, False, 1, 2, tseq, abs_time)
    assert len(header) == out.header_length
    data = header + b"\x01"
    h = RtpHeader.parse(data)
    assert (h.sequence_number, h.timestamp, h.payload_length) == (1, 2, 1)
    for ext_id, value in ((twcc_id, tseq.to_bytes(2, "big")), (abs_id, abs_time.to_bytes(3, "big"))):
        loc = find_extension(data, h, ext_id) if ext_id else None
        assert (loc is not None) == bool(ext_id)
        if loc is not None:
            assert data[loc[0] : loc[0] + loc[1]] == value


@given(
    steps=st.lists(
        st.one_of(st.integers(-40, 40), st.integers(-1500, 1500), st.sampled_from([0, 1, 1, 1, 1024, -1024, 1023])),
        min_size=1,
        max_size=300,
    )
)
def test_duplicate_window_drops_exactly_what_was_seen_or_is_too_old(steps: list[int]) -> None:
    """The receive window (a bitmap of SEEN_WINDOW numbers) against a model that remembers every
    number: a packet goes on unless it was accepted before or is more than the window below the
    highest number seen (then nobody can tell)."""
    table, stream, _ = _receiver(nack=False)
    model_seen: set[int] = set()
    highest = -1
    seq = 1000
    for i, step in enumerate(steps):
        seq = (seq + step) & 0xFFFF
        ext = stream.unwrapper.peek(seq)
        highest = max(highest, ext)
        expected = ext not in model_seen and highest - ext <= SEEN_WINDOW - 1
        assert table.receive(stream, seq, float(i)) is expected, (i, seq, ext, highest)
        if expected:
            model_seen.add(ext)
    assert stream.received == len(model_seen)
