"""RoomView: one worker's copy of a room's registry entries, shared by its endpoints.

Each worker watches a room's registry prefix once, however many of its endpoints are in the
room, and forwards every entry change to them; each endpoint decides what its client sees.

A view knows its members only as :class:`RoomMember` (the two entry callbacks), and makes the
room's mixer stage with the factory the worker hands in, so this module imports neither the
endpoint nor the mixer at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .ids import SessionId
from .model import PeerInfo, TrackInfo, TrackKind
from .registry import BadEntry, Registry, decode_peer, decode_track, parse_key, room_prefix

if TYPE_CHECKING:
    from .mixer.stage import MixerStage

#: Makes the mixer stage of one room on this worker (given the room's name).
StageFactory = Callable[[str], "MixerStage"]


class RoomMember(Protocol):
    """What a RoomView needs of the endpoints in it: the registry entry changes of the room."""

    def on_peer_entry(self, session: SessionId, peer: str, info: PeerInfo | None) -> None: ...

    def on_track_entry(
        self, session: SessionId, peer: str, track: str, info: TrackInfo | None, kind: TrackKind = ...
    ) -> None: ...


class RoomView:
    __slots__ = (
        "_new_stage",
        "_registry",
        "_shared_stage",
        "bad_entries",
        "endpoints",
        "name",
        "peers",
        "prefix",
        "stage",
        "tracks",
    )

    def __init__(
        self, name: str, registry: Registry, new_stage: StageFactory | None = None, *, bounded: bool = False
    ) -> None:
        """``new_stage``: makes the room's mixer stage (None: no mixer in this room)."""
        self.name = name
        self.prefix = room_prefix(name)
        self.peers: dict[str, dict[SessionId, PeerInfo]] = {}
        self.tracks: dict[tuple[str, str], dict[SessionId, TrackInfo]] = {}
        self.endpoints: list[RoomMember] = []
        self.bad_entries = 0
        self._registry = registry
        self._new_stage = new_stage
        # Bounded mixer mode (a cluster node): the room's mixer stage lives as long as the view,
        # measuring and reporting this worker's audio levels even without a local listener.
        self.stage: MixerStage | None = new_stage(name) if bounded and new_stage is not None else None
        # Otherwise the stage is made for the first listener and shared by the later ones (it
        # unwatches the room by itself while it has no listener).
        self._shared_stage: MixerStage | None = None

    def mixer_stage(self) -> MixerStage | None:
        """The room's mixer stage on this worker, one shared by all its listeners; None when the
        view has no stage factory."""
        if self.stage is not None:
            return self.stage
        if self._shared_stage is None and self._new_stage is not None:
            self._shared_stage = self._new_stage(self.name)
        return self._shared_stage

    def start(self, now: float) -> None:
        self._registry.watch(now, self.prefix, self)
        if self.stage is not None:
            self.stage.open(now)

    def stop(self, now: float) -> None:
        self._registry.unwatch(self.prefix, self)
        if self.stage is not None:
            self.stage.close(now)

    def track(self, peer: str, track: str) -> TrackInfo | None:
        """The track's current info, from its newest publishing session."""
        entries = self.tracks.get((peer, track))
        if not entries:
            return None
        return entries[max(entries)]

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        try:
            parsed = parse_key(key)
            if parsed.track is None:
                info = decode_peer(parsed, value)
                self.peers.setdefault(parsed.peer, {})[parsed.session] = info
                for ep in self.endpoints:
                    ep.on_peer_entry(parsed.session, info.peer, info)
            else:
                tinfo = decode_track(parsed, value)
                self.tracks.setdefault((parsed.peer, parsed.track), {})[parsed.session] = tinfo
                for ep in self.endpoints:
                    ep.on_track_entry(parsed.session, tinfo.peer, tinfo.track, tinfo)
        except BadEntry:
            # Another node wrote something we cannot read (a newer version?): skip it, count it.
            self.bad_entries += 1

    def on_registry_delete(self, now: float, key: str) -> None:
        try:
            parsed = parse_key(key)
        except BadEntry:
            self.bad_entries += 1
            return
        if parsed.track is None:
            sessions = self.peers.get(parsed.peer)
            if sessions is None or sessions.pop(parsed.session, None) is None:
                return
            if not sessions:
                del self.peers[parsed.peer]
            for ep in self.endpoints:
                ep.on_peer_entry(parsed.session, parsed.peer, None)
        else:
            tkey = (parsed.peer, parsed.track)
            tsessions = self.tracks.get(tkey)
            if tsessions is None:
                return
            old = tsessions.pop(parsed.session, None)
            if old is None:
                return
            if not tsessions:
                del self.tracks[tkey]
            for ep in self.endpoints:
                ep.on_track_entry(parsed.session, parsed.peer, parsed.track, None, old.kind)


class RoomDirectory:
    """The RoomViews of one worker, created on first join and dropped after the last leave."""

    __slots__ = ("_bounded", "_new_stage", "_registry", "rooms")

    def __init__(self, registry: Registry, new_stage: StageFactory | None = None, *, bounded: bool = False) -> None:
        """``new_stage``: the worker's mixer stage factory; ``bounded``: each view owns its stage for its
        whole life (bounded mixer mode, a cluster node: see :mod:`.mixer`)."""
        self._registry = registry
        self._new_stage = new_stage
        self._bounded = bounded
        self.rooms: dict[str, RoomView] = {}

    def enter(self, now: float, room: str, member: RoomMember) -> RoomView:
        view = self.rooms.get(room)
        if view is None:
            view = RoomView(room, self._registry, self._new_stage, bounded=self._bounded)
            self.rooms[room] = view
            view.start(now)
        # The member replays the view's current entries itself once it is in.
        view.endpoints.append(member)
        return view

    def exit(self, now: float, view: RoomView, member: RoomMember) -> None:
        view.endpoints.remove(member)
        if not view.endpoints:
            view.stop(now)
            del self.rooms[view.name]
