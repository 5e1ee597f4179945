"""RTCP compound packets: parse into typed slotted records and build them (RFC 3550 s6).

Covered: SR/RR (s6.4), SDES CNAME (s6.5), BYE (s6.6), generic NACK and PLI (RFC 4585 s6.2.1,
s6.3.1), FIR (RFC 5104 s4.3.1), REMB (draft-alvestrand-rmcat-remb-03 s2.2) and transport-wide
congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 s3.1).
Packet types we do not understand are skipped, as RFC 3550 s6.1 asks of receivers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Final

from trackmesh.errors import RemoteProtocolError

__all__ = [
    "Bye",
    "Fir",
    "Nack",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "TransportCcFeedback",
    "build_bye",
    "build_fir",
    "build_nack",
    "build_pli",
    "build_remb",
    "build_rr",
    "build_sdes",
    "build_sr",
    "build_transport_cc",
    "parse_rtcp",
]

PT_SR: Final = 200
PT_RR: Final = 201
PT_SDES: Final = 202
PT_BYE: Final = 203
PT_RTPFB: Final = 205  # RFC 4585 s6.1 transport layer feedback
PT_PSFB: Final = 206  # RFC 4585 s6.1 payload-specific feedback
FMT_NACK: Final = 1
FMT_TWCC: Final = 15
FMT_PLI: Final = 1
FMT_FIR: Final = 4
FMT_AFB: Final = 15  # application layer feedback, carries REMB
SDES_CNAME: Final = 1

# TWCC packet status symbols (draft-holmer s3.1.1).
STATUS_NOT_RECEIVED: Final = 0
STATUS_SMALL_DELTA: Final = 1
STATUS_LARGE_DELTA: Final = 2

_HDR: Final = struct.Struct("!BBH")
_U32: Final = struct.Struct("!I")
_U16: Final = struct.Struct("!H")
_I16: Final = struct.Struct("!h")
_SR_INFO: Final = struct.Struct("!IQIII")  # ssrc, NTP, RTP ts, packet count, octet count (s6.4.1)
_BLOCK: Final = struct.Struct("!IB3sIIII")  # report block (s6.4.1)
_FB: Final = struct.Struct("!II")  # sender SSRC, media SSRC (RFC 4585 s6.1)
_NACK_FCI: Final = struct.Struct("!HH")
_FIR_FCI: Final = struct.Struct("!IB3x")
_REMB: Final = struct.Struct("!4sBBH")  # 'REMB', num ssrc, exp(6)+mantissa(18)
_TWCC_HEAD: Final = struct.Struct("!HHI")  # base seq, status count, ref time(24)+fb count(8)
_REMB_ID: Final = b"REMB"


class RtcpError(RemoteProtocolError):
    """A malformed RTCP packet."""


class ReportBlock:
    """One reception report block (RFC 3550 s6.4.1)."""

    __slots__ = ("dlsr", "fraction_lost", "highest_seq", "jitter", "lsr", "packets_lost", "ssrc")

    def __init__(
        self,
        ssrc: int,
        fraction_lost: int = 0,
        packets_lost: int = 0,
        highest_seq: int = 0,
        jitter: int = 0,
        lsr: int = 0,
        dlsr: int = 0,
    ) -> None:
        self.ssrc = ssrc
        self.fraction_lost = fraction_lost
        self.packets_lost = packets_lost  # signed 24-bit: duplicates can make it negative
        self.highest_seq = highest_seq
        self.jitter = jitter
        self.lsr = lsr
        self.dlsr = dlsr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReportBlock) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__
        )

    def __repr__(self) -> str:
        return f"ReportBlock(ssrc={self.ssrc:#x}, lost={self.packets_lost}, hseq={self.highest_seq})"


class SenderReport:
    """SR (RFC 3550 s6.4.1)."""

    __slots__ = ("ntp_timestamp", "octet_count", "packet_count", "reports", "rtp_timestamp", "ssrc")

    def __init__(
        self,
        ssrc: int,
        ntp_timestamp: int,
        rtp_timestamp: int,
        packet_count: int,
        octet_count: int,
        reports: list[ReportBlock],
    ) -> None:
        self.ssrc = ssrc
        self.ntp_timestamp = ntp_timestamp  # 64-bit NTP fixed point
        self.rtp_timestamp = rtp_timestamp
        self.packet_count = packet_count
        self.octet_count = octet_count
        self.reports = reports


class ReceiverReport:
    """RR (RFC 3550 s6.4.2)."""

    __slots__ = ("reports", "ssrc")

    def __init__(self, ssrc: int, reports: list[ReportBlock]) -> None:
        self.ssrc = ssrc
        self.reports = reports


class SourceDescription:
    """SDES (RFC 3550 s6.5), reduced to (ssrc, cname) pairs: the SFU needs nothing else."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list[tuple[int, str | None]]) -> None:
        self.chunks = chunks


