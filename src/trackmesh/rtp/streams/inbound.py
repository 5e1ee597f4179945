"""The receive side of RTP streams, whatever carries them: per-SSRC state and the receiver's RTCP.

:class:`InboundStream` is one stream we receive (one SSRC, and the RTX SSRC that repairs it,
RFC 4588): its sequence numbers extended (RFC 3550 A.1), a window of the last
:data:`SEEN_WINDOW` numbers to drop duplicates, the counts behind a reception report block
(RFC 3550 s6.4.1), its NACK generator (RFC 4585 s6.2.1) and the sender's last SR (for LSR/DLSR).

:class:`InboundStreams` is the SSRC table of one connection and the receiver-side RTCP it owes
the senders: generic NACKs when packets go missing, a key-frame request (PLI, RFC 4585 s6.3.1)
when a gap is too large to repair, and an RR every :data:`REPORT_INTERVAL`. RTCP leaves through
the ``send_rtcp`` callable the owner hands in (it protects and queues). How packets reach a
stream (WebRTC learns SSRCs from mid/rid header extensions; a plain RTP session from its SDP or
the first packet) is the owner's: it binds SSRCs with :meth:`InboundStreams.bind` and feeds each
packet's (original) sequence number to :meth:`InboundStreams.receive`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Generic, TypeVar

from trackmesh.rtp.nack import NackGenerator
from trackmesh.rtp.rewrite import SeqUnwrapper
from trackmesh.rtp.rtcp import ReportBlock, SenderReport, build_fir, build_nack, build_pli, build_rr

__all__ = ["REPORT_INTERVAL", "SEEN_WINDOW", "InboundStream", "InboundStreams"]

#: RFC 3550 s6.2: reports about every 5 s are the minimum; browsers use ~1 s for RTP/AVPF
#: (RFC 4585 s3.5.1 lets feedback profiles report more often), which keeps their RTT fresh.
REPORT_INTERVAL: Final = 1.0
#: Duplicate detection window per stream, in packets (a power of two).
SEEN_WINDOW: Final = 1024
_SEEN_MASK: Final = SEEN_WINDOW - 1
_NOTHING_SEEN: Final = bytes(SEEN_WINDOW >> 3)
_NTP_MID: Final = 0xFFFFFFFF
#: RFC 3550 s6.4: at most 31 report blocks in one RR.
_MAX_BLOCKS: Final = 31


class InboundStream:
    """One RTP stream we receive: its SSRC (and RTX SSRC) once known, and its reception state."""

    __slots__ = (
        "base",
        "expected_prior",
        "fir_seq",
        "nack",
        "received",
        "received_prior",
        "rtx_ssrc",
        "seen",
        "seen_top",
        "sr_at",
        "sr_mid",
        "ssrc",
        "unwrapper",
    )

    def __init__(self, nack: bool) -> None:
        self.ssrc = -1  # the media SSRC, once known
        self.rtx_ssrc = -1  # its RTX SSRC (RFC 4588), once known
        self.nack: NackGenerator | None = NackGenerator() if nack else None
        self.fir_seq = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        self.unwrapper = SeqUnwrapper()
        # One bit per extended sequence number of the window [seen_top - SEEN_WINDOW + 1, seen_top], at
        # ext & _SEEN_MASK: 128 bytes. (A list of the numbers held one int object per packet, 40 KB per
        # stream; a typed array of them, 8 KB, was still 16 KB per meeting participant, issue 19.)
        self.seen = bytearray(SEEN_WINDOW >> 3)
        self.seen_top = -1
        self.base = -1
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.sr_mid = 0  # middle 32 bits of the sender's last SR NTP time (RFC 3550 s6.4.1 LSR)
        self.sr_at = 0.0

    def restart(self) -> None:
        """The sender restarted the stream under a new SSRC: statistics and NACK state start over."""
        self.reset_stats()
        if self.nack is not None:
            self.nack = NackGenerator()

    def report_block(self, now: float) -> ReportBlock | None:
        """RFC 3550 s6.4.1 reception report block; jitter is not measured (reported as 0)."""
        highest = self.unwrapper.highest
        if highest < 0 or self.ssrc < 0:
            return None
        expected = highest - self.base + 1
        lost = expected - self.received
        exp_int = expected - self.expected_prior
        rec_int = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_int = exp_int - rec_int
        fraction = (lost_int << 8) // exp_int if exp_int > 0 and lost_int > 0 else 0
        dlsr = int((now - self.sr_at) * 65536) & 0xFFFFFFFF if self.sr_mid else 0
        # The extended highest sequence number is cycles<<16 | seq counted from the first one.
        ext_highest = (highest - (self.base & ~0xFFFF)) & 0xFFFFFFFF
        return ReportBlock(self.ssrc, min(fraction, 255), lost, ext_highest, 0, self.sr_mid, dlsr)

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        """The sender's SR arrived at ``now``: the next report blocks carry its LSR and DLSR."""
        self.sr_mid = (sr.ntp_timestamp >> 16) & _NTP_MID
        self.sr_at = now

    def keyframe_request(self, sender_ssrc: int, fir: bool) -> bytes:
        """PLI (RFC 4585 s6.3.1), or FIR (RFC 5104 s4.3.1) with the next command sequence number."""
        if not fir:
            return build_pli(sender_ssrc, self.ssrc)
        self.fir_seq = (self.fir_seq + 1) & 0xFF
        return build_fir(sender_ssrc, [(self.ssrc, self.fir_seq)])


S = TypeVar("S", bound=InboundStream)


