"""What every RTP payload format shares: its error, a reassembled frame, the depacketizer loop.

A depacketizer is fed RTP payloads in sequence order (``push(payload, seq, timestamp, marker)``)
and drained of whole frames (``poll_frame()``), sans-IO. One frame is every packet of one RTP
timestamp (RFC 3550 s5.1: the packets of a video frame share it); it ends at the marker bit
(RFC 6184 s5.1, RFC 7741 s4.1, RFC 9628 s4.1, RFC 7798 s4.1, the AV1 RTP spec s7.2) or when a
packet of a new timestamp arrives. Loss is a gap in the sequence numbers: the frame it hits is
dropped and counted, never handed on partly, and after a gap a frame is only started on a
packet the codec can prove begins one (:meth:`Depacketizer._starts_frame`: VP8's S/PID, VP9's
B/SID, an H.264/HEVC access unit delimiter, AV1's N bit). The stream's very first packet is
taken as a start on weaker evidence (a receiver joining mid-stream has nothing better): a frame
may then lack non-VCL units sent before it. Malformed input
raises :class:`PayloadError` inside the codec hooks; :meth:`Depacketizer.push` catches it, counts
it and drops the frame, so a caller never sees an exception from bad input there.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Protocol

from trackmesh.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_MISORDER",
    "AudioDepacketizer",
    "Buffer",
    "Depacketizer",
    "Frame",
    "Packetizer",
    "PayloadError",
    "check_mtu",
]

Buffer = bytes | bytearray | memoryview

#: A packet at most this far behind the expected sequence number is late or a duplicate and is
#: ignored; farther behind, the sender restarted its sequence (RFC 3550 A.1 MAX_MISORDER).
MAX_MISORDER: Final = 100


class PayloadError(RemoteProtocolError):
    """A malformed codec payload (descriptor, aggregation or fragmentation unit)."""


class Frame:
    """One reassembled frame (video: an access unit / temporal unit; audio: one packet).

    ``data`` is in the codec's storage format: H.264/HEVC Annex B with 4-byte start codes, AV1
    low-overhead OBUs with size fields led by a temporal delimiter, VP8/VP9 the raw frame,
    Opus one Opus packet, G.711 the encoded samples."""

    __slots__ = ("data", "keyframe", "timestamp")

    def __init__(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        self.data = data
        self.timestamp = timestamp
        self.keyframe = keyframe

    def __repr__(self) -> str:
        return f"Frame(ts={self.timestamp}, keyframe={self.keyframe}, {len(self.data)} bytes)"


class Packetizer(Protocol):
    """Frame -> RTP payloads of at most ``mtu`` bytes each; the caller sets the marker bit
    on the last one and gives them all the frame's timestamp. A malformed frame raises
    :class:`PayloadError` (frames come from remote publishers); an empty frame or an MTU too
    small for any media raises LocalProtocolError (our misuse)."""

    def packetize(self, frame: Buffer, mtu: int) -> list[bytes]: ...


class Depacketizer:
    """RTP payloads in sequence order -> whole frames; codecs override the hooks.

    Counters: ``frames`` emitted, ``dropped_frames`` (started but incomplete, or hit by loss),
    ``bad_payloads`` (a payload the codec could not parse), ``lost_packets`` (sequence numbers
    skipped), ``late_packets`` (duplicates and late arrivals, ignored)."""

    __slots__ = (
        "_broken",
        "_buf",
        "_expect_seq",
        "_frames",
        "_keyframe",
        "_open",
        "_ts",
        "bad_payloads",
        "dropped_frames",
        "frames",
        "late_packets",
        "lost_packets",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frames: deque[Frame] = deque()
        self._expect_seq = -1
        self._open = False
        self._broken = False
        self._keyframe = False
        self._ts = 0
        self.frames = 0
        self.dropped_frames = 0
        self.bad_payloads = 0
        self.lost_packets = 0
        self.late_packets = 0

    def _sequence(self, seq: int) -> int:
        """0 in order, 1 after a gap (or on the first packet), -1 late or duplicate (ignore it)."""
        expect = self._expect_seq
        if seq == expect:
            self._expect_seq = (seq + 1) & 0xFFFF
            return 0
        if expect >= 0:
            skipped = (seq - expect) & 0xFFFF
            if skipped >= 0x10000 - MAX_MISORDER:
                self.late_packets += 1
                return -1
            if skipped < 0x8000:
                self.lost_packets += skipped
        self._expect_seq = (seq + 1) & 0xFFFF
        return 1

    def push(self, payload: Buffer, seq: int, timestamp: int, marker: bool) -> None:
        """Feed one RTP payload (the packet's sequence number, timestamp and marker bit)."""
        after_loss = self._expect_seq >= 0
        order = self._sequence(seq)
        if order < 0:
            return
        gap = order > 0
        if self._open:
            if gap:
                self._broken = True
            if timestamp != self._ts:
                self._close()
        if not self._open:
            self._open = True
            self._ts = timestamp
            self._keyframe = False
            self._buf.clear()
            self._reset()
            if gap:
                try:
                    self._broken = not self._starts_frame(payload, after_loss)
                except PayloadError:
                    self.bad_payloads += 1
                    self._broken = True
            else:
                self._broken = False
        if not self._broken:
            try:
                self._append(payload)
            except PayloadError:
                self.bad_payloads += 1
                self._broken = True
        if marker:
            self._close()

    def flush(self) -> None:
        """End of stream: the frame in progress never saw its marker, so it may lack its tail:
        dropped and counted (a packet of the next timestamp would have proved it whole)."""
        if self._open:
            self._broken = True
            self._close()

    def poll_frame(self) -> Frame | None:
        """The next whole frame, or None when there is none yet."""
        return self._frames.popleft() if self._frames else None

    def _close(self) -> None:
        self._open = False
        if self._broken or not self._buf or not self._complete():
            self.dropped_frames += 1
            return
        self.frames += 1
        self._frames.append(Frame(bytes(self._buf), self._ts, self._keyframe))

    # Codec hooks.
    def _reset(self) -> None:
        """A new frame starts: clear per-frame codec state."""

    def _starts_frame(self, payload: Buffer, after_loss: bool) -> bool:
        """After a gap (``after_loss``) whether this payload provably begins a frame; on the
        stream's first packet whether it looks like it does."""
        raise NotImplementedError

    def _append(self, payload: Buffer) -> None:
        """Add this payload's media to ``_buf`` (and set ``_keyframe``); PayloadError if malformed."""
        raise NotImplementedError

    def _complete(self) -> bool:
        """At the frame's end: whether nothing is left half-done (e.g. an open fragment)."""
        return True


class AudioDepacketizer(Depacketizer):
    """One payload is one frame (Opus RFC 7587 s4.2, G.711 RFC 3551 s4.5.14): loss loses only
    its own packets (counted); late and duplicate packets are ignored."""

    __slots__ = ()

    def push(self, payload: Buffer, seq: int, timestamp: int, marker: bool) -> None:
        if self._sequence(seq) < 0:
            return
        if not payload:
            self.bad_payloads += 1
            return
        self.frames += 1
        self._frames.append(Frame(bytes(payload), timestamp, True))


def check_mtu(mtu: int, least: int) -> None:
    """Our own misuse: an MTU too small for one payload header plus one media byte."""
    if mtu < least:
        raise LocalProtocolError(f"MTU {mtu} leaves no room for media (needs at least {least})")
