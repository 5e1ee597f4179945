"""Controls a transport sends to the core on behalf of its client (``Endpoint.control``).

Each transport maps its protocol (SDK requests, WHIP/WHEP calls, RTMP, SIP...) onto these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .model import BitrateLimit, JoinOptions, TrackKind, TrackSource


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    peer: str
    options: JoinOptions = field(default_factory=JoinOptions)


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class UpdatePeer:
    metadata: str | None


@dataclass(frozen=True, slots=True)
class RoomSubscribe:
    pass


@dataclass(frozen=True, slots=True)
class RoomUnsubscribe:
    pass


@dataclass(frozen=True, slots=True)
class PeerSubscribe:
    peer: str


@dataclass(frozen=True, slots=True)
class PeerUnsubscribe:
    peer: str


@dataclass(frozen=True, slots=True)
class Publish:
    track: str
    kind: TrackKind
    metadata: str | None = None
    screen: bool = False
    #: A video publisher that answers key-frame requests like an encoder (WebRTC): the track keeps its
    #: last key frame for viewers that ask while it may not be asked again (core/tracks.py).
    cache_keyframes: bool = False


@dataclass(frozen=True, slots=True)
class UpdateTrack:
    track: str
    metadata: str | None


@dataclass(frozen=True, slots=True)
class Unpublish:
    track: str


@dataclass(frozen=True, slots=True)
class SetRemoteBitrate:
    """Cap the bitrate asked of the client for one of its published tracks."""

    track: str
    limit: BitrateLimit


@dataclass(frozen=True, slots=True)
class CreateLocalTrack:
    """Declare a slot the server sends media on (e.g. one WHEP or SDK receiver)."""

    local_track: str
    kind: TrackKind


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Feed a LocalTrack from a RemoteTrack of the room (it must not be attached yet)."""

    local_track: str
    source: TrackSource


@dataclass(frozen=True, slots=True)
class Switch:
    """Feed an attached LocalTrack from another source."""

    local_track: str
    source: TrackSource


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    local_track: str


@dataclass(frozen=True, slots=True)
class SetLocalBitrate:
    """The bitrate this viewer can take on a LocalTrack, hinted to the source's publisher."""

    local_track: str
    limit: BitrateLimit


@dataclass(frozen=True, slots=True)
class RequestKeyframe:
    local_track: str


class MixerMode(enum.Enum):
    """AUTO: every audio track of the room is a source. MANUAL: only the sources attached."""

    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class MixerConfig:
    """Turn on this endpoint's audio mixer (the SDK's ``features.mixer`` of the join).

    ``outputs`` name existing, unattached audio LocalTracks, in slot order (slot i is
    ``outputs[i]``); ``sources`` are the initial sources in MANUAL mode (ignored in AUTO).
    The mixer lasts until Leave.
    """

    mode: MixerMode
    outputs: tuple[str, ...]
    sources: tuple[TrackSource, ...] = ()


@dataclass(frozen=True, slots=True)
class MixerAttach:
    """Add sources to a MANUAL mixer (already attached ones are ignored)."""

    sources: tuple[TrackSource, ...]


@dataclass(frozen=True, slots=True)
class MixerDetach:
    """Remove sources from a MANUAL mixer (unknown ones are ignored); their slots are freed."""

    sources: tuple[TrackSource, ...]


@dataclass(frozen=True, slots=True)
class MessageChannelStartPub:
    """Allow this endpoint to publish on the room's message channel ``label`` (idempotent)."""

    label: str


@dataclass(frozen=True, slots=True)
class MessageChannelStopPub:
    label: str


@dataclass(frozen=True, slots=True)
class MessageChannelSub:
    """Receive MessageChannelMessage events for ``label`` (idempotent)."""

    label: str


@dataclass(frozen=True, slots=True)
class MessageChannelUnsub:
    label: str


@dataclass(frozen=True, slots=True)
class MessageChannelPub:
    """Send ``data`` to every subscriber of ``label`` in the room (needs StartPub first)."""

    label: str
    data: bytes


Control = (
    Join
    | Leave
    | UpdatePeer
    | RoomSubscribe
    | RoomUnsubscribe
    | PeerSubscribe
    | PeerUnsubscribe
    | Publish
    | UpdateTrack
    | Unpublish
    | SetRemoteBitrate
    | CreateLocalTrack
    | Subscribe
    | Switch
    | Unsubscribe
    | SetLocalBitrate
    | RequestKeyframe
    | MixerConfig
    | MixerAttach
    | MixerDetach
    | MessageChannelStartPub
    | MessageChannelStopPub
    | MessageChannelSub
    | MessageChannelUnsub
    | MessageChannelPub
)