class InboundStreams(Generic[S]):
    """The streams one connection receives, by SSRC, and the receiver-side RTCP for them.

    ``send_rtcp`` protects and queues one RTCP packet; ``sender_ssrc`` is the SSRC our RTCP
    names as its sender (RFC 4585 s6.1). A transport subclasses this to add how its streams are
    found and named; :meth:`streams` (report order) and :meth:`on_keyframe_needed` are its hooks.
    """

    __slots__ = (
        "_next_report",
        "_send_rtcp",
        "by_rtx_ssrc",
        "by_ssrc",
        "keyframe_requests",
        "nacks_sent",
        "sender_ssrc",
    )

    def __init__(self, sender_ssrc: int, send_rtcp: Callable[[bytes], None]) -> None:
        self.sender_ssrc = sender_ssrc
        self._send_rtcp = send_rtcp
        self.by_ssrc: dict[int, S] = {}
        self.by_rtx_ssrc: dict[int, S] = {}
        self._next_report: float | None = None
        # For the node's metrics (read when scraped): RTCP feedback we sent to the sender.
        self.nacks_sent = 0  # generic NACK packets (RFC 4585 s6.2.1)
        self.keyframe_requests = 0  # PLIs and FIRs

    # ---- SSRCs --------------------------------------------------------------------------------

    def bind(self, stream: S, ssrc: int) -> None:
        """``ssrc`` carries ``stream``. A stream that had another SSRC was restarted by its sender
        (RFC 3550 s8.2 collision or an encoder restart): the old one is forgotten."""
        if stream.ssrc >= 0:
            self.by_ssrc.pop(stream.ssrc, None)
            stream.restart()
        stream.ssrc = ssrc
        self.by_ssrc[ssrc] = stream

    def bind_rtx(self, stream: S, ssrc: int) -> None:
        """``ssrc`` carries the retransmissions (RFC 4588) of ``stream``."""
        self.by_rtx_ssrc.pop(stream.rtx_ssrc, None)
        stream.rtx_ssrc = ssrc
        self.by_rtx_ssrc[ssrc] = stream

    def unbind(self, stream: S) -> None:
        """Forget ``stream``'s SSRCs: packets still arriving on them are unknown."""
        if self.by_ssrc.get(stream.ssrc) is stream:
            del self.by_ssrc[stream.ssrc]
        if self.by_rtx_ssrc.get(stream.rtx_ssrc) is stream:
            del self.by_rtx_ssrc[stream.rtx_ssrc]

    def streams(self) -> list[S]:
        """Every stream, in the order report blocks are written."""
        return list(self.by_ssrc.values())

    # ---- the hot path -------------------------------------------------------------------------

    def receive(self, stream: S, seq: int, now: float) -> bool:
        """Count one packet of ``stream`` with (original, for RTX the OSN) sequence number ``seq``.
        False for a packet we already have or one too old to tell: it goes no further."""
        ext = stream.unwrapper.unwrap(seq)
        if stream.base < 0:
            stream.base = ext
        # A packet we already have (an RTX copy sent as a bandwidth probe, a late answer to a
        # NACK, a network duplicate) or one too old to tell: forwarded, it would reuse an
        # outgoing sequence number and a receiver's SRTP replay check would drop it.
        seen = stream.seen
        top = stream.seen_top
        if ext > top:
            # The window moves up: the bits of the numbers it enters still hold those one lap below.
            if top < 0 or ext - top >= SEEN_WINDOW:
                seen[:] = _NOTHING_SEEN
            else:
                for e in range(top + 1, ext):
                    seen[(e & _SEEN_MASK) >> 3] &= ~(1 << (e & 7)) & 0xFF
            stream.seen_top = ext
        elif top - ext > _SEEN_MASK or seen[(ext & _SEEN_MASK) >> 3] >> (ext & 7) & 1:
            return False
        seen[(ext & _SEEN_MASK) >> 3] |= 1 << (ext & 7)
        stream.received += 1
        if stream.nack is not None:
            stream.nack.on_packet(seq, now)
        if self._next_report is None:
            self._next_report = now + REPORT_INTERVAL
        return True

    # ---- RTCP from the sender, RTCP to it -----------------------------------------------------

    def on_sender_report(self, sr: SenderReport, now: float) -> None:
        stream = self.by_ssrc.get(sr.ssrc)
        if stream is not None:
            stream.on_sender_report(sr, now)

    def on_keyframe_needed(self, stream: S, now: float) -> None:
        """A gap too large to repair packet by packet: ask for a key frame (a PLI by default)."""
        self.keyframe_requests += 1
        self._send_rtcp(stream.keyframe_request(self.sender_ssrc, fir=False))

    def next_deadline(self) -> float | None:
        best = self._next_report
        for stream in self.streams():
            if stream.nack is not None:
                t = stream.nack.next_timeout()
                if t is not None and (best is None or t < best):
                    best = t
        return best

    def handle_timeout(self, now: float) -> None:
        for stream in self.streams():
            gen = stream.nack
            if gen is None or stream.ssrc < 0:
                continue
            due = gen.handle_timeout(now)
            if due:
                # RFC 4585 s6.2.1 generic NACK; several FCIs per packet when needed.
                self._send_rtcp(build_nack(self.sender_ssrc, stream.ssrc, due))
                self.nacks_sent += 1
            if gen.keyframe_needed:
                # A gap too large to repair packet by packet: a key frame is cheaper.
                gen.keyframe_needed = False
                self.on_keyframe_needed(stream, now)
        if self._next_report is not None and now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            blocks = [b for s in self.streams() if (b := s.report_block(now)) is not None]
            for i in range(0, len(blocks), _MAX_BLOCKS):
                self._send_rtcp(build_rr(self.sender_ssrc, blocks[i : i + _MAX_BLOCKS]))
