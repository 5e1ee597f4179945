"""The send side of one RTP stream, whatever carries it: numbering, header, retransmission, SR.

:class:`OutboundStream` is one SSRC we send (and the RTX SSRC that repairs it, RFC 4588):

- sequence numbers and timestamps rewritten into one continuous space
  (:class:`~trackmesh.rtp.rewrite.SeqTsRewriter`), so switching the source it forwards is
  seamless for the receiver (RFC 7667 s3.7);
- the header template: the fixed header (RFC 3550 s5.1) and the one-byte header extension
  block (RFC 8285 s4.2) written once, so a packet's whole header is one ``struct.pack``
  (:meth:`OutboundStream.header`);
- the retransmission ring of what was sent, answered as RTX (RFC 4588 s4) when an RTX SSRC and
  payload type were negotiated, else as the same packet again (:meth:`OutboundStream.retransmission`);
- packet and octet counts and the last timestamp sent, for the SR (RFC 3550 s6.4.1), and the
  receiver's report blocks about this SSRC (:class:`~trackmesh.rtp.reports.ReceptionReport`).

Protection (SRTP or none), the transport-wide sequence number and the datagram's address are
the owner's: it writes the values it owns into the header, protects and queues. A transport
with a hotter path than :meth:`OutboundStream.send` (WebRTC's per-viewer forwarding) reads these
attributes directly instead of calling through, and must keep what it does in step with
:meth:`OutboundStream.header` and :meth:`OutboundStream.sent`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

from trackmesh.core.model import MediaCodec
from trackmesh.rtp.nack import RetransmitBuffer
from trackmesh.rtp.reports import ReceptionReport
from trackmesh.rtp.rewrite import SeqTsRewriter
from trackmesh.rtp.rtcp import build_sr

__all__ = ["NTP_EPOCH_OFFSET", "OutboundStream", "ntp_timestamp"]

_HDR: Final = struct.Struct("!BBHII")  # RFC 3550 s5.1 fixed header
_U16: Final = struct.Struct("!H")
_TS: Final = struct.Struct("!I")
_BUF_SIZE: Final = 64  # the fixed header plus our extension block
#: RFC 868 / RFC 5905: seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_EPOCH_OFFSET: Final = 2208988800


def ntp_timestamp(now: float, wall_offset: float) -> int:
    """64-bit NTP timestamp (RFC 3550 s4) of monotonic ``now``; wallclock = ``now + wall_offset``."""
    wall = now + wall_offset + NTP_EPOCH_OFFSET
    return int(wall * 4294967296.0) & 0xFFFFFFFFFFFFFFFF


class OutboundStream:
    """One SSRC we send, with its RTX SSRC if any.

    ``pts``: our payload type for each codec; ``rtx_pts``: the RTX payload type for each media
    payload type (RFC 4588 s8.1). ``twcc_id``/``abs_id``: the negotiated extension IDs of
    transport-cc and abs-send-time (0: not sent); only 1..14 fit the one-byte form we write.
    """

    __slots__ = (
        "_buf",
        "_hlen",
        "_hmode",
        "_hst",
        "_hvals",
        "_rtx_seq",
        "_view",
        "abs_pos",
        "clock_rate",
        "last_ts",
        "last_ts_at",
        "octets",
        "packets",
        "pts",
        "reception",
        "rewriter",
        "ring",
        "rtx_pts",
        "rtx_ssrc",
        "ssrc",
        "twcc_pos",
    )

    def __init__(
        self,
        ssrc: int,
        rtx_ssrc: int | None,
        pts: Mapping[MediaCodec, int],
        rtx_pts: Mapping[int, int],
        clock_rate: int,
        *,
        ring_size: int = 512,
        twcc_id: int = 0,
        abs_id: int = 0,
    ) -> None:
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.pts: dict[MediaCodec, int] = dict(pts)
        self.rtx_pts: dict[int, int] = dict(rtx_pts) if rtx_ssrc is not None else {}
        self.clock_rate = clock_rate
        self.rewriter = SeqTsRewriter(clock_rate)
        self.reception = ReceptionReport(clock_rate)  # the receiver's reports about self.ssrc
        self.ring = RetransmitBuffer(ring_size)
        self._buf = bytearray(_BUF_SIZE)
        self._view = memoryview(self._buf)
        self._hlen, self.twcc_pos, self.abs_pos = self._layout(twcc_id, abs_id)
        self._hst, self._hmode, self._hvals = self._header_struct()
        self._rtx_seq = 0
        self.packets = 0
        self.octets = 0
        self.last_ts = 0
        self.last_ts_at = 0.0

    def _layout(self, twcc_id: int, abs_id: int) -> tuple[int, int, int]:
        """Write the static part of the header extension block once (RFC 8285 s4.2 one-byte
        form); per packet only the values are packed. Returns (header length, offsets)."""
        elements: list[tuple[int, int]] = []
        if 1 <= twcc_id <= 14:
            elements.append((twcc_id, 2))
        if 1 <= abs_id <= 14:
            elements.append((abs_id, 3))
        if not elements:
            return 12, -1, -1
        pos = 16
        offsets: dict[int, int] = {}
        for ext_id, length in elements:
            self._buf[pos] = (ext_id << 4) | (length - 1)
            offsets[ext_id] = pos + 1
            pos += 1 + length
        words = (pos - 16 + 3) // 4
        for i in range(pos, 16 + 4 * words):
            self._buf[i] = 0  # padding (ID 0) to a 32-bit boundary
        struct.pack_into("!HH", self._buf, 12, 0xBEDE, words)
        return 16 + 4 * words, offsets.get(twcc_id, -1), offsets.get(abs_id, -1)

    def _header_struct(self) -> tuple[struct.Struct, int, tuple[int, int, int, int]]:
        """One Struct for the whole header this stream sends (fixed header, extension block,
        the negotiated elements and padding, as _layout wrote them), so a packet's header is
        a single ``pack`` call. Returns (struct, mode, (b0, words, twcc id byte, abs id byte));
        mode bit 0: transport-cc present, bit 1: abs-send-time present."""
        hlen, tpos, apos = self._hlen, self.twcc_pos, self.abs_pos
        fmt = "!BBHII"
        mode = 0
        if hlen > 12:
            fmt += "HH"
            # _layout writes transport-cc first, then abs-send-time.
            if tpos >= 0:
                fmt += "BH"
                mode |= 1
            if apos >= 0:
                fmt += "BHB"
                mode |= 2
            fmt += "x" * (hlen - struct.calcsize(fmt))
        hst = struct.Struct(fmt)
        if hst.size != hlen:
            raise AssertionError(f"header struct {fmt} is not {hlen} bytes")
        buf = self._buf
        values = (
            0x90 if hlen > 12 else 0x80,
            (hlen - 16) // 4,
            buf[tpos - 1] if tpos >= 0 else 0,
            buf[apos - 1] if apos >= 0 else 0,
        )
        return hst, mode, values

    @property
    def header_length(self) -> int:
        """Bytes of the header this stream writes (fixed header plus extension block)."""
        return self._hlen

    def header(self, pt: int, marker: bool, seq: int, ts: int, tseq: int = 0, abs_time: int = 0) -> bytes:
        """The whole RTP header of one packet: ``tseq`` is the transport-wide sequence number and
        ``abs_time`` the 24-bit abs-send-time, written only where the template has them."""
        b0, words, tid, aid = self._hvals
        b1 = (0x80 | pt) if marker else pt
        mode = self._hmode
        hi, lo = abs_time >> 8, abs_time & 0xFF  # 24 bits: high 16, then low 8
        if mode == 3:
            return self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, tid, tseq, aid, hi, lo)
        if mode == 2:
            return self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, aid, hi, lo)
        if mode:
            return self._hst.pack(b0, b1, seq, ts, self.ssrc, 0xBEDE, words, tid, tseq)
        return self._hst.pack(b0, b1, seq, ts, self.ssrc)

    # ---- sending ---------------------------------------------------------------------------

    def send(
        self, now: float, source: int, seq: int, ts: int, pt: int, marker: bool, tseq: int = 0, abs_time: int = 0
    ) -> tuple[bytes, int] | None:
        """Number one packet of ``source`` (any key naming the stream being forwarded: a new key is
        a switch) into our space and write its header. Returns (header, outgoing seq), or None
        for a packet older than the last switch (dropped). Call :meth:`sent` once it is on its way."""
        out = self.rewriter.rewrite(source, seq, ts, now)
        if out is None:
            return None
        oseq, ots = out
        return self.header(pt, marker, oseq, ots, tseq, abs_time), oseq

    def sent(self, seq: int, header: bytes, payload: bytes | memoryview, ts: int, now: float) -> None:
        """A packet left at ``now``: kept for retransmission (by reference) and counted for the SR."""
        self.ring.put(seq, header, payload, now)
        self.packets += 1
        self.octets += len(payload)
        self.last_ts = ts
        self.last_ts_at = now

    def retransmission(self, seq: int, now: float) -> tuple[int, int, bytearray, bytes | memoryview] | None:
        """The packet a receiver's generic NACK (RFC 4585 s6.2.1) names, from the ring, as
        (ssrc, seq, header, payload) to send: RTX (RFC 4588 s4) when negotiated for its payload
        type, else the same packet again. None when it is no longer in the ring."""
        entry = self.ring.get(seq, now)
        if entry is None:
            return None
        stored, body = entry
        hlen = self._hlen
        if len(stored) > hlen:
            # A payload whose first bytes were rewritten for this viewer (a renumbered VP8 descriptor):
            # the ring keeps them after the header and the rest of the source's payload by reference.
            body = stored[hlen:] + body
            stored = stored[:hlen]
        hdr = bytearray(stored)
        rtx_pt = self.rtx_pts.get(hdr[1] & 0x7F)
        if rtx_pt is not None and self.rtx_ssrc is not None:
            # RFC 4588 s4: same timestamp and marker, the RTX stream's own sequence number, and
            # the original sequence number (OSN) before the original payload.
            out_seq = self._rtx_seq
            _HDR.pack_into(
                hdr, 0, hdr[0], (hdr[1] & 0x80) | rtx_pt, out_seq, _TS.unpack_from(stored, 4)[0], self.rtx_ssrc
            )
            self._rtx_seq = (out_seq + 1) & 0xFFFF
            return self.rtx_ssrc, out_seq, hdr, _U16.pack(seq) + body
        return self.ssrc, seq, hdr, body

    def sender_report(self, now: float, ntp: int) -> bytes | None:
        """RFC 3550 s6.4.1 SR with NTP timestamp ``ntp`` (of ``now``): the RTP timestamp is the one
        that corresponds to it, extrapolated from the last packet sent at this stream's clock rate."""
        if self.packets == 0:
            return None
        rtp_ts = (self.last_ts + round((now - self.last_ts_at) * self.clock_rate)) & 0xFFFFFFFF
        self.reception.on_sr_sent(ntp, now)  # the receiver's LSR names it (RTT, RFC 3550 s6.4.1)
        return build_sr(self.ssrc, ntp, rtp_ts, self.packets & 0xFFFFFFFF, self.octets & 0xFFFFFFFF)
