"""Per-stream matching for many publishers (S2 meeting, S3 audio only).

With one publisher (S1) a payload hash identifies a packet. With many publishers replaying the same
recording it does not, so each publisher *tags* its payloads: the last 4 bytes of every payload are
overwritten with ``(publisher id: u16, loop number mod 4: u8, kind: u8)`` (:func:`tag_payload`).
The bytes stay the same length; nothing decodes them (neither the generator nor an SFU, which only
reads the VP8 descriptor and the first bytes of the VP8 payload header, left alone: a payload too
short to keep them gets the tag appended instead, 4 bytes longer, counted in
``StreamLog.lengthened``). Keys repeat only every 4 loops (40 s), which bounds the key table.

:class:`StreamLog` maps each key to ``(send time, stream, sequence in stream)``; a stream is one
(publisher, track): ``stream = 2 * publisher + kind``. :class:`MultiSink` is one subscriber's view:
for each packet it decrypted it looks the key up and attributes it to its stream, counting per
stream what arrived (a bitmap by sequence), duplicates, reordering (a sequence below the highest seen
in *that* stream), packets of streams it should not get (``misrouted``), and, per incoming SSRC,
payloads that match nothing sent (``corrupted``). Loss over a window is per stream, from the
sequence numbers sent in the window.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Iterable

from trackmesh.loadtest.recording import AUDIO, VIDEO, payload_key, vp8_descriptor_length

__all__ = ["MultiSink", "StreamLog", "stream_id", "tag_payload"]

_TAG = struct.Struct("!HBB")
_VP8_HEADER = 10  # RFC 6386 s9.1: 3-byte frame tag + 7-byte key-frame start code and size


def stream_id(publisher: int, kind: int) -> int:
    return 2 * publisher + kind


def tag_payload(payload: bytes, publisher: int, loop: int, kind: int) -> bytes:
    """The payload with its last 4 bytes replaced by the tag; a payload too short for that gets it appended."""
    keep = (vp8_descriptor_length(payload) + _VP8_HEADER) if kind == VIDEO else 1
    tag = _TAG.pack(publisher & 0xFFFF, loop & 3, kind)
    if len(payload) < keep + _TAG.size:
        return payload + tag
    return payload[: -_TAG.size] + tag


class StreamLog:
    """Every tagged packet any publisher sent: key -> (send time, stream, seq); send times per stream."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, tuple[float, int, int]] = {}
        self.times: dict[int, array[float]] = {}
        self.lengthened = 0
        self.total = 0

    def record(self, key: bytes, stream: int, t: float) -> None:
        times = self.times.get(stream)
        if times is None:
            times = self.times[stream] = array("d")
        self.by_key[key] = (t, stream, len(times))
        times.append(t)
        self.total += 1

    def count(self, stream: int) -> int:
        times = self.times.get(stream)
        return len(times) if times is not None else 0

    def seq_at(self, stream: int, t: float) -> int:
        """First sequence of ``stream`` sent at or after ``t``."""
        times = self.times.get(stream)
        return bisect_left(times, t) if times is not None else 0


def vp8_keyframe_start(payload: bytes | memoryview) -> bool:
    """The first packet of a VP8 key frame: start of partition 0 (RFC 7741 s4.2: S set, PID 0) and the
    frame tag's P bit clear (RFC 6386 s9.1)."""
    if len(payload) < 1 or (payload[0] & 0x17) != 0x10:
        return False
    d = vp8_descriptor_length(payload)
    return 0 < d < len(payload) and not payload[d] & 0x01


def rtp_payload_bounds(plain: bytes) -> tuple[int, int]:
    """Where a decrypted RTP packet's payload starts and ends: after CSRCs and the header extension (RFC 3550
    s5.3.1), before the padding. ``start >= end`` means no payload (or a lying header)."""
    b0 = plain[0]
    off = 12 + 4 * (b0 & 0x0F)
    end = len(plain)
    if b0 & 0x10:
        off += 4 + 4 * int.from_bytes(plain[off + 2 : off + 4], "big")
    if b0 & 0x20:
        end -= plain[-1]
    return off, end


