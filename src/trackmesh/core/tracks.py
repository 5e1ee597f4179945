"""RemoteTrack (media a client publishes) and LocalTrack (media the server sends to a client)."""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable

from .channel import ChannelHub, Feedback, FeedbackKind, PublishHandle
from .events import (
    AlternateWanted,
    BitrateTarget,
    EndpointEvent,
    KeyframeRequested,
    LocalTrackStateChanged,
    VoiceActivity,
)
from .model import BitrateLimit, LocalTrackState, MediaCodec, MediaPacket, TrackInfo, TrackKind, TrackSource

# Viewers' key-frame requests are merged: at most one request reaches the publishing client per
# interval, however many viewers (on however many nodes) ask; one that comes sooner is deferred to the
# end of the interval, not dropped. RFC 4585 s3.4 leaves the rate to the implementation. It must be
# above the encoder's own limit: libwebrtc (EncoderRtcpFeedback) ignores a PLI/FIR that comes within
# 300 ms of the last one it acted on, so a deferred request sent exactly 300 ms after the previous one
# is lost whenever it travels a little faster than that one did, and its viewers wait for the next
# retry (1 s). 350 ms leaves 50 ms for that jitter and still keeps a joining viewer's wait short.
KEYFRAME_MIN_INTERVAL = 0.35
# A publisher whose track keeps its last key frame (``cache_keyframes``: a WebRTC encoder, which
# honours key-frame requests at most every 300 ms) answers a viewer that asks within the interval,
# after the key frame asked for last already went by, from that key frame: its packets and every
# packet since are re-sent as a replay (MediaPacket.replay), which only viewers still waiting for a
# key frame take (transports/webrtc/media_out.py). Kept this long after the key frame's first packet
# (a request that comes later finds the interval over and asks the publisher at once), and at most
# this many packets per layer (a 2.5 Mbps layer sends about 100 in 0.35 s).
KEYFRAME_CACHE_AGE = KEYFRAME_MIN_INTERVAL
KEYFRAME_CACHE_PACKETS = 512
# Simulcast layers (MediaPacket.spatial) a key-frame cache keeps; packets of higher ones are not kept.
KEYFRAME_CACHE_LAYERS = 4
# Bitrate targets to the publisher change at most once a second (REMB cadence of browsers).
BITRATE_REPORT_INTERVAL = 1.0
# A viewer's bitrate hint counts for this long; viewers refresh it while they watch.
BITRATE_HINT_TTL = 5.0
#: Seconds a viewer's request for the alternate rendition lasts (its sink repeats it every
#: ALTERNATE_REPEAT while it drops packets of a codec it did not negotiate).
ALTERNATE_TTL = 5.0
ALTERNATE_REPEAT = 1.0
# A LocalTrack that watches voice activity reports at most once per this interval (atm0s: 500 ms).
VOICE_ACTIVITY_INTERVAL = 0.5


ClockSink = Callable[[float, int, int, int], None]


def _clamp(value: int | None, limit: BitrateLimit) -> int | None:
    if value is None:
        return limit.max_bps
    if limit.max_bps is not None:
        value = min(value, limit.max_bps)
    if limit.min_bps is not None:
        value = max(value, limit.min_bps)
    return value


