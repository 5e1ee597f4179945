"""Events the core emits to the transport of an endpoint (drained with ``poll_event``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .ids import SessionId
from .model import LocalTrackState, PeerInfo, TrackInfo, TrackKind, TrackSource


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    peer: str
    session: SessionId


@dataclass(frozen=True, slots=True)
class Left:
    room: str
    peer: str


@dataclass(frozen=True, slots=True)
class PeerJoined:
    info: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerUpdated:
    info: PeerInfo


@dataclass(frozen=True, slots=True)
class PeerLeft:
    peer: str


@dataclass(frozen=True, slots=True)
class TrackStarted:
    info: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUpdated:
    info: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackStopped:
    peer: str
    track: str
    kind: TrackKind


@dataclass(frozen=True, slots=True)
class LocalTrackStateChanged:
    local_track: str
    state: LocalTrackState
    source: TrackSource | None


@dataclass(frozen=True, slots=True)
class KeyframeRequested:
    """Viewers of a RemoteTrack want a key frame: ask the client (PLI/FIR). Already merged and
    rate-limited across all viewers of the cluster."""

    track: str


@dataclass(frozen=True, slots=True)
class AlternateWanted:
    """Some viewer of a RemoteTrack cannot decode its codec (``wanted``), or the last such viewer
    stopped asking (ALTERNATE_TTL after its last request): start or stop the alternate rendition."""

    track: str
    wanted: bool


@dataclass(frozen=True, slots=True)
class BitrateTarget:
    """The bitrate the viewers of a RemoteTrack can use (e.g. for REMB to the client)."""

    track: str
    bitrate_bps: int


@dataclass(frozen=True, slots=True)
class MixerSlotSet:
    """Mixer output ``slot`` now carries ``source`` (it may have carried another one before)."""

    slot: int
    source: TrackSource


@dataclass(frozen=True, slots=True)
class MixerSlotUnset:
    slot: int


@dataclass(frozen=True, slots=True)
class VoiceActivity:
    """The source on a LocalTrack speaks: level ``audio_level`` in dBov (-127..0, at least -40); at most one
    per source every 500 ms. Emitted by the audio mixer for its outputs (smoothed level) and by a LocalTrack
    whose ``voice_threshold`` is set (the packet's RFC 6464 level). For the SDK's
    ``receiver[local_track].voice_activity``."""

    local_track: str
    source: TrackSource
    audio_level: int


@dataclass(frozen=True, slots=True)
class MessageChannelMessage:
    """A message published on the room's message channel ``label`` by ``peer``."""

    label: str
    peer: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


EndpointEvent = (
    Joined
    | Left
    | PeerJoined
    | PeerUpdated
    | PeerLeft
    | TrackStarted
    | TrackUpdated
    | TrackStopped
    | LocalTrackStateChanged
    | KeyframeRequested
    | AlternateWanted
    | BitrateTarget
    | MixerSlotSet
    | MixerSlotUnset
    | VoiceActivity
    | MessageChannelMessage
    | Closed
)


class EventQueue(deque[EndpointEvent]):
    """An endpoint's event queue that tells its worker when it stops being empty.

    Events reach an endpoint through other endpoints' actions too (a viewer's subscription
    asks the publisher for a key frame), so the worker keeps the set of endpoints with events
    pending instead of polling every endpoint after every input.
    """

    __slots__ = ("_notify",)

    def __init__(self, notify: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._notify = notify

    def append(self, event: EndpointEvent) -> None:
        if not self and self._notify is not None:
            self._notify()
        super().append(event)