class Bye:
    """BYE (RFC 3550 s6.6)."""

    __slots__ = ("reason", "ssrcs")

    def __init__(self, ssrcs: list[int], reason: str | None = None) -> None:
        self.ssrcs = ssrcs
        self.reason = reason


class Nack:
    """Generic NACK (RFC 4585 s6.2.1) with PID+BLP already expanded to sequence numbers."""

    __slots__ = ("lost", "media_ssrc", "sender_ssrc")

    def __init__(self, sender_ssrc: int, media_ssrc: int, lost: list[int]) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.lost = lost


class Pli:
    """Picture Loss Indication (RFC 4585 s6.3.1)."""

    __slots__ = ("media_ssrc", "sender_ssrc")

    def __init__(self, sender_ssrc: int, media_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc


class Fir:
    """Full Intra Request (RFC 5104 s4.3.1): (media ssrc, command sequence number) entries."""

    __slots__ = ("entries", "sender_ssrc")

    def __init__(self, sender_ssrc: int, entries: list[tuple[int, int]]) -> None:
        self.sender_ssrc = sender_ssrc
        self.entries = entries


class Remb:
    """Receiver Estimated Max Bitrate (draft-alvestrand-rmcat-remb-03 s2.2)."""

    __slots__ = ("bitrate", "sender_ssrc", "ssrcs")

    def __init__(self, sender_ssrc: int, bitrate: int, ssrcs: list[int]) -> None:
        self.sender_ssrc = sender_ssrc
        self.bitrate = bitrate  # bits per second, mantissa * 2**exp
        self.ssrcs = ssrcs


class TransportCcFeedback:
    """Transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 s3.1).

    ``statuses`` has one symbol per reported sequence number (0 not received, 1 small delta,
    2 large/negative delta); ``deltas`` has one receive delta in 250 us ticks per received
    packet, in sequence order.
    """

    __slots__ = (
        "base_seq",
        "deltas",
        "fb_pkt_count",
        "media_ssrc",
        "reference_time",
        "sender_ssrc",
        "statuses",
    )

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int,
        base_seq: int,
        reference_time: int,
        fb_pkt_count: int,
        statuses: list[int],
        deltas: list[int],
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        self.base_seq = base_seq
        self.reference_time = reference_time  # 24 bits, multiples of 64 ms
        self.fb_pkt_count = fb_pkt_count
        self.statuses = statuses
        self.deltas = deltas

    @property
    def packet_status_count(self) -> int:
        return len(self.statuses)

    def packets(self) -> list[tuple[int, float | None]]:
        """(sequence number, arrival time in seconds of the remote clock or None if lost)."""
        out: list[tuple[int, float | None]] = []
        ticks = self.reference_time * 256  # 64 ms = 256 ticks of 250 us
        it = iter(self.deltas)
        for i, status in enumerate(self.statuses):
            seq = (self.base_seq + i) & 0xFFFF
            if status == STATUS_NOT_RECEIVED:
                out.append((seq, None))
            else:
                ticks += next(it)
                out.append((seq, ticks * 0.00025))
        return out


RtcpPacket = (
    SenderReport | ReceiverReport | SourceDescription | Bye | Nack | Pli | Fir | Remb | TransportCcFeedback
)


# ---------------------------------------------------------------------------------------------
# Parsing


def _report_blocks(data: memoryview, offset: int, count: int, end: int) -> list[ReportBlock]:
    if offset + 24 * count > end:
        raise RtcpError(f"{count} report blocks do not fit in the RTCP packet")
    blocks = []
    for i in range(count):
        ssrc, fraction, lost, hseq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset + 24 * i)
        blocks.append(
            ReportBlock(ssrc, fraction, int.from_bytes(lost, "big", signed=True), hseq, jitter, lsr, dlsr)
        )
    return blocks


