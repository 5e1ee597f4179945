"""How a replayed publisher answers PLI and FIR: like an encoder, with the recording's next key frame.

A real sender answers a Picture Loss Indication (RFC 4585 s6.3.1) or a Full Intra Request (RFC 5104
s4.3.1) by encoding its next frame as a key frame. The load generator replays a recording and encodes
nothing, so it does the closest thing: at the next video *frame boundary* after a request it jumps
to the start of the recording's next key frame and carries on from there (the frames in between are
never sent, so they are neither logged nor counted as lost). The wall-clock schedule, RTP sequence
numbers and RTP timestamps stay continuous, as an encoder's would: the publisher shifts its video
time base by the content it skipped.

Encoders rate-limit key frames: libwebrtc's ``EncoderRtcpFeedback`` drops requests that come within
``min_keyframe_send_interval`` (300 ms) of the last one it forwarded to the encoder. ``min_interval``
does the same here, so a storm of joins costs at most one extra key frame per interval.

Sans-IO: ``now`` is an argument; no clock is read here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from trackmesh.loadtest.recording import Packet
from trackmesh.rtp.rtcp import Fir, Pli, RtcpError, parse_rtcp

__all__ = ["KeyframeResponder", "keyframe_requests"]

#: libwebrtc's default key-frame request rate limit (EncoderRtcpFeedback, 300 ms).
DEFAULT_MIN_INTERVAL = 0.3
#: Requests logged per publisher (a run's joins cause tens; the bound keeps a long soak's memory flat).
LOG_MAX = 4096


def keyframe_requests(plain_rtcp: bytes, media_ssrc: int, last_fir_seq: int | None) -> tuple[int, int | None]:
    """How many PLI/FIR for ``media_ssrc`` a decrypted compound RTCP packet carries, and the newest
    FIR command sequence number. A FIR repeating the last sequence number is a retransmission of a
    request already seen (RFC 5104 s4.3.1.2), not a new one. Malformed RTCP counts nothing."""
    try:
        packets = parse_rtcp(plain_rtcp)
    except RtcpError:
        return 0, last_fir_seq
    n = 0
    for pkt in packets:
        if isinstance(pkt, Pli):
            if pkt.media_ssrc == media_ssrc:
                n += 1
        elif isinstance(pkt, Fir):
            for ssrc, seq in pkt.entries:
                if ssrc == media_ssrc and seq != last_fir_seq:
                    last_fir_seq = seq
                    n += 1
    return n, last_fir_seq


class KeyframeResponder:
    """Where to jump in a recording's video packets when a key frame was requested."""

    def __init__(self, video: Sequence[Packet], min_interval: float = DEFAULT_MIN_INTERVAL) -> None:
        self.min_interval = min_interval
        n = len(video)
        #: A frame's packets share one RTP timestamp: a packet whose timestamp differs from the one
        #: before it starts a frame (the first packet of the loop does too).
        self.frame_start = [i == 0 or video[i].ts_offset != video[i - 1].ts_offset for i in range(n)]
        #: First packets of key frames, ascending (``Packet.keyframe`` marks only a frame's first packet).
        self.key_starts = [i for i in range(n) if self.frame_start[i] and video[i].keyframe]
        self.keyframe = [p.keyframe for p in video]
        self.pending = False
        self._last: float | None = None
        self.requests = 0  # PLI/FIR received
        self.honoured = 0  # passed the rate limit
        self.ignored = 0  # within min_interval of the last honoured one
        self.jumps = 0  # frames skipped to reach a key frame
        self.already_key = 0  # the next frame was a key frame anyway
        #: Every request as ``(now, honoured)``, the first LOG_MAX (join phases, loadtest/join_trace.py).
        self.log: list[tuple[float, bool]] = []

    def request(self, now: float) -> bool:
        """A PLI or FIR arrived at ``now``; True if it will be answered with a key frame."""
        self.requests += 1
        if self._last is not None and now - self._last < self.min_interval:
            self.ignored += 1
            if len(self.log) < LOG_MAX:
                self.log.append((now, False))
            return False
        self._last = now
        self.honoured += 1
        if len(self.log) < LOG_MAX:
            self.log.append((now, True))
        self.pending = True
        return True

    def next_index(self, i: int) -> tuple[int, int] | None:
        """Called before sending video packet ``i``: None to send it, or ``(j, wrapped)`` to send packet
        ``j`` instead, ``wrapped`` loops later (0 or 1). Answers a pending request only at a frame start."""
        if not self.pending or not self.frame_start[i]:
            return None
        self.pending = False
        if self.keyframe[i] or not self.key_starts:
            self.already_key += 1  # this frame is a key frame (or the recording has none: nothing to jump to)
            return None
        k = bisect_right(self.key_starts, i)
        self.jumps += 1
        if k < len(self.key_starts):
            return self.key_starts[k], 0
        return self.key_starts[0], 1
