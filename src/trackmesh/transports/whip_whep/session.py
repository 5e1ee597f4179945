"""The room policy of one WHIP or WHEP connection, on top of a generic :class:`WebRtcPeer` (sans-IO).

The peer is a connection (ICE, DTLS, SRTP, m-lines mapped to core tracks) and knows nothing about rooms; this
session decides what the connection means in its room, the way atm0s-media-server's WHIP and WHEP endpoints do:

- WHIP: join the room, name each m-line the client sends on (``audio_main``, ``video_main``, ...), and publish
  those tracks once media can flow (:meth:`WhipWhepSession.on_connected`);
- WHEP: join invisibly (neither the viewer nor its tracks are announced), create one LocalTrack per m-line the
  client receives on (``audio_0``, ``video_0``, ...) and keep each following the first live track of its kind
  in the room (auto-follow, re-evaluated whenever the room's tracks change).

Driver contract: construct it right after the peer (it raises :class:`SessionSetupError` when the core refuses
the join); call :meth:`~WhipWhepSession.on_connected` on the peer's ``Connected`` event and
:meth:`~WhipWhepSession.on_core_events` instead of ``peer.on_core_events`` when the core marks the endpoint ready.
"""

from __future__ import annotations

import enum

from trackmesh.core.controls import CreateLocalTrack, Join, Publish, Subscribe, Switch
from trackmesh.core.errors import ControlError
from trackmesh.core.events import EndpointEvent, LocalTrackStateChanged, TrackStarted, TrackStopped
from trackmesh.core.model import JoinOptions, TrackKind, TrackSource
from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.webrtc.answer import NegotiatedMedia
from trackmesh.transports.webrtc.peer import WebRtcPeer, receiving, sending

__all__ = ["PeerMode", "SessionSetupError", "WhipWhepSession", "default_local_names", "default_remote_names"]


class PeerMode(enum.Enum):
    """WHIP: the client only publishes; WHEP: it only views (and auto-follows the room)."""

    WHIP = "whip"
    WHEP = "whep"


class SessionSetupError(RemoteProtocolError):
    """The core refused a control the session needs to set itself up (bad room or peer name...)."""

    def __init__(self, error: ControlError) -> None:
        super().__init__(error.message)
        self.error = error


def default_remote_names(media: tuple[NegotiatedMedia, ...]) -> dict[str, str]:
    """WHIP naming (atm0s): the first audio m-line is "audio_main", the first video one
    "video_main"; any further one is "<kind>_<mid>"."""
    names: dict[str, str] = {}
    seen: set[str] = set()
    for m in media:
        if receiving(m):
            names[m.mid] = f"{m.kind}_main" if m.kind not in seen else f"{m.kind}_{m.mid}"
            seen.add(m.kind)
    return names


def default_local_names(media: tuple[NegotiatedMedia, ...]) -> dict[str, str]:
    """WHEP naming: "audio_0", "video_0", then "audio_1"... in m-line order."""
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for m in media:
        if sending(m):
            n = counts.get(m.kind, 0)
            counts[m.kind] = n + 1
            names[m.mid] = f"{m.kind}_{n}"
    return names


class WhipWhepSession:
    """One WHIP or WHEP connection's place in its room. See the module docstring for the driver's calls."""

    __slots__ = ("_follow", "mode", "peer")

    def __init__(self, now: float, peer: WebRtcPeer, mode: PeerMode, room: str, peer_name: str) -> None:
        self.peer = peer
        self.mode = mode
        #: WHEP: (kind, local track) pairs that auto-follow the room.
        self._follow: list[tuple[TrackKind, str]] = []
        endpoint = peer.endpoint
        whep = mode is PeerMode.WHEP
        # A WHEP viewer is invisible in the room: it announces neither itself nor tracks.
        options = JoinOptions(publish_peer=False, publish_tracks=False) if whep else JoinOptions()
        _check(endpoint.control(now, Join(room, peer_name, options)))
        if not whep:
            return
        media = tuple(m for m in peer.answer.media if m.kind in ("audio", "video"))
        for mid, name in default_local_names(media).items():
            m = peer.answer.by_mid(mid)
            assert m is not None  # named from the answer's own m-lines
            kind = TrackKind(m.kind)
            _check(endpoint.control(now, CreateLocalTrack(name, kind)))
            peer.bind_local_track(now, mid, name)
            self._follow.append((kind, name))
        self._follow_sources(now)

    def on_connected(self, now: float) -> None:
        """The peer's ``Connected``: a WHIP client's tracks go live in the room (atm0s publishes on connect,
        so viewers never attach to a track whose media cannot flow yet)."""
        if self.mode is PeerMode.WHIP:
            for track in self.peer.inbound.by_mid.values():
                self.peer.endpoint.control(now, Publish(track.name, TrackKind(track.kind), cache_keyframes=True))

    def on_core_events(self, now: float) -> list[EndpointEvent]:
        """Drain the endpoint through the peer; a change of the room's tracks re-runs the WHEP auto-follow.
        Returns the events neither acts on."""
        rest = self.peer.on_core_events(now)
        room_changed = any(isinstance(ev, LocalTrackStateChanged | TrackStarted | TrackStopped) for ev in rest)
        if room_changed and self._follow and not self.peer.endpoint.closed:
            self._follow_sources(now)
        return rest

    def _follow_sources(self, now: float) -> None:
        """WHEP auto-follow (atm0s): each LocalTrack follows the first live track of its kind
        in the room; when that stops, the next live one; with none, it waits (a republished
        track of the same name resumes through the channel by itself)."""
        endpoint = self.peer.endpoint
        tracks = endpoint.room_tracks()
        for kind, name in self._follow:
            local = endpoint.local_track(name)
            if local is None:
                continue
            live = [t for t in tracks if t.kind is kind]
            if not live:
                continue
            src = local.source
            if src is not None and any(t.peer == src.peer and t.track == src.track for t in live):
                continue
            first = TrackSource(live[0].peer, live[0].track)
            ctl = Subscribe(name, first) if local.channel is None else Switch(name, first)
            endpoint.control(now, ctl)


def _check(err: ControlError | None) -> None:
    if err is not None:
        raise SessionSetupError(err)