def _parse_sdes(data: memoryview, offset: int, count: int, end: int) -> SourceDescription:
    chunks: list[tuple[int, str | None]] = []
    pos = offset
    for _ in range(count):
        if pos + 4 > end:
            raise RtcpError("SDES chunk truncated")
        ssrc = _U32.unpack_from(data, pos)[0]
        pos += 4
        cname: str | None = None
        while True:
            if pos >= end:
                raise RtcpError("SDES item list not terminated")
            item = data[pos]
            if item == 0:
                # s6.5: a null item ends the list, then pad to the next 32-bit boundary.
                pos += 1
                pos += -(pos - offset) % 4
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpError("SDES item overruns the packet")
            length = data[pos + 1]
            if item == SDES_CNAME:
                cname = bytes(data[pos + 2 : pos + 2 + length]).decode("utf-8", "replace")
            pos += 2 + length
        chunks.append((ssrc, cname))
    return SourceDescription(chunks)


def _parse_bye(data: memoryview, offset: int, count: int, end: int) -> Bye:
    if offset + 4 * count > end:
        raise RtcpError("BYE SSRC list overruns the packet")
    ssrcs = [_U32.unpack_from(data, offset + 4 * i)[0] for i in range(count)]
    pos = offset + 4 * count
    reason = None
    if pos < end:
        length = data[pos]
        if pos + 1 + length > end:
            raise RtcpError("BYE reason overruns the packet")
        reason = bytes(data[pos + 1 : pos + 1 + length]).decode("utf-8", "replace")
    return Bye(ssrcs, reason)


def _parse_nack(data: memoryview, offset: int, end: int) -> list[int]:
    lost: list[int] = []
    for pos in range(offset, end - 3, 4):
        pid, blp = _NACK_FCI.unpack_from(data, pos)
        lost.append(pid)
        # RFC 4585 s6.2.1: bit i of BLP (LSB = 0) reports pid + i + 1 as lost.
        while blp:
            low = blp & -blp
            lost.append((pid + low.bit_length()) & 0xFFFF)
            blp ^= low
    return lost


def _parse_twcc(data: memoryview, offset: int, end: int, sender: int, media: int) -> TransportCcFeedback:
    if offset + 8 > end:
        raise RtcpError("transport-cc feedback too short")
    base_seq, count, ref = _TWCC_HEAD.unpack_from(data, offset)
    pos = offset + 8
    statuses: list[int] = []
    while len(statuses) < count:
        if pos + 2 > end:
            raise RtcpError(f"transport-cc packet chunks end after {len(statuses)} of {count} statuses")
        chunk = _U16.unpack_from(data, pos)[0]
        pos += 2
        remaining = count - len(statuses)
        if chunk & 0x8000 == 0:
            # s3.1.3 run length chunk: T=0, S(2), run length(13).
            symbol = (chunk >> 13) & 0x3
            run = chunk & 0x1FFF
            if run == 0:
                raise RtcpError("transport-cc run length chunk with zero length")
            statuses.extend([symbol] * min(run, remaining))
        elif chunk & 0x4000 == 0:
            # s3.1.4 status vector, one-bit symbols: 14 of them, MSB first.
            statuses.extend((chunk >> (13 - i)) & 1 for i in range(min(14, remaining)))
        else:
            # s3.1.4 status vector, two-bit symbols: 7 of them.
            statuses.extend((chunk >> (12 - 2 * i)) & 3 for i in range(min(7, remaining)))
    deltas: list[int] = []
    for status in statuses:
        if status == STATUS_SMALL_DELTA:
            if pos + 1 > end:
                raise RtcpError("transport-cc receive deltas truncated")
            deltas.append(data[pos])
            pos += 1
        elif status == STATUS_LARGE_DELTA:
            if pos + 2 > end:
                raise RtcpError("transport-cc receive deltas truncated")
            deltas.append(_I16.unpack_from(data, pos)[0])
            pos += 2
        elif status != STATUS_NOT_RECEIVED:
            raise RtcpError("transport-cc uses the reserved packet status symbol 11")
    return TransportCcFeedback(sender, media, base_seq, ref >> 8, ref & 0xFF, statuses, deltas)


