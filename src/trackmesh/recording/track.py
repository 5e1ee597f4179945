"""One track's recorder, sans-IO: RTP packets in, file segments and their samples out.

Fed each packet of the track (``on_packet``), its sender reports (``on_sender_report``) and the
clock (``handle_timeout`` at ``next_deadline``); drained with ``poll`` of :class:`SegmentStart`,
:class:`Sample`, :class:`StartRefined` and :class:`SegmentEnd`. ``now`` is the node's wall clock
in seconds, always a parameter.

Rules, in the order a packet meets them:

1. **Layer.** A simulcast track carries several RTP streams (``spatial`` 0, 1, ...), each with its
   own sequence numbers and timestamps: the highest layer seen is recorded. A higher one appearing
   ends the segment (its timeline is another stream's) and recording resumes on its key frame.
2. **Order.** A reorder buffer (:mod:`.reorder`) waits up to ``reorder_wait`` for a late or
   retransmitted packet before the gap counts as loss.
3. **Frames.** The codec's depacketizer (:mod:`trackmesh.codecs`) reassembles whole frames and
   drops incomplete ones. A loss, a bad payload or a frame that fails :func:`.frames.plausible`
   makes a video track **wait for the next key frame**: the frames after a loss reference what
   was lost, so writing them would write a broken picture.
4. **Parameter sets.** An H.264/HEVC key frame gets the latest SPS/PPS (VPS) put in front when it
   lacks them; one that cannot get them is not a usable key frame.
5. **Segments.** A segment (one file) starts on a key frame (audio: any frame) and ends on a codec
   change, a layer change, after ``max_segment`` seconds (the next one starts at once on a key
   frame: nothing is lost between them) and at ``stop``. Sample times count RTP time from the
   segment's first frame (strictly increasing); the segment's wall-clock start comes from the
   track's :class:`~.clock.TrackClock`, refined by each later sender report that moves it by
   more than :data:`START_TOLERANCE` (:class:`StartRefined`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

from trackmesh.codecs.payload import Depacketizer
from trackmesh.codecs.registry import depacketizer

from .clock import PeerClock, TrackClock
from .frames import ParameterSets, frame_size, opus_channels, plausible
from .reorder import ReorderBuffer

__all__ = [
    "CONTAINERS",
    "RecorderOutput",
    "Sample",
    "SegmentEnd",
    "SegmentStart",
    "StartRefined",
    "TrackRecorder",
]

#: Codec -> container: WebM for VP8/VP9/AV1/Opus, (fragmented) MP4 for H.264/HEVC.
CONTAINERS: Final = {"vp8": "webm", "vp9": "webm", "av1": "webm", "opus": "webm", "h264": "mp4", "h265": "mp4"}
_RATES: Final = {"opus": 48_000}
_VIDEO_RATE: Final = 90_000
#: A sender report that moves a segment's start by more than this (seconds) is told (StartRefined).
START_TOLERANCE: Final = 0.02
#: Names the codec registry and SDP use for the same codec.
_ALIASES: Final = {"hevc": "h265"}


@dataclass(frozen=True, slots=True)
class SegmentStart:
    index: int
    codec: str
    container: str
    rate: int  # sample times are in 1/rate seconds
    start_wall: float  # node wall-clock time of the first sample
    synced: bool  # start_wall comes from a sender report (else from arrival times)
    width: int = 0
    height: int = 0
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Sample:
    pts: int
    data: bytes
    keyframe: bool


@dataclass(frozen=True, slots=True)
class StartRefined:
    """The open segment's start, as the latest sender report places it."""

    start_wall: float


@dataclass(frozen=True, slots=True)
class SegmentEnd:
    reason: str
    duration: float  # seconds from the first to the last sample


RecorderOutput = SegmentStart | Sample | StartRefined | SegmentEnd


