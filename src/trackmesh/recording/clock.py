"""RTP time to wall-clock time, sans-IO.

RTP timestamps are 32-bit counters at the codec's clock rate from a random start (RFC 3550
s5.1); a sender report pairs one of them with the sender's NTP wall clock (RFC 3550 s6.4.1).
Inside one file we keep the RTP timeline (unwrapped), which does not jitter like arrival times
and does not drift against the media. The wall clock is only needed to place a file on the
room's timeline (its start time), and that needs one clock for every track of the room:

- A peer's tracks share the peer's sender clock (one capture clock: audio and video SRs of one
  sender map onto the same NTP time, which is how lip sync is kept across its files).
- The sender's NTP clock is moved onto the node's wall clock once per peer, by the offset seen
  at the first sender report (arrival time minus NTP time, so it includes the one-way delay,
  the same for all of the peer's tracks), so different peers' files line up on the node's clock.
- Before a track's first sender report, its frames are placed by their arrival: the node's wall
  clock at the first packet plus the RTP time elapsed since.
"""

from __future__ import annotations

from typing import Final

__all__ = ["NTP_UNIX_OFFSET", "PeerClock", "TimestampUnwrapper", "TrackClock", "ntp_to_unix"]

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970), RFC 5905 s6.
NTP_UNIX_OFFSET: Final = 2_208_988_800


def ntp_to_unix(ntp64: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point) as Unix seconds."""
    return (ntp64 >> 32) - NTP_UNIX_OFFSET + (ntp64 & 0xFFFFFFFF) / 4_294_967_296.0


class TimestampUnwrapper:
    """32-bit RTP timestamps -> a monotonic-ish 64-bit count (RFC 3550 A.1's idea for sequence
    numbers, applied to timestamps): a step within half the range is forward or backward."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: int | None = None  # may go negative: a late packet from before the first one

    def unwrap(self, ts: int) -> int:
        last = self._last
        if last is None:
            self._last = ts & 0xFFFFFFFF
            return self._last
        delta = (ts - last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        self._last = last + delta
        return self._last


class PeerClock:
    """One sender's clock: the offset from its NTP time to the node's wall clock, fixed at the
    first sender report of any of its tracks (so every track of the peer gets the same one)."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset: float | None = None

    def to_wall(self, sender_ntp: float, arrival_wall: float) -> float:
        if self.offset is None:
            self.offset = arrival_wall - sender_ntp
        return sender_ntp + self.offset


class TrackClock:
    """One track's RTP timeline: unwrapped timestamps, and their wall-clock time."""

    __slots__ = ("_first", "_first_wall", "_peer", "_sr", "rate", "unwrapper")

    def __init__(self, rate: int, peer: PeerClock) -> None:
        self.rate = rate
        self.unwrapper = TimestampUnwrapper()
        self._peer = peer
        self._first: int | None = None
        self._first_wall = 0.0
        # (unwrapped RTP timestamp, node wall time) of the latest sender report.
        self._sr: tuple[int, float] | None = None

    @property
    def synced(self) -> bool:
        """Whether a sender report maps this track's RTP time (else arrival times do)."""
        return self._sr is not None

    def unwrap(self, ts: int, arrival_wall: float) -> int:
        """Unwrap ``ts``; the first one anchors the arrival-based mapping."""
        ext = self.unwrapper.unwrap(ts)
        if self._first is None:
            self._first = ext
            self._first_wall = arrival_wall
        return ext

    def on_sender_report(self, rtp_ts: int, ntp64: int, arrival_wall: float) -> None:
        """A sender report of this track's stream: RTP ``rtp_ts`` was sent at NTP ``ntp64``."""
        # Before any media the report's own timestamp starts the unwrapping (media follows close).
        ext = self.unwrapper.unwrap(rtp_ts)
        self._sr = (ext, self._peer.to_wall(ntp_to_unix(ntp64), arrival_wall))

    def wall_time(self, ext: int) -> float:
        """The node wall-clock time of unwrapped RTP time ``ext``."""
        if self._sr is not None:
            base, wall = self._sr
            return wall + (ext - base) / self.rate
        if self._first is None:
            return 0.0
        return self._first_wall + (ext - self._first) / self.rate
