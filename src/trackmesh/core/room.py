"""RoomView: one worker's copy of a room's registry entries, shared by its endpoints.

Each worker watches a room's registry prefix once, however many of its endpoints are in the
room, and forwards every entry change to them; each endpoint decides what its client sees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .channel import ChannelHub
from .ids import SessionId
from .model import PeerInfo, TrackInfo
from .registry import BadEntry, Registry, decode_peer, decode_track, parse_key, room_prefix

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .mixer import MixerStage


class RoomView:
    __slots__ = ("_registry", "bad_entries", "endpoints", "name", "peers", "prefix", "stage", "tracks")

    def __init__(self, name: str, registry: Registry, stage: MixerStage | None = None) -> None:
        self.name = name
        self.prefix = room_prefix(name)
        self.peers: dict[str, dict[SessionId, PeerInfo]] = {}
        self.tracks: dict[tuple[str, str], dict[SessionId, TrackInfo]] = {}
        self.endpoints: list[Endpoint] = []
        self.bad_entries = 0
        self._registry = registry
        # Bounded mixer mode (a cluster node): the room's mixer stage lives as long as the view,
        # measuring and reporting this worker's audio levels even without a local listener.
        self.stage = stage

    def start(self) -> None:
        self._registry.watch(self.prefix, self)
        if self.stage is not None:
            self.stage.open()

    def stop(self) -> None:
        self._registry.unwatch(self.prefix, self)
        if self.stage is not None:
            self.stage.close()

    def track(self, peer: str, track: str) -> TrackInfo | None:
        """The track's current info, from its newest publishing session."""
        entries = self.tracks.get((peer, track))
        if not entries:
            return None
        return entries[max(entries)]

    def on_registry_put(self, key: str, value: bytes) -> None:
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

    def on_registry_delete(self, key: str) -> None:
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

    __slots__ = ("_hub", "_node", "_registry", "_worker", "rooms")

    def __init__(
        self, registry: Registry, hub: ChannelHub | None = None, node: int | None = None, worker: int = 0
    ) -> None:
        """``node`` set (with ``hub``): bounded mixer mode, see :mod:`.mixer`."""
        self._registry = registry
        self._hub = hub
        self._node = node
        self._worker = worker
        self.rooms: dict[str, RoomView] = {}

    def enter(self, room: str, endpoint: Endpoint) -> RoomView:
        view = self.rooms.get(room)
        if view is None:
            stage = None
            if self._node is not None and self._hub is not None:
                from .mixer import MixerStage

                stage = MixerStage(room, self._registry, self._hub, self._node, self._worker)
            view = RoomView(room, self._registry, stage)
            self.rooms[room] = view
            view.start()
        # The endpoint replays the view's current entries itself once it is in.
        view.endpoints.append(endpoint)
        return view

    def exit(self, view: RoomView, endpoint: Endpoint) -> None:
        view.endpoints.remove(endpoint)
        if not view.endpoints:
            view.stop()
            del self.rooms[view.name]