class MultiSink:
    """What one subscriber received from every stream it expects."""

    def __init__(self, log: StreamLog, pt_kind: dict[int, int], expected: Iterable[int] = ()) -> None:
        self.by_key = log.by_key
        self.pt_kind = pt_kind
        self.expected: set[int] = set(expected)
        self.seen: dict[int, bytearray] = {}
        self.last_seq: dict[int, int] = {}
        self.first_seq: dict[int, int] = {}
        self.first_at: dict[int, float] = {}
        #: Per video stream, when the first packet of a VP8 key frame arrived (join phases: a server that
        #: forwards from any packet delivers the stream's first packet before its first key frame).
        self.first_key_at: dict[int, float] = {}
        self.first_key_sent: dict[int, float] = {}  # when the publisher sent that packet (wall clock)
        self.last_at: dict[int, float] = {}
        self.gap: dict[int, float] = {}
        self.duplicated: dict[int, int] = {}
        self.reordered: dict[int, int] = {}
        self.corrupted_by_ssrc: dict[int, int] = {}
        self.misrouted = 0
        self.other_pt = 0
        self.received = 0
        self.first_arrival: float | None = None
        self.lat = array("f")
        self.window_open = 0.0

    def expect(self, streams: Iterable[int]) -> None:
        self.expected.update(streams)

    @property
    def corrupted(self) -> int:
        return sum(self.corrupted_by_ssrc.values())

    def all_streams_at(self) -> float | None:
        """When the last expected stream delivered its first packet (None until all have)."""
        if not self.expected or any(s not in self.first_at for s in self.expected):
            return None
        return max(self.first_at[s] for s in self.expected)

    def open_window(self, now: float) -> None:
        self.lat = array("f")
        self.window_open = now
        self.gap = {}

    def close_window(self, now: float) -> float:
        """Longest silence of any expected stream during the window (a stream never heard: the whole window)."""
        worst = 0.0
        for s in self.expected:
            last = max(self.last_at.get(s, self.window_open), self.window_open)
            worst = max(worst, self.gap.get(s, 0.0), now - last)
        return worst

    def on_rtp(self, plain: bytes, now: float) -> None:
        off, end = rtp_payload_bounds(plain)
        kind = self.pt_kind.get(plain[1] & 0x7F)
        if kind is None:
            self.other_pt += 1  # RTX, padding probes, FEC: not media we sent
            return
        entry = self.by_key.get(payload_key(kind, memoryview(plain)[off:end])) if off < end else None
        if entry is None:
            ssrc = int.from_bytes(plain[8:12], "big")
            self.corrupted_by_ssrc[ssrc] = self.corrupted_by_ssrc.get(ssrc, 0) + 1
            return
        sent_at, stream, seq = entry
        if stream not in self.expected:
            self.misrouted += 1
            return
        seen = self.seen.get(stream)
        if seen is None:
            seen = self.seen[stream] = bytearray(1 << 12)
        if seq >= len(seen):
            seen.extend(bytes(max(1 << 12, seq + 1 - len(seen))))
        if seen[seq]:
            self.duplicated[stream] = self.duplicated.get(stream, 0) + 1
            return
        seen[seq] = 1
        if self.first_arrival is None:
            self.first_arrival = now
        if stream not in self.first_seq:
            self.first_seq[stream] = seq
            self.first_at[stream] = now
        if kind == VIDEO and stream not in self.first_key_at and vp8_keyframe_start(memoryview(plain)[off:end]):
            self.first_key_at[stream] = now
            self.first_key_sent[stream] = sent_at
        last = self.last_seq.get(stream, -1)
        if seq < last:
            self.reordered[stream] = self.reordered.get(stream, 0) + 1
        else:
            self.last_seq[stream] = seq
        self.received += 1
        self.lat.append(now - sent_at)
        prev = self.last_at.get(stream)
        if prev is not None:
            g = now - max(prev, self.window_open)
            if g > self.gap.get(stream, 0.0):
                self.gap[stream] = g
        self.last_at[stream] = now

    def loss(self, log: StreamLog, t0: float, t1: float) -> dict[int, float]:
        """Per expected stream: share of the sequences sent in [t0, t1) that never arrived."""
        out: dict[int, float] = {}
        for s in self.expected:
            lo, hi = log.seq_at(s, t0), log.seq_at(s, t1)
            first = self.first_seq.get(s)
            if first is None:
                out[s] = 1.0 if hi > lo else 0.0
                continue
            lo = max(lo, first)
            if hi <= lo:
                out[s] = 0.0
                continue
            seen = self.seen.get(s, bytearray())
            out[s] = 1 - seen[lo:hi].count(1) / (hi - lo)
        return out


def kind_of(stream: int) -> int:
    return AUDIO if stream % 2 == 0 else VIDEO
