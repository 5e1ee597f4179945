"""One RTMP publisher in its room (sans-IO): tags in, the peer's RemoteTracks fed.

An :class:`RtmpPublisher` is a peer of a room (``Join(room, peer)`` on a core Endpoint) with the
tracks ``video_main`` and ``audio_main`` (atm0s's names for a publisher's first tracks), published
when their first sequence header arrives. It outlives the TCP connection that feeds it, so an
encoder that reconnects with the same stream key takes the stream over without the room seeing
the peer leave and join again:

- :meth:`attach` starts a connection's *generation*; tags of an older generation are dropped
  (a half-open old connection cannot interleave with the new one). Each generation has its own
  :class:`~.ingest.Ingest` (sequence headers are per connection) but the packetizer state (RTP
  sequence numbers) is the publisher's, so viewers see one continuous stream.
- Timestamps: RTMP's ms clock (already unwrapped past 2^32 and FFmpeg's 2^31 by the session) maps
  to RTP as ms x 90 (video, from the presentation time: RFC 6184 s5.1) and ms x 48 (Opus). The
  first generation keeps the encoder's timeline; a later one is rebased to continue it by the
  wall time that passed (a new encoder restarts at 0: RTP timestamps must not go back).
- :meth:`detach` ends a generation: ``clean`` (FCUnpublish/deleteStream, an operator's DELETE)
  finishes the publisher at once; an abrupt end (connection lost, timeout, protocol error)
  keeps it for ``linger`` seconds waiting for the reconnect, then it finishes.

Video: H.264, HEVC, VP9 and AV1 become RTP through the shared packetizers (``media.py``).
Multitrack (Enhanced RTMP: several renditions of one video, each with its own track id): every
rendition becomes a simulcast layer of ``video_main`` (``MediaPacket.spatial``), ranked by picture
size (H.264: from its SPS; otherwise by track id), lowest = layer 0, at most ``MAX_RENDITIONS``;
viewers then get the layer their bandwidth or cap allows, with no transcode. The ranks are set
from the sequence headers, which encoders send for every track before the first frame.
B-frames (a non-zero composition time; libwebrtc does not reorder, so browsers stutter on them):
``bframes="transcode"`` (default) sends that stream's H.264 through the re-encoder
(:mod:`.video_transcode`, no B-frames) from the first key frame on, as :class:`TranscodeVideo`
outputs the driver runs off its loop and hands back to :meth:`transcoded_video`, and says why
once; ``"reject"`` ends the publish with an onStatus error that names the fix; ``"forward"`` sends
them in decode order with RTP timestamps from the presentation time, warned once and counted.

Key frames: RTMP has no way to ask the encoder for one, so each layer's current GOP (its last key
frame and every video packet since) is kept and a viewer's request (:class:`KeyframeRequested`,
already merged across viewers by the core) replays it with its original sequence numbers and
timestamps (every layer's, lowest first), marked with a replay number (``MediaPacket.replay``): a
viewer that waits for a key frame starts on it at once, viewers already playing skip it (their
sinks check the mark; across a cluster link the mark is not carried, so remote viewers get
duplicates their jitter buffers drop; a viewer switching layers waits for that layer's next key
frame). A GOP over ``gop_max_bytes`` is not kept (such viewers wait for the encoder's next key
frame).

Alternate rendition: a viewer that cannot decode the stream's HEVC, AV1 or VP9 (Chromium has no
HEVC decoder) asks for the alternate (``FeedbackKind.ALTERNATE``, repeated while it wants it; the
core merges the cluster's viewers into :class:`AlternateWanted`). While someone wants it, track 0's
frames also go out as :class:`TranscodeVideo` jobs with ``alternate=True`` (decoded and re-encoded
to H.264 once per stream, off the loop, however many viewers) and come back to
:meth:`alternate_video`: H.264 packets on ``video_main`` marked ``MediaPacket.alternate_of`` (their
own sequence space and GOP), which viewers that negotiated the original codec drop. When the last
such viewer stops asking (the core's TTL), :class:`StopAlternate` tells the driver to drop the coder.

Audio: Opus is forwarded; AAC frames become :class:`TranscodeAudio` outputs for the driver, which
runs :class:`~.aac_opus.AacToOpus` off its loop and hands the Opus packets back to :meth:`opus`.

Sync: every packet carries ``MediaPacket.capture``, its room ms on the publisher's clock mapped to
ours (anchored at the first message, re-anchored when the two drift ``CLOCK_RESYNC`` apart), so
viewers' sender reports tie audio and video to the instant the encoder stamped them, whatever
the transcoders delayed (RFC 3550 s6.4.1): browsers then play them in sync.

Pacing: RTMP delivers a key frame as one message; a frame of more than ``PACE_AT_ONCE`` packets
sends those at once and holds the rest, released in ``PACE_TICKS`` slices ``PACE_INTERVAL``
apart by :meth:`handle_timeout` (the driver schedules :meth:`next_deadline` while
:attr:`pacing`); later frames queue behind them. A replay, takeover or end sends what is held first.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

from trackmesh.codecs.h264 import AvcConfig
from trackmesh.codecs.h264_sps import sps_picture_size
from trackmesh.core.controls import Join, Publish
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ControlError
from trackmesh.core.events import AlternateWanted, KeyframeRequested
from trackmesh.core.model import JoinOptions, MediaCodec, MediaPacket, TrackKind
from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.ingest import (
    AudioFrame,
    BFramesDetected,
    ConfigChanged,
    Ingest,
    IngestOutput,
    UnsupportedCodec,
    VideoFrame,
)
from trackmesh.transports.rtmp.media import RtmpMedia

__all__ = [
    "BridgeOutput",
    "EndPublish",
    "Notice",
    "PublisherSetupError",
    "RtmpPublisher",
    "StopAlternate",
    "TranscodeAudio",
    "TranscodeVideo",
]

VIDEO_TRACK = "video_main"
AUDIO_TRACK = "audio_main"
#: Seconds a publisher whose connection broke waits for its encoder to reconnect.
DEFAULT_LINGER = 5.0
DEFAULT_GOP_MAX_BYTES = 8 * 1024 * 1024
CARRIED_VIDEO = frozenset({"avc1", "hvc1", "vp09", "av01"})
#: Renditions of a multitrack stream carried as simulcast layers (what viewers can tell apart).
MAX_RENDITIONS = 4
BFRAMES_MODES = ("transcode", "forward", "reject")
#: Codecs of track 0 that get an H.264 alternate rendition for viewers that cannot decode them.
ALTERNATE_SOURCES = {"hvc1": MediaCodec.H265, "av01": MediaCodec.AV1, "vp09": MediaCodec.VP9}
#: The alternate's packetizer key in :class:`RtmpMedia` (its own sequence space) and its GOP's key.
ALTERNATE_TRACK = -1
#: Pacing: a video frame's first PACE_AT_ONCE packets (~19 KB at the 1,200-byte MTU: every
#: inter frame of a 6 Mbit/s stream) go at once; a bigger one's rest (a key frame arrives as one
#: RTMP message) is released in PACE_TICKS slices PACE_INTERVAL apart, so a 100 KB key frame
#: leaves over 10 ms instead of in one burst that overflows viewers' queues and sockets.
PACE_AT_ONCE = 16
PACE_INTERVAL = 0.002
PACE_TICKS = 5
#: The capture clock (room ms -> this node's monotonic time) is re-anchored when a frame's time
#: on it is this far (s) from its arrival: an encoder whose clock drifts, or stalled for long.
CLOCK_RESYNC = 2.0
BFRAMES_FIX = "B-frames are not accepted here: set bframes=0 (x264: -bf 0 or -tune zerolatency; OBS: profile baseline)"


class PublisherSetupError(RemoteProtocolError):
    """The core refused the join (bad room or peer name)."""


@dataclass(frozen=True, slots=True)
class TranscodeAudio:
    """An AAC frame for the AAC->Opus transcoder (``ts_ms`` already on the room's timeline)."""

    generation: int
    track_id: int
    config: bytes  # AudioSpecificConfig
    data: bytes
    ts_ms: int


@dataclass(frozen=True, slots=True)
class TranscodeVideo:
    """An access unit for the re-encoder; times on the room's timeline. ``source``: its codec
    (H.264 with B-frames; HEVC/AV1/VP9 for the ``alternate`` rendition)."""

    generation: int
    data: bytes
    dts: int
    pts: int
    keyframe: bool
    source: str = "avc1"
    alternate: bool = False


@dataclass(frozen=True, slots=True)
class StopAlternate:
    """Nobody wants the alternate rendition any more: drop its coder."""

    generation: int


@dataclass(frozen=True, slots=True)
class EndPublish:
    """End this generation's publish with an ``onStatus`` error (the driver closes the connection)."""

    generation: int
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the operator should read once per stream (the driver logs it)."""

    text: str


BridgeOutput = TranscodeAudio | TranscodeVideo | StopAlternate | EndPublish | Notice


class _Gop:
    """One layer's current GOP: its last key frame and every packet since (for replays)."""

    __slots__ = ("bytes", "ok", "packets")

    def __init__(self) -> None:
        self.packets: list[MediaPacket] = []
        self.bytes = 0
        self.ok = False  # it starts on a key frame and is under the cap


def _picture_pixels(config: object) -> int:
    """Width x height from an H.264 sequence header's SPS; 0 when unknown (other codecs)."""
    if isinstance(config, AvcConfig) and config.sps:
        size = sps_picture_size(config.sps[0])
        if size is not None:
            return size[0] * size[1]
    return 0


class _Timeline:
    """A generation's RTMP ms -> the room's ms (see the module docstring)."""

    __slots__ = ("base_in", "base_out")

    def __init__(self, base_in: int, base_out: int) -> None:
        self.base_in = base_in
        self.base_out = base_out

    def __call__(self, ms: int) -> int:
        return self.base_out + ms - self.base_in


class RtmpPublisher:
    def __init__(
        self,
        now: float,
        endpoint: Endpoint,
        room: str,
        peer: str,
        *,
        bframes: str = "transcode",
        linger: float = DEFAULT_LINGER,
        gop_max_bytes: int = DEFAULT_GOP_MAX_BYTES,
        extra_data: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.room = room
        self.peer = peer
        if bframes not in BFRAMES_MODES:
            raise ValueError(f"bframes must be one of {BFRAMES_MODES}, not {bframes!r}")
        self.bframes = bframes
        self.transcoding = False  # this generation's H.264 goes through the re-encoder
        self.alternate_wanted = False  # some viewer cannot decode the codec (AlternateWanted)
        self.linger = linger
        self.gop_max_bytes = gop_max_bytes
        err = endpoint.control(now, Join(room, peer, JoinOptions(extra_data=extra_data)))
        if err is not None:
            raise PublisherSetupError(err.message)
        self.generation = 0
        self.attached = False
        self.finished = False
        self.media = RtmpMedia()
        self._ingest = Ingest()
        self._timeline: _Timeline | None = None
        self._last_out_ms: int | None = None
        self._last_now = now
        self._linger_until: float | None = None
        self._audio_config: dict[int, bytes] = {}
        self._published: set[str] = set()
        self._gops: dict[int, _Gop] = {}  # by spatial layer
        self._renditions: dict[int, int] = {}  # video track id -> picture pixels (0: unknown)
        self._layer_of: dict[int, int] = {}  # video track id -> spatial layer
        self._skipped_tracks: set[int] = set()  # renditions not carried (over the limit, B-frames)
        self._video_fourcc: dict[int, str] = {}  # video track id -> its codec (sequence header)
        self._said: set[str] = set()
        self._out: deque[BridgeOutput] = deque()
        self._clock_base: float | None = None  # monotonic time of room ms 0 (MediaPacket.capture)
        self._pace: deque[MediaPacket] = deque()  # video packets held back (pacing)
        self._pace_at: float | None = None  # when the next slice goes
        self._pace_slice = PACE_AT_ONCE
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "video_frames",
                "audio_frames",
                "packets",
                "bframes",
                "keyframes",
                "gop_replays",
                "gop_replayed_packets",
                "gop_too_big",
                "stale_generation",
                "other_tracks",
                "renditions",
                "not_carried",
                "bad_tags",
                "takeovers",
                "opus_packets",
                "video_to_transcoder",
                "video_transcoded",
                "paced_frames",
                "paced_packets",
                "video_to_alternate",
                "alternate_frames",
            ),
            0,
        )

    # ---- connections ---------------------------------------------------------------------

    def attach(self, now: float) -> int:
        """A connection starts publishing to this peer (the first, or a takeover): its generation."""
        if self.attached:
            self.counters["takeovers"] += 1
        self._release_paced(now, everything=True)  # before the new encoder's packets
        self.generation += 1
        self.attached = True
        self._linger_until = None
        self._ingest = Ingest()
        self._timeline = None
        self.transcoding = False
        self._audio_config.clear()
        self._gops.clear()
        self._renditions.clear()
        self._layer_of.clear()
        self._skipped_tracks.clear()
        self._video_fourcc.clear()
        return self.generation

    def detach(self, now: float, generation: int, clean: bool) -> None:
        """A connection stopped publishing: ``clean`` finishes, else linger for a reconnect."""
        if generation != self.generation or self.finished:
            return
        self.attached = False
        self._release_paced(now, everything=True)
        if clean:
            self.finished = True
        else:
            self._linger_until = now + self.linger

    def next_deadline(self) -> float | None:
        """The linger's end or the next paced slice, whichever comes first."""
        linger, pace = self._linger_until, self._pace_at
        if linger is None or (pace is not None and pace < linger):
            return pace
        return linger

    @property
    def pacing(self) -> bool:
        """Video packets are held back: the driver must (re)schedule :meth:`next_deadline`."""
        return self._pace_at is not None

    def handle_timeout(self, now: float) -> None:
        self._release_paced(now)
        if self._linger_until is not None and now >= self._linger_until and not self.attached:
            self._linger_until = None
            self.finished = True

    def take_outputs(self) -> list[BridgeOutput]:
        out = list(self._out)
        self._out.clear()
        return out

    # ---- media in ------------------------------------------------------------------------

    def _room_ms(self, now: float, ms: int) -> int:
        timeline = self._timeline
        if timeline is None:
            last = self._last_out_ms
            if last is None:
                timeline = _Timeline(ms, ms)  # the first encoder's own timeline
            else:
                gap = max(1, round((now - self._last_now) * 1000))
                timeline = _Timeline(ms, last + gap)
            self._timeline = timeline
        out = timeline(ms)
        if self._last_out_ms is None or out > self._last_out_ms:
            self._last_out_ms = out
            self._last_now = now
        base = self._clock_base
        if base is None or abs(base + out / 1000 - now) > CLOCK_RESYNC:
            # RTMP messages are stamped by the encoder's clock: the first one (or one far off
            # after a drift or a stall) anchors it to ours. Audio and video share the anchor.
            self._clock_base = now - out / 1000
        return out

    def _capture(self, ms: int) -> float:
        """Room ms -> when the encoder captured it, on this node's clock (``MediaPacket.capture``)."""
        base = self._clock_base
        return base + ms / 1000 if base is not None else 0.0

    def video(self, now: float, generation: int, timestamp: int, payload: bytes) -> None:
        if generation != self.generation:
            self.counters["stale_generation"] += 1
            return
        try:
            outputs = self._ingest.video(timestamp, payload)
        except RtmpError:
            self.counters["bad_tags"] += 1
            return
        for item in outputs:
            self._on_ingest(now, item)

    def audio(self, now: float, generation: int, timestamp: int, payload: bytes) -> None:
        if generation != self.generation:
            self.counters["stale_generation"] += 1
            return
        try:
            outputs = self._ingest.audio(timestamp, payload)
        except RtmpError:
            self.counters["bad_tags"] += 1
            return
        for item in outputs:
            self._on_ingest(now, item)

    def opus(self, now: float, generation: int, ts48: int, payload: bytes) -> None:
        """An Opus packet from the transcoder (``ts48``: 48 kHz on the room's timeline)."""
        if generation != self.generation or self.finished:
            self.counters["stale_generation"] += 1
            return
        self.counters["opus_packets"] += 1
        self._send_audio(AudioFrame("Opus", 0, ts48 // 48, payload), now)

    def _say(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._out.append(Notice(text))

    def _publish(self, now: float, name: str, kind: TrackKind) -> None:
        if name in self._published:
            return
        err: ControlError | None = self.endpoint.control(now, Publish(name, kind))
        if err is None:
            self._published.add(name)
        else:
            self._say(f"publish {name}", f"cannot publish {name}: {err.message}")

    def _on_ingest(self, now: float, item: IngestOutput) -> None:
        if isinstance(item, VideoFrame):
            if item.track_id in self._skipped_tracks or item.track_id not in self._layer_of:
                self.counters["other_tracks"] += 1
                return
            self._on_video_frame(now, item)
        elif isinstance(item, AudioFrame):
            if item.track_id != 0:
                self.counters["other_tracks"] += 1
                return
            self.counters["audio_frames"] += 1
            ms = self._room_ms(now, item.timestamp)
            if item.fourcc == "mp4a":
                config = self._audio_config.get(item.track_id)
                if config is not None:
                    self._out.append(TranscodeAudio(self.generation, item.track_id, config, item.data, ms))
            else:
                self._send_audio(AudioFrame(item.fourcc, 0, ms, item.data), now)
        elif isinstance(item, ConfigChanged):
            if item.kind == "video":
                if item.fourcc in CARRIED_VIDEO:
                    self._video_fourcc[item.track_id] = item.fourcc
                    self._rendition(item.track_id, _picture_pixels(item.config))
                    self._publish(now, VIDEO_TRACK, TrackKind.VIDEO)
                else:
                    carried = "H.264, HEVC, VP9, AV1 are"
                    self._say("video codec", f"video {item.fourcc} is not carried into rooms ({carried})")
            elif item.track_id == 0:
                if item.fourcc == "mp4a" and isinstance(item.config, bytes):
                    self._audio_config[item.track_id] = item.config
                self._publish(now, AUDIO_TRACK, TrackKind.AUDIO)
        elif isinstance(item, BFramesDetected):
            if self.bframes == "reject":
                self._out.append(EndPublish(self.generation, "NetStream.Publish.BadName", BFRAMES_FIX))
            elif self.bframes == "transcode" and item.track_id != 0:
                # One re-encoder per stream: a further rendition with B-frames is left out.
                self._skipped_tracks.add(item.track_id)
                self._say(
                    f"bframes {item.track_id}",
                    f"B-frames in rendition {item.track_id}: not carried (only track 0 is re-encoded); "
                    "publish with bframes=0 (docs/rtmp.md)",
                )
            elif self.bframes == "transcode" and self._video_fourcc.get(0) != "avc1":
                # The re-encoder decodes H.264 only: HEVC with B-frames goes as sent, and says so.
                self._say(
                    "bframes",
                    f"B-frames in {self._video_fourcc.get(0)} (composition time {item.composition_time} ms): "
                    "forwarded in decode order (only H.264 is re-encoded); browsers may stutter. "
                    "Publish with bframes=0 (docs/rtmp.md)",
                )
            elif self.bframes == "transcode":
                self.transcoding = True
                self._say(
                    "bframes",
                    f"B-frames (composition time {item.composition_time} ms): re-encoding this stream's video "
                    "to H.264 without B-frames (costs CPU; publish with bframes=0 to avoid it, docs/rtmp.md)",
                )
            else:
                self._say(
                    "bframes",
                    f"B-frames (composition time {item.composition_time} ms): forwarded in decode order; "
                    "browsers may stutter. Publish with bframes=0 (docs/rtmp.md)",
                )
        elif isinstance(item, UnsupportedCodec):
            self._say(f"codec {item.kind}", f"{item.kind} codec {item.name} is not carried into rooms")

    def _on_video_frame(self, now: float, frame: VideoFrame) -> None:
        if frame.pts != frame.dts:
            self.counters["bframes"] += 1
            if self.bframes == "reject":
                return  # EndPublish is on its way
        pts = self._room_ms(now, frame.pts)
        dts = pts - (frame.pts - frame.dts)
        if self.transcoding and frame.fourcc == "avc1" and frame.track_id == 0:
            self.counters["video_to_transcoder"] += 1
            self._out.append(TranscodeVideo(self.generation, frame.data, dts, pts, frame.keyframe))
            return
        self._send_video(now, VideoFrame(frame.fourcc, frame.track_id, dts, pts, frame.keyframe, frame.data))
        if self.alternate_wanted and frame.track_id == 0 and frame.fourcc in ALTERNATE_SOURCES:
            self._say(
                "alternate",
                f"a viewer cannot decode {ALTERNATE_SOURCES[frame.fourcc].name}: transcoding this stream's video "
                "to H.264 for such viewers (one transcode shared by all of them, stopped when the last leaves; "
                "costs CPU)",
            )
            self.counters["video_to_alternate"] += 1
            job = TranscodeVideo(self.generation, frame.data, dts, pts, frame.keyframe, frame.fourcc, True)
            self._out.append(job)

    @property
    def alternate_running(self) -> bool:
        """The H.264 alternate rendition is being made (track 0 is HEVC/AV1/VP9 and a viewer wants it)."""
        return self.alternate_wanted and self.attached and self._video_fourcc.get(0) in ALTERNATE_SOURCES

    def _on_alternate_wanted(self, wanted: bool) -> None:
        """The core merged the viewers' requests: the next HEVC/AV1/VP9 frames go to the coder
        too (said once, with the first), or its coder goes (whatever the codec: a generation before
        may have had one)."""
        if wanted != self.alternate_wanted:
            self.alternate_wanted = wanted
            if not wanted:
                self._out.append(StopAlternate(self.generation))

    def alternate_video(self, now: float, generation: int, pts: int, keyframe: bool, data: bytes) -> None:
        """A frame of the H.264 alternate rendition (``pts``: ms on the room's timeline)."""
        source = self._video_fourcc.get(0)
        if generation != self.generation or self.finished or source not in ALTERNATE_SOURCES:
            self.counters["stale_generation"] += 1
            return
        self.counters["alternate_frames"] += 1
        frame = VideoFrame("avc1", ALTERNATE_TRACK, pts, pts, keyframe, data)
        self._send_video(now, frame, ALTERNATE_SOURCES[source])

    def _rendition(self, track_id: int, pixels: int) -> None:
        """A video track's sequence header: (re)rank the renditions into simulcast layers."""
        if track_id not in self._renditions and len(self._renditions) >= MAX_RENDITIONS:
            if track_id not in self._skipped_tracks:
                self._skipped_tracks.add(track_id)
                text = f"multitrack: rendition {track_id} is over {MAX_RENDITIONS}: not carried"
                self._say(f"rendition {track_id}", text)
            return
        self._renditions[track_id] = pixels
        known = all(self._renditions.values())
        order = sorted(self._renditions, key=lambda t: (self._renditions[t] if known else 0, t))
        self._layer_of = {t: i for i, t in enumerate(order)}
        self.counters["renditions"] = len(order)
        if len(order) > 1:
            self._say(
                f"multitrack {len(order)}",
                f"multitrack video: {len(order)} renditions carried as simulcast layers of {VIDEO_TRACK}",
            )

    def transcoded_video(self, now: float, generation: int, pts: int, keyframe: bool, data: bytes) -> None:
        """A frame from the B-frame re-encoder (``pts``: ms on the room's timeline)."""
        if generation != self.generation or self.finished:
            self.counters["stale_generation"] += 1
            return
        self.counters["video_transcoded"] += 1
        self._send_video(now, VideoFrame("avc1", 0, pts, pts, keyframe, data))

    def _send_video(self, now: float, room_frame: VideoFrame, alternate_of: MediaCodec | None = None) -> None:
        frame = room_frame
        spatial = self._layer_of.get(frame.track_id, 0)
        packets = self.media.video(room_frame, now, self._capture(frame.pts), spatial, alternate_of)
        if not packets:
            self.counters["not_carried"] += 1
            return
        self.counters["video_frames"] += 1
        gop_key = ALTERNATE_TRACK if alternate_of is not None else spatial
        gop = self._gops.get(gop_key)
        if gop is None:
            gop = self._gops[gop_key] = _Gop()
        if frame.keyframe:
            self.counters["keyframes"] += 1
            gop.packets.clear()
            gop.bytes = 0
            gop.ok = True
        if gop.ok:
            gop.packets.extend(packets)
            gop.bytes += sum(len(p.payload) for p in packets)
            if gop.bytes > self.gop_max_bytes:
                self.counters["gop_too_big"] += 1
                gop.packets.clear()
                gop.ok = False
        track = self.endpoint.remote_track(VIDEO_TRACK)
        if track is None:
            return
        self.counters["packets"] += len(packets)
        pace = self._pace
        if not pace:
            if len(packets) <= PACE_AT_ONCE:
                for pkt in packets:
                    track.on_packet(pkt)
                return
            for pkt in packets[:PACE_AT_ONCE]:
                track.on_packet(pkt)
            packets = packets[PACE_AT_ONCE:]
            self._pace_at = now + PACE_INTERVAL
        # Behind what is held already (one sequence space), all of it gone within PACE_TICKS.
        self.counters["paced_frames"] += 1
        self.counters["paced_packets"] += len(packets)
        pace.extend(packets)
        self._pace_slice = max(PACE_AT_ONCE, -(-len(pace) // PACE_TICKS))

    def _release_paced(self, now: float, everything: bool = False) -> None:
        """Send the held video packets that are due (all of them with ``everything``)."""
        pace = self._pace
        if not pace:
            self._pace_at = None
            return
        track = self.endpoint.remote_track(VIDEO_TRACK)
        while pace and self._pace_at is not None and (everything or now >= self._pace_at):
            for _ in range(min(self._pace_slice, len(pace))):
                pkt = pace.popleft()
                pkt.arrival = now  # viewers' sinks take it as their now (MediaPacket.arrival)
                if track is not None:
                    track.on_packet(pkt)
            self._pace_at += PACE_INTERVAL
        if not pace:
            self._pace_at = None

    def _send_audio(self, frame: AudioFrame, now: float) -> None:
        packets = self.media.audio(frame, now, self._capture(frame.timestamp))
        track = self.endpoint.remote_track(AUDIO_TRACK)
        if track is None or not packets:
            return
        self.counters["packets"] += len(packets)
        for pkt in packets:
            track.on_packet(pkt)

    # ---- the room's requests -------------------------------------------------------------

    def on_core_events(self, now: float) -> None:
        """Drain the endpoint: a key-frame request replays the GOP; the rest needs no answer."""
        endpoint = self.endpoint
        while (event := endpoint.poll_event()) is not None:
            if isinstance(event, KeyframeRequested) and event.track == VIDEO_TRACK:
                self.replay_gop(now)
            elif isinstance(event, AlternateWanted) and event.track == VIDEO_TRACK:
                self._on_alternate_wanted(event.wanted)

    def replay_gop(self, now: float) -> None:
        self._release_paced(now, everything=True)  # the originals before their copies
        track = self.endpoint.remote_track(VIDEO_TRACK)
        gops = [self._gops[layer] for layer in sorted(self._gops)]
        packets = [pkt for gop in gops if gop.ok for pkt in gop.packets]
        if track is None or not packets:
            return
        self.counters["gop_replays"] += 1
        self.counters["gop_replayed_packets"] += len(packets)
        replay = self.counters["gop_replays"]
        for pkt in packets:
            # A copy with this input's arrival (viewers' sinks take it as their ``now``) and mark.
            track.on_packet(dataclasses.replace(pkt, arrival=now, replay=replay))
