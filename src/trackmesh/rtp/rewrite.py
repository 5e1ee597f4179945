"""Sequence number and timestamp rewriting for one outgoing (viewer) RTP stream.

An SFU switches a viewer between sources (simulcast layers, active speakers). The viewer's
decoder and jitter buffer see a single SSRC, so the outgoing sequence numbers must stay
contiguous and the timestamps monotonic across switches (RFC 7667 s3.7 discusses this
"media switching mixer" topology). Sequence numbers are unwrapped to 64-bit counters the way
RFC 3550 appendix A.1 extends them with a cycle count, so 16-bit and 32-bit wraparound are
handled by arithmetic on plain ints.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SeqTsRewriter", "SeqUnwrapper", "extend_seq", "extend_ts"]

_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32


def extend_seq(highest: int, seq: int) -> int:
    """Extend a 16-bit ``seq`` to the value nearest the extended ``highest`` (A.1 cycles)."""
    delta = (seq - highest) & 0xFFFF
    if delta >= 0x8000:
        delta -= _SEQ_MOD
    return highest + delta


def extend_ts(highest: int, ts: int) -> int:
    """Extend a 32-bit RTP timestamp to the value nearest the extended ``highest``."""
    delta = (ts - highest) & 0xFFFFFFFF
    if delta >= 0x80000000:
        delta -= _TS_MOD
    return highest + delta


class SeqUnwrapper:
    """Turns a stream of 16-bit sequence numbers into extended (unbounded) ones.

    The first value seeds the counter at ``seq + 2**16`` so that a little reordering right
    at the start cannot produce negative extended numbers.
    """

    __slots__ = ("highest",)

    def __init__(self) -> None:
        self.highest = -1

    def unwrap(self, seq: int) -> int:
        if self.highest < 0:
            self.highest = seq + _SEQ_MOD
            return self.highest
        ext = extend_seq(self.highest, seq)
        if ext > self.highest:
            self.highest = ext
        return ext

    def peek(self, seq: int) -> int:
        """Extend without advancing the highest value seen."""
        if self.highest < 0:
            return seq + _SEQ_MOD
        return extend_seq(self.highest, seq)


class SeqTsRewriter:
    """Maps (ssrc, seq, ts) from switching sources to one continuous outgoing seq/ts space.

    Within one source the mapping is a constant offset, so reordered packets keep their
    relative order and retransmissions map to the same outgoing numbers. On a switch (a new
    source SSRC) the first packet gets ``last_out_seq + 1`` and a timestamp advanced by the
    wall time elapsed since the last forwarded packet (at least one tick, so timestamps stay
    strictly increasing across the switch). Packets of the new source older than the switch
    point are dropped. The caller feeds only packets of the source it has selected: any
    SSRC other than the current one is taken as a switch.
    """

    __slots__ = (
        "_clock_rate",
        "_last_now",
        "_last_out_ts",
        "_max_ts_gap",
        "_out_highest",
        "_seq_offset",
        "_source",
        "_src_base",
        "_src_highest",
        "_ts_offset",
        "dropped",
        "switches",
    )

    def __init__(
        self,
        clock_rate: int,
        *,
        initial_seq: int | None = None,
        initial_ts: int | None = None,
        max_ts_gap: float = 5.0,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        self._clock_rate = clock_rate
        # max_ts_gap caps the jump after a long pause so a viewer's jitter buffer does not
        # interpret a source that was idle for minutes as a huge discontinuity.
        self._max_ts_gap = max_ts_gap
        self._source = -1
        self._src_base = 0  # extended input seq of the first packet after the switch
        self._src_highest = 0  # highest extended input seq of the current source
        self._seq_offset = 0  # extended out = extended in + offset
        self._ts_offset = 0  # out ts = (in ts + offset) mod 2**32
        self._out_highest = -1 if initial_seq is None else _SEQ_MOD + initial_seq - 1
        self._last_out_ts = -1 if initial_ts is None else (initial_ts - 1) & 0xFFFFFFFF
        self._last_now = 0.0
        self.switches = 0
        self.dropped = 0

    @property
    def source_ssrc(self) -> int | None:
        return None if self._source < 0 else self._source

    @property
    def last_seq(self) -> int | None:
        """The highest outgoing 16-bit sequence number sent, if any."""
        return None if self._out_highest < 0 else self._out_highest & 0xFFFF

    def rewrite(self, ssrc: int, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Return the outgoing (seq, ts) for this packet, or None to drop it."""
        if ssrc != self._source:
            self._switch(ssrc, seq, ts, now)
            out_ext = self._out_highest
        else:
            # extend_seq inlined (once per packet per viewer).
            hi = self._src_highest
            delta = (seq - hi) & 0xFFFF
            if delta >= 0x8000:
                delta -= _SEQ_MOD
            ext = hi + delta
            if ext < self._src_base:
                # Older than the switch point: its outgoing slot would collide with numbers
                # already used for the previous source.
                self.dropped += 1
                return None
            out_ext = ext + self._seq_offset
            if ext > hi:
                self._src_highest = ext
                self._out_highest = out_ext
                self._last_out_ts = (ts + self._ts_offset) & 0xFFFFFFFF
                self._last_now = now
        return (out_ext & 0xFFFF, (ts + self._ts_offset) & 0xFFFFFFFF)

    def _switch(self, ssrc: int, seq: int, ts: int, now: float) -> None:
        ext = seq + _SEQ_MOD
        # The very first packet passes through unchanged unless initial values were given:
        # there is nothing yet to be continuous with.
        out_ext = ext if self._out_highest < 0 else self._out_highest + 1
        if self._last_out_ts < 0:
            out_ts = ts
        elif self._source < 0:
            out_ts = (self._last_out_ts + 1) & 0xFFFFFFFF  # the configured initial_ts
        else:
            elapsed = min(max(now - self._last_now, 0.0), self._max_ts_gap)
            step = max(1, round(elapsed * self._clock_rate))
            out_ts = (self._last_out_ts + step) & 0xFFFFFFFF
        self._source = ssrc
        self._src_base = ext
        self._src_highest = ext
        self._seq_offset = out_ext - ext
        self._ts_offset = (out_ts - ts) & 0xFFFFFFFF
        self._out_highest = out_ext
        self._last_out_ts = out_ts
        self._last_now = now
        self.switches += 1