class RemoteTrack:
    """A track a client publishes into its room's channel."""

    __slots__ = (
        "_alternate",
        "_bitrate_dirty",
        "_bitrate_sent",
        "_events",
        "_gop_start",
        "_gops",
        "_handle",
        "_hints",
        "_kf_asked",
        "_kf_at",
        "_last_bitrate_emit",
        "_last_kf",
        "_replay_due",
        "channel",
        "clock_sink",
        "codec",
        "info",
        "keyframe_counts",
        "limit",
        "muted",
        "octets",
        "packets",
    )

    def __init__(
        self, info: TrackInfo, channel: int, events: deque[EndpointEvent], cache_keyframes: bool = False
    ) -> None:
        """``cache_keyframes``: keep the last key frame of each layer for viewers that ask while the
        publisher may not be asked again (a video track from a WebRTC encoder; see KEYFRAME_CACHE_AGE)."""
        self.info = info
        self.channel = channel
        # Who wants the publisher's sender reports (RFC 3550 s6.4.1), the RTP -> NTP time of each
        # of its streams: ``clock_sink(now, spatial, rtp_ts, ntp64)``. A recorder sets it; the
        # receiving transport calls it. Not a channel message: only the node that ingests the track
        # records it, and SRs are rare (about one a second per stream).
        self.clock_sink: ClockSink | None = None
        self.limit = BitrateLimit()
        self.packets = 0
        # Payload bytes and the last packet's codec: read by the console (runtime/console_rpc.py)
        # for the track's bitrate and codec, never per packet.
        self.octets = 0
        self.codec: MediaCodec | None = None
        # Muted by the operator (the console): packets are counted, not forwarded to the room.
        self.muted = False
        self._events = events
        self._handle: PublishHandle | None = None
        self._hints: dict[int, tuple[int, float]] = {}
        self._last_kf = -math.inf
        # The earliest viewer request not answered yet (deferred to the end of the interval); inf: none.
        self._kf_asked = math.inf
        # Key-frame cache (None: not kept): per layer, the last key frame's packets and every one since,
        # the arrival of its first packet, and the arrival of the layer's last key frame.
        self._gops: list[list[MediaPacket] | None] | None = None
        self._gop_start = [0.0] * KEYFRAME_CACHE_LAYERS
        self._kf_at: list[float] = []
        self._replay_due = math.inf  # when a replay of the cache was asked for (inf: none)
        if cache_keyframes and info.kind is TrackKind.VIDEO:
            self._gops = [None] * KEYFRAME_CACHE_LAYERS
        #: Viewers' key-frame requests: received, sent to the publisher, merged into a key frame already
        #: asked for, answered by a replay of the cached key frame (read by tests and stats, never per packet).
        self.keyframe_counts = {"requests": 0, "sent": 0, "merged": 0, "replays": 0, "replayed_packets": 0}
        self._last_bitrate_emit = -math.inf
        self._bitrate_sent: int | None = None
        self._bitrate_dirty = False
        self._alternate: dict[int, float] = {}  # viewers (origin) wanting the alternate -> until

    @property
    def name(self) -> str:
        return self.info.track

    @property
    def kind(self) -> TrackKind:
        return self.info.kind

    def start(self, now: float, hub: ChannelHub) -> None:
        self._handle = hub.start_publish(now, self.channel, self)

    def stop(self, now: float) -> None:
        if self._handle is not None:
            self._handle.stop(now)
            self._handle = None

    def on_packet(self, pkt: MediaPacket) -> None:
        """Hot path: one packet from the client, sent once into the channel."""
        handle = self._handle
        if handle is not None:
            self.packets += 1
            self.octets += len(pkt.payload)
            if pkt.alternate_of is None:  # the track's codec, not its alternate rendition's
                self.codec = pkt.codec
            if self._gops is not None and not pkt.replay:
                self._keep(pkt)
            if not self.muted:
                handle.send(pkt)

    def _keep(self, pkt: MediaPacket) -> None:
        """Key-frame cache: a key frame's first packet starts its layer's cache, later packets join it
        until it is KEYFRAME_CACHE_AGE old or full."""
        gops = self._gops
        layer = pkt.spatial
        if gops is None or layer >= KEYFRAME_CACHE_LAYERS:
            return
        gop = gops[layer]
        # Every packet of a key frame may say so (H.264 IDR fragments): a new cache starts at a key
        # frame with a new timestamp only.
        if pkt.keyframe and (gop is None or gop[0].ts != pkt.ts):
            gops[layer] = [pkt]
            self._gop_start[layer] = pkt.arrival
            kf_at = self._kf_at
            while len(kf_at) <= layer:
                kf_at.append(-math.inf)
            kf_at[layer] = pkt.arrival
        elif gop is not None:
            if pkt.arrival - self._gop_start[layer] > KEYFRAME_CACHE_AGE or len(gop) >= KEYFRAME_CACHE_PACKETS:
                gops[layer] = None
            else:
                gop.append(pkt)

    def set_muted(self, now: float, muted: bool) -> bool:
        """Stop (or resume) forwarding this track to its viewers; True when that changed. A video
        track resuming asks the publisher for a key frame now: its viewers cannot decode before one."""
        if muted == self.muted:
            return False
        self.muted = muted
        if not muted and self.info.kind is TrackKind.VIDEO:
            self._emit_keyframe(now)
        return True

    def set_limit(self, now: float, limit: BitrateLimit) -> None:
        self.limit = limit
        self._bitrate_dirty = True
        self._emit_bitrate(now)

    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        if fb.kind is FeedbackKind.KEYFRAME:
            self._keyframe_wanted(now)
        elif fb.kind is FeedbackKind.ALTERNATE:
            if not self._alternate:
                self._events.append(AlternateWanted(self.info.track, True))
            self._alternate[fb.origin] = now + ALTERNATE_TTL
        else:
            if fb.bitrate_bps > 0:
                self._hints[fb.origin] = (fb.bitrate_bps, now + BITRATE_HINT_TTL)
            else:
                self._hints.pop(fb.origin, None)
            self._bitrate_dirty = True
            self._emit_bitrate(now)

    def _keyframe_wanted(self, now: float) -> None:
        """A viewer needs a key frame. The publisher is asked at most once per KEYFRAME_MIN_INTERVAL; a
        request within the interval waits for its end (RFC 4585 s3.4 leaves the rate to us) and is then
        sent unless a key frame came after it. With a key-frame cache, a request that the key frame
        asked for last will not satisfy (it went by already) is also answered at once from the cache."""
        counts = self.keyframe_counts
        counts["requests"] += 1
        if now >= self._last_kf + KEYFRAME_MIN_INTERVAL:
            self._emit_keyframe(now)
            return
        self._kf_asked = min(self._kf_asked, now)
        if self._gops is None:
            return
        if not self._keyframe_since(self._last_kf):
            counts["merged"] += 1  # the key frame asked for has not come: the viewer starts on it
        elif self._cached(now):
            self._replay_due = min(self._replay_due, now)

    def _keyframe_since(self, t: float) -> bool:
        """A key frame started on every layer that ever sent one at or after ``t`` (cache only)."""
        kf_at = self._kf_at
        return bool(kf_at) and min(kf_at) >= t

    def _cached(self, now: float) -> bool:
        """Every layer that ever sent a key frame has its last one cached, young enough to replay."""
        gops = self._gops
        if gops is None or not self._kf_at:
            return False
        for layer in range(len(self._kf_at)):
            if gops[layer] is None or now - self._gop_start[layer] > KEYFRAME_CACHE_AGE:
                return False
        return True

    def _replay(self, now: float) -> None:
        """Re-send the cached key frames (lowest layer first) as one replay; viewers already playing
        skip it, each waiting viewer starts on its layer's key frame (media_out.OutboundTrack)."""
        self._replay_due = math.inf
        handle, gops = self._handle, self._gops
        if handle is None or gops is None or self.muted or not self._cached(now):
            return
        counts = self.keyframe_counts
        counts["replays"] += 1
        replay = counts["replays"]
        for gop in gops:
            if gop is None:
                continue
            counts["replayed_packets"] += len(gop)
            for pkt in gop:
                # A copy: this input's arrival (the viewers' sinks take it as their ``now``) and the mark.
                handle.send(dataclasses.replace(pkt, arrival=now, replay=replay))

    def _emit_keyframe(self, now: float) -> None:
        self._last_kf = now
        self._kf_asked = math.inf
        self.keyframe_counts["sent"] += 1
        self._events.append(KeyframeRequested(self.info.track))

    def _emit_bitrate(self, now: float) -> None:
        # Compare with the same expression next_deadline() returns, so that firing exactly at
        # the deadline always makes progress (``now - last >= interval`` can round below).
        if not self._bitrate_dirty or now < self._last_bitrate_emit + BITRATE_REPORT_INTERVAL:
            return
        self._bitrate_dirty = False
        # Simulcast/SVC publishers must send what the most demanding viewer can take; smaller
        # viewers pick lower layers (atm0s' DYNAMIC_CONSUMERS mode).
        wanted = max((bps for bps, _ in self._hints.values()), default=None)
        target = _clamp(wanted, self.limit)
        if target is not None and target != self._bitrate_sent:
            self._bitrate_sent = target
            self._last_bitrate_emit = now
            self._events.append(BitrateTarget(self.info.track, target))

    def handle_timeout(self, now: float) -> None:
        if now >= self._replay_due:
            # Not inside the request: a viewer of this worker that just subscribed handles its
            # subscription's events (media_out.OutboundTrack.new_source) before it may take a replay.
            self._replay(now)
        if self._kf_asked != math.inf and now >= self._last_kf + KEYFRAME_MIN_INTERVAL:
            if self._gops is not None and self._keyframe_since(self._kf_asked):
                self._kf_asked = math.inf  # a key frame came after the request: it is answered
            else:
                self._emit_keyframe(now)
        expired = [origin for origin, (_, until) in self._hints.items() if until <= now]
        for origin in expired:
            del self._hints[origin]
        if expired:
            self._bitrate_dirty = True
        self._emit_bitrate(now)
        gone = [origin for origin, until in self._alternate.items() if until <= now]
        for origin in gone:
            del self._alternate[origin]
        if gone and not self._alternate:
            self._events.append(AlternateWanted(self.info.track, False))

    def next_deadline(self) -> float | None:
        deadlines = [until for _, until in self._hints.values()]
        deadlines.extend(self._alternate.values())
        if self._replay_due != math.inf:
            deadlines.append(self._replay_due)  # due already: the next timer run
        if self._kf_asked != math.inf:
            deadlines.append(self._last_kf + KEYFRAME_MIN_INTERVAL)
        if self._bitrate_dirty:
            deadlines.append(self._last_bitrate_emit + BITRATE_REPORT_INTERVAL)
        return min(deadlines, default=None)