class TrackRecorder:
    """Counters: ``frames`` written, ``skipped_frames`` (waiting for a key frame),
    ``bad_frames`` (failed the plausibility check or lacked parameter sets), ``other_layers``
    (packets of a lower simulcast layer), ``segments`` started; the depacketizer's and reorder
    buffer's own counters are summed in :meth:`counters`."""

    def __init__(
        self,
        video: bool,
        peer_clock: PeerClock,
        max_segment: float = 3600.0,
        reorder_wait: float = 0.25,
        first_index: int = 0,
    ) -> None:
        """``first_index`` numbers the first segment (a track republished in the same session
        continues its numbering)."""
        self.video = video
        self.max_segment = max_segment
        self._reorder_wait = reorder_wait
        self._peer_clock = peer_clock
        self._out: deque[RecorderOutput] = deque()
        self._codec = ""
        self._layer = -1
        self._depack: Depacketizer | None = None
        self._reorder: ReorderBuffer[tuple[int, bool, bytes]] = ReorderBuffer(reorder_wait)
        self._clock = TrackClock(_VIDEO_RATE, peer_clock)
        self._params: ParameterSets | None = None
        self._need_key = True
        self._losses = 0
        # The open segment: its first frame's unwrapped RTP time, the last sample's pts.
        self._open = False
        self._synced = False
        self._start = 0.0
        self._base = 0
        self._last_pts = -1
        self._index = first_index
        self._arrival = 0.0
        self.frames = 0
        self.skipped_frames = 0
        self.bad_frames = 0
        self.other_layers = 0
        self.segments = 0
        self.unsupported = 0
        self._past: dict[str, int] = {}
        self._early_sr: tuple[float, int, int, int] | None = None

    # ---- inputs --------------------------------------------------------------------------------

    def on_packet(
        self, now: float, codec: str, seq: int, ts: int, marker: bool, payload: bytes, spatial: int = 0
    ) -> None:
        """One RTP packet of the track; ``codec`` its encoding name ("VP8", "opus", "H264"...)."""
        if spatial < self._layer:
            self.other_layers += 1
            return
        codec = codec.lower()
        codec = _ALIASES.get(codec, codec)
        if spatial > self._layer or codec != self._codec:
            if codec not in CONTAINERS:
                self.unsupported += 1  # e.g. G.711: no container takes it without a transcode
                return
            reason = "codec change" if codec != self._codec else "layer change"
            self._restart(now, codec, spatial, reason)
        self._arrival = now
        self._reorder.push(now, seq, (ts, marker, payload))
        self._release(now)

    def on_sender_report(self, now: float, spatial: int, rtp_ts: int, ntp64: int) -> None:
        """A sender report of layer ``spatial``'s stream (RFC 3550 s6.4.1)."""
        if self._layer < 0:
            self._early_sr = (now, spatial, rtp_ts, ntp64)  # before the first packet: kept for it
            return
        if spatial != self._layer:
            return
        self._clock.on_sender_report(rtp_ts, ntp64, now)
        if self._open:
            # Every report refines the open segment's start: a sender's first reports can lag its
            # media (GStreamer's, while it sends the backlog of its start-up in a burst), later ones
            # are steady. Told only when it moves by more than START_TOLERANCE.
            start = self._clock.wall_time(self._base)
            if not self._synced or abs(start - self._start) > START_TOLERANCE:
                self._synced = True
                self._start = start
                self._out.append(StartRefined(start))

    @property
    def needs_keyframe(self) -> bool:
        """A video track that is waiting for a key frame (at its start, or after loss or garbage):
        the driver asks the publisher for one (a PLI through the channel's feedback path)."""
        return self.video and self._need_key and self._depack is not None

    def handle_timeout(self, now: float) -> None:
        self._release(now)

    def next_deadline(self) -> float | None:
        return self._reorder.deadline()

    def stop(self, now: float, reason: str = "stopped") -> None:
        """The track ended: what is held is released, the open segment ends."""
        depack = self._depack
        if depack is not None:
            for seq, (ts, marker, payload) in self._reorder.drain():
                self._feed(now, depack, seq, ts, marker, payload)
            depack.flush()
            self._drain_frames(now, depack)
        self._end(reason)

    def poll(self) -> RecorderOutput | None:
        return self._out.popleft() if self._out else None

    def counters(self) -> dict[str, int]:
        out = {
            "frames": self.frames,
            "skipped_frames": self.skipped_frames,
            "bad_frames": self.bad_frames,
            "other_layers": self.other_layers,
            "segments": self.segments,
            "unsupported_packets": self.unsupported,
            "late_packets": self._reorder.late,
            "lost_packets": self._reorder.skipped,
        }
        for name, value in self._past.items():
            out[name] = out.get(name, 0) + value
        depack = self._depack
        if depack is not None:
            out["dropped_frames"] = out.get("dropped_frames", 0) + depack.dropped_frames
            out["bad_payloads"] = out.get("bad_payloads", 0) + depack.bad_payloads
        return out

    # ---- internals -----------------------------------------------------------------------------

    def _restart(self, now: float, codec: str, layer: int, reason: str) -> None:
        """A new codec or layer: a new stream with its own numbering, timeline and segment."""
        old = self._depack
        if old is not None:
            self._past["dropped_frames"] = self._past.get("dropped_frames", 0) + old.dropped_frames
            self._past["bad_payloads"] = self._past.get("bad_payloads", 0) + old.bad_payloads
            self._past["late_packets"] = self._past.get("late_packets", 0) + self._reorder.late
            self._past["lost_packets"] = self._past.get("lost_packets", 0) + self._reorder.skipped
            self.stop(now, reason)
        self._codec = codec
        self._layer = layer
        self._depack = depacketizer(codec)
        self._reorder = ReorderBuffer(self._reorder_wait)
        self._clock = TrackClock(_RATES.get(codec, _VIDEO_RATE), self._peer_clock)
        self._params = ParameterSets(codec == "h265") if codec in ("h264", "h265") else None
        self._need_key = True
        self._losses = 0
        early = self._early_sr
        if early is not None:
            self._early_sr = None
            self.on_sender_report(*early)

    def _release(self, now: float) -> None:
        depack = self._depack
        if depack is None:
            return
        while (got := self._reorder.pop(now)) is not None:
            seq, (ts, marker, payload) = got
            self._feed(now, depack, seq, ts, marker, payload)

    def _feed(self, now: float, depack: Depacketizer, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        depack.push(payload, seq, ts, marker)
        losses = depack.lost_packets + depack.dropped_frames + depack.bad_payloads
        if losses != self._losses:
            self._losses = losses
            if self.video:
                self._need_key = True
        self._drain_frames(now, depack)

    def _drain_frames(self, now: float, depack: Depacketizer) -> None:
        while (frame := depack.poll_frame()) is not None:
            self._on_frame(now, frame.data, frame.timestamp, frame.keyframe)

    def _on_frame(self, now: float, data: bytes, ts: int, keyframe: bool) -> None:
        codec = self._codec
        ext = self._clock.unwrap(ts, now)
        if not plausible(codec, data, keyframe):
            self.bad_frames += 1
            self._need_key = self.video
            return
        if self.video:
            if self._need_key and not keyframe:
                self.skipped_frames += 1
                return
            if keyframe and self._params is not None:
                completed = self._params.complete_keyframe(data)
                if completed is None:
                    self.bad_frames += 1
                    self._need_key = True
                    return
                data = completed
            self._need_key = False
        if self._open and (ext - self._base) / self._clock.rate >= self.max_segment and (keyframe or not self.video):
            self._end("max file duration")
        if not self._open:
            self._begin(codec, ext, data)
        pts = ext - self._base
        if pts <= self._last_pts:
            pts = self._last_pts + 1  # a repeated or backward timestamp: keep the file's order strict
        self._last_pts = pts
        self.frames += 1
        self._out.append(Sample(pts, data, keyframe or not self.video))

    def _begin(self, codec: str, ext: int, first: bytes) -> None:
        self._open = True
        self._base = ext
        self._last_pts = -1
        self._synced = self._clock.synced
        self._start = self._clock.wall_time(ext)
        width, height = frame_size(codec, first) if self.video else (0, 0)
        channels = 0 if self.video else opus_channels(first)
        start = SegmentStart(
            self._index,
            codec,
            CONTAINERS[codec],
            self._clock.rate,
            self._clock.wall_time(ext),
            self._synced,
            width,
            height,
            channels,
        )
        self._index += 1
        self.segments += 1
        self._out.append(start)

    def _end(self, reason: str) -> None:
        if not self._open:
            return
        self._open = False
        self._out.append(SegmentEnd(reason, max(self._last_pts, 0) / self._clock.rate))
