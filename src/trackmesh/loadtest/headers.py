"""Subscribers counted from the RTP header alone, and which subscribers are fully verified.

Decrypting, hashing and looking up every packet (media.Sink, streams.MultiSink) is most of what one
load-generator process spends per subscriber, so only a sample of subscribers does it
(:class:`VerifyPolicy`): they check SRTP authentication, payload integrity (hash/tag lookup: corrupted,
misrouted, duplicated, reordered) and one-way latency. Every other subscriber is a :class:`HeaderSink`: it
never decrypts. SRTP leaves the RTP header in the clear (RFC 3711 section 3.1), so from the payload
type, sequence number and SSRC it counts packets and bytes per incoming stream, sequence gaps (loss),
duplicates and reordering (RFC 3550 appendix A.1 extended sequence numbers), and the longest silence of
each stream (freeze): what the loss and freeze SLOs need. Its datagrams are read with ``recvfrom_into``
into one shared buffer through a private epoll set (client.HeaderReceiver), not one event-loop reader
per socket.

What a header-only subscriber cannot see: a payload altered in flight, a packet of another stream
under a right-looking header, a server that renumbers sequence numbers to hide a drop (a verified
subscriber sees all three), and latency. Every subscriber's SRTP is still set up (ICE, DTLS), so joins
are measured for all.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from trackmesh.loadtest.recording import VIDEO

__all__ = ["HeaderSink", "VerifyPolicy", "pooled_latencies"]

# version/flags, marker/payload type, sequence number, (timestamp skipped), SSRC: RFC 3550 section 5.1
_HEADER = struct.Struct("!BBH4xI")
_unpack_header = _HEADER.unpack_from
_OFFSET = 0x10000  # extended sequence numbers start one cycle up, so packets older than the first stay >= 0
_KEEP = 4096  # sequence numbers kept below a window's start when a new window trims the bitmaps


@dataclass(frozen=True)
class VerifyPolicy:
    """Which subscribers (by join order, 0-based) decrypt and verify every packet.

    Every subscriber up to ``all_up_to``, then every ``1/share``-th one (spread over the join order, so
    that the sample covers early and late places in the server's fan-out); ``share`` 1 verifies every
    subscriber. With the defaults: 50 of 50, 83 of 375, 145 of 1,000 (at least 20 and at least 10 %).
    """

    all_up_to: int = 50
    share: float = 0.1

    def __post_init__(self) -> None:
        if self.all_up_to < 0 or not 0.0 <= self.share <= 1.0:
            raise ValueError("verify: all_up_to >= 0 and 0 <= share <= 1")

    @property
    def stride(self) -> int:
        """One verified subscriber per this many beyond ``all_up_to`` (0: none)."""
        return round(1 / self.share) if self.share > 0 else 0

    def verified(self, index: int) -> bool:
        if index < self.all_up_to:
            return True
        k = self.stride
        return k > 0 and (index - self.all_up_to) % k == 0

    def group(self, index: int) -> int:
        """The verified subscriber that stands for ``index`` in the latency figures (its own index if verified)."""
        k = self.stride
        if index < self.all_up_to or k == 0:
            return index
        return self.all_up_to + (index - self.all_up_to) // k * k


def pooled_latencies(samples: Iterable[tuple[array[float], int]]) -> list[float]:
    """Latency samples of the verified subscribers, sorted, each repeated by the number of subscribers it stands
    for (itself and the header-only ones of its group, :meth:`VerifyPolicy.group`): the pooled percentiles
    are then those of every subscriber, as if each had measured its own, and the first ``all_up_to``
    (early places in the fan-out) do not outweigh the rest."""
    out: list[float] = []
    for lat, weight in samples:
        for _ in range(weight):
            out.extend(lat)
    out.sort()
    return out


class _Stream:
    """One incoming SSRC: which extended sequence numbers arrived (a bitmap from ``base``)."""

    __slots__ = ("base", "first_at", "gap", "hi_cut", "hi_open", "kind", "last_at", "max_ext", "seen")

    def __init__(self, kind: int, seq: int, now: float) -> None:
        self.kind = kind
        self.base = seq + _OFFSET
        self.max_ext = self.base - 1
        self.hi_open = self.max_ext
        self.hi_cut = self.max_ext
        self.seen = bytearray(_KEEP)
        self.first_at = now
        self.last_at = now
        self.gap = 0.0


class HeaderSink:
    """What one header-only subscriber received: per incoming SSRC, from the RTP header of each SRTP packet.

    ``expected`` is what the subscriber should get, as for streams.MultiSink (stream ids: only their number
    matters here, as SSRCs cannot be attributed to publishers without the payload tag); S1 expects its two
    kinds. A stream never heard counts as total loss and a silence of the whole window.
    """

    def __init__(self, pt_kind: dict[int, int], expected: Iterable[int] = ()) -> None:
        self.pt_kind = pt_kind
        self.expected: set[int] = set(expected)
        self.streams: dict[int, _Stream] = {}
        self.first_at: dict[int, float] = {}
        self.first_arrival: float | None = None
        self.received = 0
        self.bytes = 0
        self.duplicated = 0
        self.reordered = 0
        self.corrupted = 0  # not checked without decrypting (kept for the step totals)
        self.misrouted = 0  # idem
        self.other_pt = 0
        self.lat = array("f")  # latency is measured by verified subscribers only
        self.max_gap = 0.0
        self.window_open = 0.0
        self._received_open = 0

    def expect(self, streams: Iterable[int]) -> None:
        self.expected.update(streams)

    def on_header(self, buf: bytearray, n: int, now: float) -> None:
        """One SRTP packet of ``n`` bytes at the start of ``buf`` (only its clear header is read), arrived ``now``."""
        _b0, b1, seq, ssrc = _unpack_header(buf)
        kind = self.pt_kind.get(b1 & 0x7F)
        if kind is None:
            self.other_pt += 1  # RTX, padding probes, FEC: not media we sent
            return
        st = self.streams.get(ssrc)
        if st is None:
            st = self.streams[ssrc] = _Stream(kind, seq, now)
            self.first_at[ssrc] = now
            if self.first_arrival is None:
                self.first_arrival = now
        top = st.max_ext
        ext = top + ((seq - top + 0x8000) & 0xFFFF) - 0x8000  # RFC 3550 A.1: the nearest to the highest seen
        i = ext - st.base
        if i < 0:
            self.reordered += 1  # older than the first packet of the stream (or of the bitmap kept)
            return
        seen = st.seen
        if i >= len(seen):
            seen.extend(bytes(max(_KEEP, i + 1 - len(seen))))
        elif seen[i]:
            self.duplicated += 1
            return
        seen[i] = 1
        if ext > top:
            st.max_ext = ext
        else:
            self.reordered += 1
        self.received += 1
        self.bytes += n
        g = now - st.last_at  # open_window moves last_at up to the window's start
        if g > st.gap:
            st.gap = g
        st.last_at = now

    # -- windows (the same calls as media.Sink / streams.MultiSink) ----------------------------------

    def all_streams_at(self) -> float | None:
        """When the last expected stream delivered its first packet (None until as many streams as expected)."""
        if not self.expected or len(self.first_at) < len(self.expected):
            return None
        return sorted(self.first_at.values())[len(self.expected) - 1]

    def open_window(self, now: float) -> None:
        self.window_open = now
        self.max_gap = 0.0
        self._received_open = self.received
        for st in self.streams.values():
            st.gap = 0.0
            st.last_at = max(st.last_at, now)
            st.hi_open = st.hi_cut = st.max_ext
            drop = st.max_ext - _KEEP - st.base  # bound the bitmap to about one window
            if drop > 0:
                del st.seen[:drop]
                st.base += drop

    def cut(self) -> None:
        """The end of what the window expects (called ``settle`` before closing, as late packets may still come)."""
        for st in self.streams.values():
            st.hi_cut = st.max_ext

    def window_received(self) -> int:
        """Packets (not duplicates) received since the window opened."""
        return self.received - self._received_open

    def close_window(self, now: float) -> float:
        """Longest silence of any stream during the window (an expected stream never heard: the whole window).
        Also sets ``max_gap``, the same over the video streams only (S1's freeze, as media.Sink)."""
        worst = video = 0.0
        for st in self.streams.values():
            g = max(st.gap, now - max(st.last_at, self.window_open))
            worst = max(worst, g)
            if st.kind == VIDEO:
                video = max(video, g)
        if len(self.streams) < len(self.expected):
            worst = max(worst, now - self.window_open)
            if not any(st.kind == VIDEO for st in self.streams.values()):
                video = max(video, now - self.window_open)
        self.max_gap = video
        return worst

    def loss_streams(self) -> list[float]:
        """Per stream: share of the sequence numbers between the window's start and its cut that never arrived;
        1.0 for each expected stream never heard."""
        out = []
        for st in self.streams.values():
            lo, hi = st.hi_open + 1, st.hi_cut + 1
            if hi <= lo:
                out.append(0.0)  # nothing new in the window: a silence, judged by the freeze SLO
                continue
            got = st.seen[lo - st.base : hi - st.base].count(1)
            out.append(1 - got / (hi - lo))
        out += [1.0] * max(0, len(self.expected) - len(self.streams))
        return out

    def loss_total(self) -> float:
        """All streams together (S1: audio and video, as media.Sink counts every index)."""
        expected = got = 0
        for st in self.streams.values():
            lo, hi = st.hi_open + 1, st.hi_cut + 1
            if hi > lo:
                expected += hi - lo
                got += st.seen[lo - st.base : hi - st.base].count(1)
        if len(self.streams) < len(self.expected):
            return 1.0
        return 1 - got / expected if expected else 0.0