MediaSink = Callable[[MediaPacket], None]


class LocalTrack:
    """A slot on which the server sends media to a client, fed from at most one source."""

    __slots__ = (
        "_events",
        "_hub",
        "_last_voice",
        "channel",
        "kind",
        "limit",
        "name",
        "origin",
        "packets",
        "sink",
        "source",
        "state",
        "voice_threshold",
    )

    def __init__(
        self, name: str, kind: TrackKind, origin: int, hub: ChannelHub, events: deque[EndpointEvent]
    ) -> None:
        self.name = name
        self.kind = kind
        self.origin = origin
        self.source: TrackSource | None = None
        self.channel: int | None = None
        self.state = LocalTrackState.INACTIVE
        self.limit = BitrateLimit()
        self.packets = 0
        self.sink: MediaSink | None = None
        #: Set by a transport that reports voice activity (RFC 6464 level, 0 loudest .. 127): a packet at
        #: least this loud emits :class:`~.events.VoiceActivity`, at most every VOICE_ACTIVITY_INTERVAL.
        self.voice_threshold: int | None = None
        self._last_voice = -math.inf
        self._hub = hub
        self._events = events

    def _set_state(self, state: LocalTrackState) -> None:
        if state is not self.state:
            self.state = state
            self._events.append(LocalTrackStateChanged(self.name, state, self.source))

    def attach(self, now: float, source: TrackSource, channel: int) -> None:
        if self.channel is not None:
            self._hub.unsubscribe(now, self.channel, self)
        self.source = source
        self.channel = channel
        # Announce WAITING first: the hub calls on_channel_source(live=True) right away if the
        # source already publishes, which moves the track on to ACTIVE.
        if self.state is LocalTrackState.ACTIVE:
            self.state = LocalTrackState.WAITING
            self._events.append(LocalTrackStateChanged(self.name, LocalTrackState.WAITING, source))
        else:
            self._set_state(LocalTrackState.WAITING)
        self._hub.subscribe(now, channel, self)
        if self.limit.max_bps is not None:
            self._send_bitrate(now)

    def detach(self, now: float) -> None:
        if self.channel is not None:
            self._hub.feedback(now, self.channel, Feedback(FeedbackKind.BITRATE, self.origin, 0))
            self._hub.unsubscribe(now, self.channel, self)
        self.channel = None
        self.source = None
        self._set_state(LocalTrackState.INACTIVE)

    def set_limit(self, now: float, limit: BitrateLimit) -> None:
        self.limit = limit
        if self.channel is not None:
            self._send_bitrate(now)

    def _send_bitrate(self, now: float) -> None:
        assert self.channel is not None
        self._hub.feedback(now, self.channel, Feedback(FeedbackKind.BITRATE, self.origin, self.limit.max_bps or 0))

    def request_keyframe(self, now: float) -> None:
        if self.channel is not None:
            self._hub.feedback(now, self.channel, Feedback(FeedbackKind.KEYFRAME, self.origin))

    def request_alternate(self, now: float) -> None:
        """This viewer cannot decode the source's codec: ask for its alternate rendition (repeat it)."""
        if self.channel is not None:
            self._hub.feedback(now, self.channel, Feedback(FeedbackKind.ALTERNATE, self.origin))

    def refresh(self, now: float) -> None:
        """Re-send this viewer's bitrate hint before it expires at the publisher."""
        if self.channel is not None and self.limit.max_bps is not None:
            self._send_bitrate(now)

    def on_channel_source(self, now: float, channel: int, live: bool) -> None:
        if channel != self.channel:
            return
        if live:
            self._set_state(LocalTrackState.ACTIVE)
            # A viewer can only start decoding at a key frame (RFC 4585 s6.3.1 PLI).
            self.request_keyframe(now)
        else:
            self._set_state(LocalTrackState.WAITING)

    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None:
        """Hot path: one packet of the source, handed to the transport's sink."""
        sink = self.sink
        if sink is not None:
            self.packets += 1
            sink(pkt)
        threshold = self.voice_threshold
        if threshold is not None:
            level = pkt.audio_level
            if level is not None and level <= threshold:
                self._voice(pkt.arrival, level)

    def _voice(self, now: float, level: int) -> None:
        # An event, drained with the endpoint's others after this input: the packet is another
        # connection's, and the transport's control plane (a data channel, say) does not run inside it.
        source = self.source
        if source is not None and now >= self._last_voice + VOICE_ACTIVITY_INTERVAL:
            self._last_voice = now
            self._events.append(VoiceActivity(self.name, source, -level))