def _parse_psfb(
    data: memoryview, fmt: int, offset: int, end: int, sender: int, media: int
) -> RtcpPacket | None:
    if fmt == FMT_PLI:
        return Pli(sender, media)
    if fmt == FMT_FIR:
        entries = []
        for pos in range(offset, end - 7, 8):
            ssrc, seq_nr = _FIR_FCI.unpack_from(data, pos)
            entries.append((ssrc, seq_nr))
        return Fir(sender, entries)
    if fmt == FMT_AFB and end - offset >= 8 and bytes(data[offset : offset + 4]) == _REMB_ID:
        _, num, b_exp, b_lo = _REMB.unpack_from(data, offset)
        exponent = b_exp >> 2
        mantissa = ((b_exp & 0x3) << 16) | b_lo
        if offset + 8 + 4 * num > end:
            raise RtcpError(f"REMB lists {num} SSRCs that do not fit in the packet")
        ssrcs = [_U32.unpack_from(data, offset + 8 + 4 * i)[0] for i in range(num)]
        return Remb(sender, mantissa << exponent, ssrcs)
    return None  # other payload-specific feedback (SLI, RPSI, other AFB) is not used


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """Parse a compound RTCP packet; unknown packet types and formats are skipped."""
    view = memoryview(data)
    size = len(view)
    if size < 4:
        raise RtcpError(f"RTCP packet too short: {size} bytes")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < size:
        if pos + 4 > size:
            raise RtcpError(f"{size - pos} trailing bytes after the last RTCP packet")
        b0, pt, words = _HDR.unpack_from(view, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"unsupported RTCP version {b0 >> 6} (RFC 3550 s6.4.1 requires 2)")
        end = pos + 4 * (words + 1)
        if end > size:
            raise RtcpError(f"RTCP packet length {4 * (words + 1)} exceeds the {size - pos} bytes left")
        body_end = end
        if b0 & 0x20:
            padding = view[end - 1]
            if padding == 0 or padding > end - pos - 4:
                raise RtcpError(f"invalid RTCP padding length {padding}")
            body_end = end - padding
        count = b0 & 0x1F
        start = pos + 4
        pkt = _parse_one(view, pt, count, start, body_end)
        if pkt is not None:
            packets.append(pkt)
        pos = end
    return packets


