"""Controls a transport sends to the core on behalf of its client (``Endpoint.control``).

Each transport maps its protocol (SDK requests, WHIP/WHEP calls, RTMP, SIP...) onto these.
"""

from __future__ import annotations

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
)
