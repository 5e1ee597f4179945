"""Plain data of the media core: kinds, modes, infos and the media packet."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TrackKind(enum.Enum):
    AUDIO = "audio"
    VIDEO = "video"


class InfoMode(enum.Enum):
    """How an endpoint learns about other peers or tracks of its room.

    AUTO: everything in the room, from the moment of joining.
    MANUAL: nothing until the client asks (room subscribe, or peer subscribe for one peer).
    """

    AUTO = "auto"
    MANUAL = "manual"


class LocalTrackState(enum.Enum):
    """State of a LocalTrack (media the server sends to a client).

    INACTIVE: not attached to any source.
    WAITING: attached to a source that is not publishing (yet, or any more).
    ACTIVE: the source publishes and its media reaches this track.
    """

    INACTIVE = "inactive"
    WAITING = "waiting"
    ACTIVE = "active"


class MediaCodec(enum.IntEnum):
    OPUS = 1
    VP8 = 2
    VP9 = 3
    H264 = 4
    PCMA = 5
    PCMU = 6
    AV1 = 7  # forwarded as sent (the AV1 RTP spec's aggregation header): RTMP's av01 today
    H265 = 8  # forwarded as sent (RFC 7798): RTMP's hvc1 (and legacy codec id 12) today


@dataclass(frozen=True, slots=True)
class JoinOptions:
    """Options of a join.

    ``publish_peer``/``publish_tracks`` say whether this peer and its tracks are announced to
    the room (a WHEP viewer announces neither); ``peer_info``/``track_info`` whether the
    endpoint receives other peers' and tracks' info automatically or on request.
    """

    peer_info: InfoMode = InfoMode.AUTO
    track_info: InfoMode = InfoMode.AUTO
    publish_peer: bool = True
    publish_tracks: bool = True
    metadata: str | None = None
    extra_data: str | None = None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    peer: str
    metadata: str | None = None
    extra_data: str | None = None


@dataclass(frozen=True, slots=True)
class TrackInfo:
    peer: str
    track: str
    kind: TrackKind
    metadata: str | None = None
    screen: bool = False


@dataclass(frozen=True, slots=True)
class TrackSource:
    """The remote track a LocalTrack is fed from, named as the room knows it."""

    peer: str
    track: str


@dataclass(frozen=True, slots=True)
class BitrateLimit:
    """Bounds on a track's bitrate in bits per second (``None`` = unbounded)."""

    max_bps: int | None = None
    min_bps: int | None = None


@dataclass(slots=True)
class MediaPacket:
    """One media packet inside the core, protocol neutral: the whole message from a source to its sinks.

    The transport that received it creates exactly one per packet; every LocalTrack sink
    receives the same object and must not mutate it (it rewrites into its own buffer), except to
    fill ``meta`` once. ``payload`` is the codec payload (for RTP: what follows the RTP header).

    ``arrival`` is when the packet reached this node (the receiving driver's monotonic ``now``): a
    viewer's sink runs inside the publisher's input, so this is the ``now`` of everything the packet
    causes downstream (rewriting, rate windows, retransmission ring, TWCC), and what recording or
    another transport needs to pace it. ``meta`` is the payload descriptor parsed from ``payload``
    (VP8, VP9...: see :mod:`trackmesh.transports.webrtc.layers`), filled by the receiving side when
    it parsed it anyway or by the first sink that needs it, so the codec layer parses a packet once
    however many viewers it has; None until then. The core never reads it.
    """

    codec: MediaCodec
    payload_type: int
    seq: int
    ts: int
    marker: bool
    keyframe: bool
    payload: bytes | memoryview
    spatial: int = 0
    temporal: int = 0
    audio_level: int | None = None
    layers: tuple[int, ...] = field(default=())
    # Not part of the packet's identity: the same packet has another arrival on each node it crosses.
    arrival: float = field(default=0.0, compare=False)
    meta: object = field(default=None, compare=False)
    # Nonzero: a copy re-sent from a publisher's GOP cache (RTMP can not be asked for a key frame; a
    # WebRTC encoder not within its rate limit: core/tracks.py KEYFRAME_CACHE_AGE), numbered per replay.
    # Only a viewer that starts on this replay's key frame takes it; viewers already playing have the
    # originals (transports/webrtc/media_out.py).
    replay: int = field(default=0, compare=False)
    # Nonzero: when the source captured this packet's timestamp, on this node's monotonic clock
    # (RTMP: the publisher's own timeline, the same for its audio and video). Viewers' sender
    # reports map timestamps to it instead of to the send time, so a track that waited (AAC
    # transcoded to Opus) stays in sync with one that did not (RFC 3550 s6.4.1). 0: the send time.
    capture: float = field(default=0.0, compare=False)
    # Set: this packet belongs to an alternate rendition of the track for viewers that cannot
    # decode this codec (RTMP: H.264 transcoded from HEVC/AV1/VP9). A viewer that negotiated it
    # drops the alternate and takes the original; the others ask for it (FeedbackKind.ALTERNATE).
    alternate_of: MediaCodec | None = field(default=None, compare=False)