def _parse_one(view: memoryview, pt: int, count: int, start: int, end: int) -> RtcpPacket | None:
    if pt == PT_SR:
        if start + 24 > end:
            raise RtcpError("sender report too short")
        ssrc, ntp, rtp_ts, pkts, octets = _SR_INFO.unpack_from(view, start)
        return SenderReport(ssrc, ntp, rtp_ts, pkts, octets, _report_blocks(view, start + 24, count, end))
    if pt == PT_RR:
        if start + 4 > end:
            raise RtcpError("receiver report too short")
        ssrc = _U32.unpack_from(view, start)[0]
        return ReceiverReport(ssrc, _report_blocks(view, start + 4, count, end))
    if pt == PT_SDES:
        return _parse_sdes(view, start, count, end)
    if pt == PT_BYE:
        return _parse_bye(view, start, count, end)
    if pt in (PT_RTPFB, PT_PSFB):
        if start + 8 > end:
            raise RtcpError("feedback message shorter than its two SSRCs (RFC 4585 s6.1)")
        sender, media = _FB.unpack_from(view, start)
        if pt == PT_RTPFB:
            if count == FMT_NACK:
                return Nack(sender, media, _parse_nack(view, start + 8, end))
            if count == FMT_TWCC:
                return _parse_twcc(view, start + 8, end, sender, media)
            return None
        return _parse_psfb(view, count, start + 8, end, sender, media)
    return None


# ---------------------------------------------------------------------------------------------
# Building


def _wrap(pt: int, count: int, body: bytes | bytearray) -> bytes:
    body = bytes(body) + b"\x00" * (-len(body) % 4)
    return _HDR.pack(0x80 | count, pt, len(body) // 4) + body


def _blocks(reports: Sequence[ReportBlock]) -> bytes:
    if len(reports) > 31:
        raise ValueError("at most 31 report blocks fit in one SR/RR")
    return b"".join(
        _BLOCK.pack(
            r.ssrc,
            r.fraction_lost,
            max(-0x800000, min(0x7FFFFF, r.packets_lost)).to_bytes(3, "big", signed=True),
            r.highest_seq,
            r.jitter,
            r.lsr,
            r.dlsr,
        )
        for r in reports
    )


def build_sr(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packet_count: int,
    octet_count: int,
    reports: Sequence[ReportBlock] = (),
) -> bytes:
    body = _SR_INFO.pack(ssrc, ntp_timestamp, rtp_timestamp, packet_count, octet_count) + _blocks(reports)
    return _wrap(PT_SR, len(reports), body)


def build_rr(ssrc: int, reports: Sequence[ReportBlock] = ()) -> bytes:
    return _wrap(PT_RR, len(reports), _U32.pack(ssrc) + _blocks(reports))


def build_sdes(chunks: Sequence[tuple[int, str]]) -> bytes:
    """SDES with one CNAME item per chunk."""
    body = bytearray()
    for ssrc, cname in chunks:
        raw = cname.encode("utf-8")
        if len(raw) > 255:
            raise ValueError("CNAME longer than 255 bytes")
        chunk = _U32.pack(ssrc) + bytes((SDES_CNAME, len(raw))) + raw + b"\x00"
        body += chunk + b"\x00" * (-len(chunk) % 4)
    return _wrap(PT_SDES, len(chunks), body)


def build_bye(ssrcs: Sequence[int], reason: str | None = None) -> bytes:
    body = b"".join(_U32.pack(s) for s in ssrcs)
    if reason is not None:
        raw = reason.encode("utf-8")[:255]
        body += bytes((len(raw),)) + raw
    return _wrap(PT_BYE, len(ssrcs), body)


def _seq_sorted(seqs: Iterable[int]) -> list[int]:
    """Sort 16-bit sequence numbers in wraparound order, anchored at the first one given."""
    uniq = list(dict.fromkeys(s & 0xFFFF for s in seqs))
    if not uniq:
        return []
    anchor = uniq[0]
    # Distance from the anchor as a signed 16-bit value keeps 65535 before 0.
    return sorted(uniq, key=lambda s: ((s - anchor + 0x8000) & 0xFFFF) - 0x8000)


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Generic NACK; consecutive losses are packed as PID + 16-bit BLP (RFC 4585 s6.2.1)."""
    body = bytearray(_FB.pack(sender_ssrc, media_ssrc))
    seqs = _seq_sorted(lost)
    i = 0
    while i < len(seqs):
        pid = seqs[i]
        blp = 0
        i += 1
        while i < len(seqs):
            diff = (seqs[i] - pid) & 0xFFFF
            if not 1 <= diff <= 16:
                break
            blp |= 1 << (diff - 1)
            i += 1
        body += _NACK_FCI.pack(pid, blp)
    return _wrap(PT_RTPFB, FMT_NACK, body)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _wrap(PT_PSFB, FMT_PLI, _FB.pack(sender_ssrc, media_ssrc))


def build_fir(sender_ssrc: int, entries: Sequence[tuple[int, int]]) -> bytes:
    """FIR; RFC 5104 s4.3.1.2 says the media source SSRC field is unused and set to 0."""
    body = _FB.pack(sender_ssrc, 0) + b"".join(_FIR_FCI.pack(s, n & 0xFF) for s, n in entries)
    return _wrap(PT_PSFB, FMT_FIR, body)


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    """REMB; the bitrate is encoded as an 18-bit mantissa and 6-bit exponent, rounded down."""
    if bitrate < 0:
        raise ValueError("bitrate must be non-negative")
    if len(ssrcs) > 255:
        raise ValueError("at most 255 SSRCs in a REMB")
    exponent = max(0, bitrate.bit_length() - 18)
    if exponent > 63:
        raise ValueError("bitrate too large for REMB")
    mantissa = bitrate >> exponent
    head = _REMB.pack(_REMB_ID, len(ssrcs), (exponent << 2) | (mantissa >> 16), mantissa & 0xFFFF)
    body = _FB.pack(sender_ssrc, 0) + head + b"".join(_U32.pack(s) for s in ssrcs)
    return _wrap(PT_PSFB, FMT_AFB, body)


def _encode_chunks(statuses: Sequence[int]) -> bytearray:
    """Greedy chunk encoding (draft-holmer s3.1.2-3.1.4): long runs as run-length chunks,
    otherwise one-bit vectors when only 0/1 symbols occur, else two-bit vectors."""
    out = bytearray()
    n = len(statuses)
    i = 0
    while i < n:
        sym = statuses[i]
        run = 1
        while i + run < n and statuses[i + run] == sym and run < 0x1FFF:
            run += 1
        window = statuses[i : i + 14]
        if run >= 14 or i + run == n:
            out += _U16.pack((sym << 13) | run)
            i += run
        elif max(window) <= 1:
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            out += _U16.pack(chunk)
            i += len(window)
        elif run >= 7:
            out += _U16.pack((sym << 13) | run)
            i += run
        else:
            chunk = 0xC000
            for k, s in enumerate(statuses[i : i + 7]):
                chunk |= s << (12 - 2 * k)
            out += _U16.pack(chunk)
            i += min(7, n - i)
    return out


def build_transport_cc(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    reference_time: int,
    fb_pkt_count: int,
    statuses: Sequence[int],
    deltas: Sequence[int],
) -> bytes:
    """Transport-wide CC feedback from per-packet statuses and 250 us receive deltas.

    Statuses are validated against the deltas: symbol 1 needs 0 <= delta <= 255, symbol 2 a
    signed 16-bit delta. Trailing bytes are zero padding to 32 bits, as in the draft's figure.
    """
    if len(statuses) > 0xFFFF:
        raise ValueError("at most 65535 statuses per feedback")
    body = bytearray(_FB.pack(sender_ssrc, media_ssrc))
    body += _TWCC_HEAD.pack(
        base_seq & 0xFFFF, len(statuses), ((reference_time & 0xFFFFFF) << 8) | (fb_pkt_count & 0xFF)
    )
    body += _encode_chunks(statuses)
    it = iter(deltas)
    for status in statuses:
        if status == STATUS_NOT_RECEIVED:
            continue
        delta = next(it)
        if status == STATUS_SMALL_DELTA:
            if not 0 <= delta <= 255:
                raise ValueError(f"small delta {delta} out of range 0..255")
            body.append(delta)
        elif status == STATUS_LARGE_DELTA:
            body += _I16.pack(delta)
        else:
            raise ValueError(f"invalid packet status symbol {status}")
    return _wrap(PT_RTPFB, FMT_TWCC, body)
