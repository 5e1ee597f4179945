"""Endpoint: one transport connection's view of the media core, bound to a (room, peer).

The transport calls :meth:`Endpoint.control` with a control from :mod:`.controls` and gets
``None`` or a typed :class:`ControlError` back; it drains :meth:`Endpoint.poll_event` after
every input. Media arrives on ``RemoteTrack.on_packet`` and leaves through each
``LocalTrack.sink``.

Cascades (each is a test in tests/core/test_endpoint.py):
- leaving unpublishes every track of the endpoint (registry entries deleted, channels
  stopped), so every LocalTrack fed by them turns WAITING and every viewer of the room gets
  TrackStopped and PeerLeft; the endpoint's own LocalTracks are detached (INACTIVE);
- two sessions of the same (room, peer) own separate registry entries and are independent;
- a track republished under the same name resumes for the LocalTracks still attached to it;
- leaving drops the endpoint's audio mixer (:mod:`.mixer`, its outputs go INACTIVE) and its
  message-channel publications and subscriptions (:mod:`.message_channel`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .audit import EndpointAudit
from .channel import ChannelHub
from .controls import (
    Control,
    CreateLocalTrack,
    Join,
    Leave,
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelStopPub,
    MessageChannelSub,
    MessageChannelUnsub,
    MixerAttach,
    MixerConfig,
    MixerDetach,
    MixerMode,
    PeerSubscribe,
    PeerUnsubscribe,
    Publish,
    RequestKeyframe,
    RoomSubscribe,
    RoomUnsubscribe,
    SetLocalBitrate,
    SetRemoteBitrate,
    Subscribe,
    Switch,
    Unpublish,
    Unsubscribe,
    UpdatePeer,
    UpdateTrack,
)
from .errors import ControlError, ErrorCode
from .events import (
    Closed,
    EndpointEvent,
    EventQueue,
    Joined,
    Left,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    TrackStarted,
    TrackStopped,
    TrackUpdated,
)
from .ids import SessionId, channel_id
from .message_channel import MessageChannels
from .mixer import MAX_MANUAL_SOURCES, MAX_SLOTS
from .mixer.listener import AudioMixer
from .mixer.stage import MixerStage
from .model import InfoMode, JoinOptions, PeerInfo, TrackInfo, TrackKind, TrackSource
from .registry import Registry, encode_peer, encode_track, peer_key, room_key, track_key
from .room import RoomDirectory, RoomView
from .tracks import LocalTrack, RemoteTrack

MAX_NAME_LEN = 128
# Viewers re-send their bitrate hint well inside the publisher's BITRATE_HINT_TTL.
HINT_REFRESH_INTERVAL = 2.0


def _bad_name(what: str, name: object) -> ControlError | None:
    if not isinstance(name, str) or not name:
        return ControlError(ErrorCode.INVALID_NAME, f"{what} name must be a non-empty string")
    if len(name) > MAX_NAME_LEN:
        return ControlError(ErrorCode.INVALID_NAME, f"{what} name is longer than {MAX_NAME_LEN} characters")
    if not name.isprintable():
        return ControlError(ErrorCode.INVALID_NAME, f"{what} name has control characters")
    return None


class Endpoint:
    __slots__ = (
        "_audit",
        "_events",
        "_hub",
        "_msgs",
        "_next_refresh",
        "_peer_subs",
        "_registry",
        "_room",
        "_room_subscribed",
        "_rooms",
        "_seen_peers",
        "_seen_tracks",
        "_view",
        "app",
        "closed",
        "conn_id",
        "local_tracks",
        "mixer",
        "options",
        "peer",
        "remote_tracks",
        "session",
    )

    def __init__(
        self,
        session: SessionId,
        conn_id: str,
        registry: Registry,
        hub: ChannelHub,
        rooms: RoomDirectory,
        on_events: Callable[[Endpoint], None] | None = None,
        audit: EndpointAudit | None = None,
        app: str = "",
    ) -> None:
        """``app``: the app (tenant) of the connection's token; its rooms are that app's only
        (registry.room_key), "" the single-tenant app."""
        self.session = session
        self.app = app
        self._room: str | None = None
        self._audit = audit
        self.conn_id = conn_id
        self.peer: str | None = None
        self.options = JoinOptions()
        self.remote_tracks: dict[str, RemoteTrack] = {}
        self.local_tracks: dict[str, LocalTrack] = {}
        self.closed = False
        self._registry = registry
        self._hub = hub
        self._rooms = rooms
        self._view: RoomView | None = None
        self._events: deque[EndpointEvent] = EventQueue(
            (lambda: on_events(self)) if on_events is not None else None
        )
        self._room_subscribed = False
        self._peer_subs: set[str] = set()
        self._seen_peers: dict[str, dict[SessionId, PeerInfo]] = {}
        self._seen_tracks: dict[tuple[str, str], dict[SessionId, TrackInfo]] = {}
        self._next_refresh: float | None = None
        self.mixer: AudioMixer | None = None
        self._msgs = MessageChannels(hub, self._events)

    # ---- queries -------------------------------------------------------------------------

    @property
    def room(self) -> str | None:
        """The room's name as the client gave it (None before a join)."""
        return self._room

    @property
    def room_key(self) -> str | None:
        """The room's identity in the core: its name scoped by this endpoint's app (registry.room_key)."""
        return self._view.name if self._view is not None else None

    def poll_event(self) -> EndpointEvent | None:
        return self._events.popleft() if self._events else None

    def remote_track(self, name: str) -> RemoteTrack | None:
        return self.remote_tracks.get(name)

    def local_track(self, name: str) -> LocalTrack | None:
        return self.local_tracks.get(name)

    def room_tracks(self) -> list[TrackInfo]:
        """Every track published in the room by other sessions, in publication order."""
        if self._view is None:
            return []
        out = []
        for entries in self._view.tracks.values():
            sessions = [s for s in entries if s != self.session]
            if sessions:
                out.append(entries[max(sessions)])
        return out

    # ---- controls ------------------------------------------------------------------------

    def control(self, now: float, ctl: Control) -> ControlError | None:
        if self.closed:
            return ControlError(ErrorCode.ENDPOINT_CLOSED, "the endpoint is closed")
        match ctl:
            case Join():
                return self._join(now, ctl)
            case CreateLocalTrack():
                return self._create_local_track(now, ctl)
        if self._view is None or self.peer is None:
            return ControlError(ErrorCode.NOT_JOINED, "join a room first")
        match ctl:
            case Leave():
                self._leave(now)
                return None
            case UpdatePeer():
                return self._update_peer(now, ctl)
            case RoomSubscribe() | RoomUnsubscribe():
                return self._room_subscription(isinstance(ctl, RoomSubscribe))
            case PeerSubscribe() | PeerUnsubscribe():
                return self._peer_subscription(ctl.peer, isinstance(ctl, PeerSubscribe))
            case Publish():
                return self._publish(now, ctl)
            case UpdateTrack():
                return self._update_track(now, ctl)
            case Unpublish():
                return self._unpublish(now, ctl.track)
            case SetRemoteBitrate():
                track = self.remote_tracks.get(ctl.track)
                if track is None:
                    return ControlError(ErrorCode.TRACK_NOT_FOUND, f"no published track {ctl.track!r}")
                track.set_limit(now, ctl.limit)
                return None
            case Subscribe() | Switch():
                return self._attach(now, ctl)
            case Unsubscribe() | SetLocalBitrate() | RequestKeyframe():
                return self._local_track_op(now, ctl)
            case MixerConfig() | MixerAttach() | MixerDetach():
                return self._mixer_control(now, ctl)
            case (
                MessageChannelStartPub()
                | MessageChannelStopPub()
                | MessageChannelSub()
                | MessageChannelUnsub()
                | MessageChannelPub()
            ):
                err = _bad_name("message channel", ctl.label)
                return err or self._msgs.control(now, self._view.name, self.peer, ctl)
        return ControlError(ErrorCode.INVALID_VALUE, f"unknown control {type(ctl).__name__}")

    def _join(self, now: float, ctl: Join) -> ControlError | None:
        if self._view is not None:
            return ControlError(ErrorCode.ALREADY_JOINED, f"already in room {self._room!r}")
        err = _bad_name("room", ctl.room) or _bad_name("peer", ctl.peer)
        if err is not None:
            return err
        self.peer = ctl.peer
        self.options = ctl.options
        self._room = ctl.room
        key = room_key(self.app, ctl.room)
        self._view = self._rooms.enter(now, key, self)
        if ctl.options.publish_peer:
            info = PeerInfo(ctl.peer, ctl.options.metadata, ctl.options.extra_data)
            self._registry.put(now, peer_key(key, ctl.peer, self.session), encode_peer(info))
        self._events.append(Joined(ctl.room, ctl.peer, self.session))
        if self._audit is not None:
            self._audit.joined(now, self.session, ctl.room, ctl.peer)
        self._replay(None)
        return None

    def _leave(self, now: float) -> None:
        view, peer = self._view, self.peer
        assert view is not None and peer is not None
        stage = self.mixer_stage
        if self.mixer is not None and stage is not None:
            stage.remove(now, self.mixer)
            self.mixer = None
        self._msgs.clear(now)
        for name in list(self.remote_tracks):
            self._unpublish(now, name)
        for local in self.local_tracks.values():
            if local.channel is not None:
                self._audit_detach(now, local)
                local.detach(now)
        if self.options.publish_peer:
            self._registry.delete(now, peer_key(view.name, peer, self.session))
        self._rooms.exit(now, view, self)
        self._view = None
        self.peer = None
        self._room_subscribed = False
        self._peer_subs.clear()
        self._seen_peers.clear()
        self._seen_tracks.clear()
        self._next_refresh = None
        room = self._room
        assert room is not None
        self._room = None
        self._events.append(Left(room, peer))
        if self._audit is not None:
            self._audit.left(now, self.session, room, peer)

    def _update_peer(self, now: float, ctl: UpdatePeer) -> ControlError | None:
        assert self._view is not None and self.peer is not None
        opts = self.options
        self.options = JoinOptions(
            opts.peer_info, opts.track_info, opts.publish_peer, opts.publish_tracks, ctl.metadata, opts.extra_data
        )
        if opts.publish_peer:
            info = PeerInfo(self.peer, ctl.metadata, opts.extra_data)
            self._registry.put(now, peer_key(self._view.name, self.peer, self.session), encode_peer(info))
        return None

    def _both_auto(self) -> bool:
        return self.options.peer_info is InfoMode.AUTO and self.options.track_info is InfoMode.AUTO

    def _room_subscription(self, subscribe: bool) -> ControlError | None:
        if self._both_auto():
            return ControlError(ErrorCode.MODE_IS_AUTO, "peer and track info are automatic for this session")
        if subscribe == self._room_subscribed:
            code = ErrorCode.ALREADY_SUBSCRIBED if subscribe else ErrorCode.NOT_SUBSCRIBED
            return ControlError(code, "room info " + ("already subscribed" if subscribe else "not subscribed"))
        self._room_subscribed = subscribe
        if subscribe:
            self._replay(None)
        else:
            self._forget_unwanted()
        return None

    def _peer_subscription(self, peer: str, subscribe: bool) -> ControlError | None:
        if self._both_auto():
            return ControlError(ErrorCode.MODE_IS_AUTO, "peer and track info are automatic for this session")
        err = _bad_name("peer", peer)
        if err is not None:
            return err
        if subscribe == (peer in self._peer_subs):
            code = ErrorCode.ALREADY_SUBSCRIBED if subscribe else ErrorCode.NOT_SUBSCRIBED
            return ControlError(code, f"peer {peer!r} " + ("already subscribed" if subscribe else "not subscribed"))
        if subscribe:
            self._peer_subs.add(peer)
            self._replay(peer)
        else:
            self._peer_subs.discard(peer)
            self._forget_unwanted()
        return None

    def _publish(self, now: float, ctl: Publish) -> ControlError | None:
        assert self._view is not None and self.peer is not None
        err = _bad_name("track", ctl.track)
        if err is not None:
            return err
        if ctl.track in self.remote_tracks:
            return ControlError(ErrorCode.TRACK_ALREADY_PUBLISHED, f"track {ctl.track!r} is already published")
        info = TrackInfo(self.peer, ctl.track, ctl.kind, ctl.metadata, ctl.screen)
        track = RemoteTrack(info, channel_id(self._view.name, self.peer, ctl.track), self._events, ctl.cache_keyframes)
        self.remote_tracks[ctl.track] = track
        track.start(now, self._hub)
        if self._audit is not None:
            self._audit.track_started(now, self.session, ctl.track, ctl.kind)
        if self.options.publish_tracks:
            self._registry.put(now, track_key(self._view.name, self.peer, ctl.track, self.session), encode_track(info))
        return None

    def _update_track(self, now: float, ctl: UpdateTrack) -> ControlError | None:
        assert self._view is not None and self.peer is not None
        track = self.remote_tracks.get(ctl.track)
        if track is None:
            return ControlError(ErrorCode.TRACK_NOT_FOUND, f"no published track {ctl.track!r}")
        old = track.info
        track.info = TrackInfo(old.peer, old.track, old.kind, ctl.metadata, old.screen)
        if self.options.publish_tracks:
            key = track_key(self._view.name, self.peer, ctl.track, self.session)
            self._registry.put(now, key, encode_track(track.info))
        return None

    def _unpublish(self, now: float, name: str) -> ControlError | None:
        assert self._view is not None and self.peer is not None
        track = self.remote_tracks.pop(name, None)
        if track is None:
            return ControlError(ErrorCode.TRACK_NOT_FOUND, f"no published track {name!r}")
        track.stop(now)
        if self._audit is not None:
            self._audit.track_ended(now, self.session, name, track.info.kind)
        if self.options.publish_tracks:
            self._registry.delete(now, track_key(self._view.name, self.peer, name, self.session))
        return None

    def _create_local_track(self, now: float, ctl: CreateLocalTrack) -> ControlError | None:
        err = _bad_name("local track", ctl.local_track)
        if err is not None:
            return err
        if ctl.local_track in self.local_tracks:
            return ControlError(ErrorCode.LOCAL_TRACK_EXISTS, f"local track {ctl.local_track!r} exists")
        # The origin names this viewer in feedback to publishers; unique in the cluster because
        # the session id is.
        origin = (self.session << 16) | len(self.local_tracks)
        self.local_tracks[ctl.local_track] = LocalTrack(ctl.local_track, ctl.kind, origin, self._hub, self._events)
        if self._audit is not None:
            self._audit.local_track(now, self.session, ctl.local_track, ctl.kind)
        return None

    def _attach(self, now: float, ctl: Subscribe | Switch) -> ControlError | None:
        assert self._view is not None
        local = self.local_tracks.get(ctl.local_track)
        if local is None:
            return ControlError(ErrorCode.LOCAL_TRACK_NOT_FOUND, f"no local track {ctl.local_track!r}")
        if self.mixer is not None and self.mixer.is_output(local.name):
            return ControlError(ErrorCode.INVALID_VALUE, f"local track {local.name!r} is an audio mixer output")
        if isinstance(ctl, Subscribe) and local.channel is not None:
            return ControlError(ErrorCode.ALREADY_SUBSCRIBED, f"local track {ctl.local_track!r} is attached already")
        if isinstance(ctl, Switch) and local.channel is None:
            return ControlError(ErrorCode.LOCAL_TRACK_NOT_ATTACHED, f"local track {ctl.local_track!r} is not attached")
        src = ctl.source
        info = self._view.track(src.peer, src.track)
        if info is None:
            return ControlError(ErrorCode.TRACK_NOT_FOUND, f"peer {src.peer!r} publishes no track {src.track!r}")
        if info.kind is not local.kind:
            return ControlError(
                ErrorCode.TRACK_KIND_MISMATCH,
                f"track {src.track!r} is {info.kind.value}, local track {local.name!r} is {local.kind.value}",
            )
        self._audit_detach(now, local)
        local.attach(now, TrackSource(src.peer, src.track), channel_id(self._view.name, src.peer, src.track))
        if self._audit is not None:
            self._audit.attached(now, self.session, local.name, src.peer, src.track)
        return None

    def _audit_detach(self, now: float, local: LocalTrack) -> None:
        if self._audit is not None and local.source is not None:
            self._audit.detached(now, self.session, local.name, local.source.peer, local.source.track)

    def _local_track_op(self, now: float, ctl: Unsubscribe | SetLocalBitrate | RequestKeyframe) -> ControlError | None:
        local = self.local_tracks.get(ctl.local_track)
        if local is None:
            return ControlError(ErrorCode.LOCAL_TRACK_NOT_FOUND, f"no local track {ctl.local_track!r}")
        if self.mixer is not None and self.mixer.is_output(local.name):
            return ControlError(ErrorCode.INVALID_VALUE, f"local track {local.name!r} is an audio mixer output")
        if isinstance(ctl, SetLocalBitrate):
            local.set_limit(now, ctl.limit)
            if self._next_refresh is None:
                self._next_refresh = now + HINT_REFRESH_INTERVAL
            return None
        if local.channel is None:
            return ControlError(ErrorCode.LOCAL_TRACK_NOT_ATTACHED, f"local track {ctl.local_track!r} is not attached")
        if isinstance(ctl, Unsubscribe):
            self._audit_detach(now, local)
            local.detach(now)
        else:
            local.request_keyframe(now)
        return None

    # ---- audio mixer ---------------------------------------------------------------------

    def _sources(self, sources: object) -> list[TrackSource] | ControlError:
        if not isinstance(sources, tuple | list) or len(sources) > MAX_MANUAL_SOURCES:
            return ControlError(ErrorCode.INVALID_VALUE, f"sources must be a list of at most {MAX_MANUAL_SOURCES}")
        out: list[TrackSource] = []
        for src in sources:
            if not isinstance(src, TrackSource):
                return ControlError(ErrorCode.INVALID_VALUE, "a source must name a peer and a track")
            err = _bad_name("peer", src.peer) or _bad_name("track", src.track)
            if err is not None:
                return err
            out.append(src)
        return out

    def _mixer_control(self, now: float, ctl: MixerConfig | MixerAttach | MixerDetach) -> ControlError | None:
        assert self._view is not None and self.peer is not None
        sources = self._sources(ctl.sources)
        if isinstance(sources, ControlError):
            return sources
        mixer = self.mixer
        if isinstance(ctl, MixerConfig):
            if mixer is not None:
                return ControlError(ErrorCode.ALREADY_SUBSCRIBED, "the audio mixer is configured already")
            if not isinstance(ctl.mode, MixerMode):
                return ControlError(ErrorCode.INVALID_VALUE, "unknown mixer mode")
            names = ctl.outputs
            if not isinstance(names, tuple | list) or not 1 <= len(names) <= MAX_SLOTS:
                return ControlError(ErrorCode.INVALID_VALUE, f"a mixer has 1 to {MAX_SLOTS} outputs")
            if len(set(names)) != len(names):
                return ControlError(ErrorCode.INVALID_VALUE, "mixer outputs must be distinct")
            outputs = []
            for name in names:
                local = self.local_tracks.get(name) if isinstance(name, str) else None
                if local is None:
                    return ControlError(ErrorCode.LOCAL_TRACK_NOT_FOUND, f"no local track {name!r}")
                if local.kind is not TrackKind.AUDIO:
                    return ControlError(ErrorCode.TRACK_KIND_MISMATCH, f"mixer output {name!r} is not audio")
                if local.channel is not None:
                    return ControlError(ErrorCode.ALREADY_SUBSCRIBED, f"local track {name!r} is attached already")
                outputs.append(local)
            # One stage per room per worker, shared by its listeners.
            stage = self._view.mixer_stage()
            if stage is None:
                return ControlError(ErrorCode.UNSUPPORTED, "this worker runs no audio mixer")
            self.mixer = AudioMixer(self.peer, ctl.mode, outputs, sources, self._events)
            stage.add(now, self.mixer)
            return None
        if mixer is None:
            return ControlError(ErrorCode.MIXER_NOT_CONFIGURED, "no audio mixer: configure one first")
        if mixer.mode is MixerMode.AUTO:
            return ControlError(ErrorCode.MODE_IS_AUTO, "the audio mixer takes every audio track of the room")
        stage = self.mixer_stage
        assert stage is not None  # a mixer is configured: its view has its stage
        if isinstance(ctl, MixerAttach):
            fresh = [s for s in dict.fromkeys(sources) if s not in mixer.manual]
            if len(mixer.manual) + len(fresh) > MAX_MANUAL_SOURCES:
                return ControlError(ErrorCode.INVALID_VALUE, f"a mixer has at most {MAX_MANUAL_SOURCES} sources")
            for src in fresh:
                mixer.manual.add(src)
                stage.add_manual(now, src)
        else:
            for src in dict.fromkeys(sources):
                if src in mixer.manual:
                    mixer.manual.discard(src)
                    stage.remove_manual(now, src)
        return None

    # ---- room info, filtered by this endpoint's modes and subscriptions ------------------

    def _wants_peer(self, peer: str) -> bool:
        return self.options.peer_info is InfoMode.AUTO or self._room_subscribed or peer in self._peer_subs

    def _wants_tracks(self, peer: str) -> bool:
        return self.options.track_info is InfoMode.AUTO or self._room_subscribed or peer in self._peer_subs

    def on_peer_entry(self, session: SessionId, peer: str, info: PeerInfo | None) -> None:
        """From the RoomView: a peer entry was put (``info``) or deleted (``None``)."""
        if session == self.session or not self._wants_peer(peer):
            return
        sessions = self._seen_peers.get(peer)
        if info is None:
            if sessions is None or sessions.pop(session, None) is None:
                return
            if not sessions:
                del self._seen_peers[peer]
                self._events.append(PeerLeft(peer))
        elif sessions is None:
            self._seen_peers[peer] = {session: info}
            self._events.append(PeerJoined(info))
        else:
            before = sessions[max(sessions)]
            sessions[session] = info
            if sessions[max(sessions)] != before:
                self._events.append(PeerUpdated(info))

    def on_track_entry(
        self,
        session: SessionId,
        peer: str,
        track: str,
        info: TrackInfo | None,
        kind: TrackKind = TrackKind.AUDIO,
    ) -> None:
        """From the RoomView: a track entry was put (``info``) or deleted (``None``, ``kind``)."""
        if session == self.session or not self._wants_tracks(peer):
            return
        key = (peer, track)
        sessions = self._seen_tracks.get(key)
        if info is None:
            if sessions is None or sessions.pop(session, None) is None:
                return
            if not sessions:
                del self._seen_tracks[key]
                self._events.append(TrackStopped(peer, track, kind))
        elif sessions is None:
            self._seen_tracks[key] = {session: info}
            self._events.append(TrackStarted(info))
        else:
            before = sessions[max(sessions)]
            sessions[session] = info
            if sessions[max(sessions)] != before:
                self._events.append(TrackUpdated(info))

    def _replay(self, only_peer: str | None) -> None:
        view = self._view
        assert view is not None
        for peer, sessions in list(view.peers.items()):
            if only_peer is None or peer == only_peer:
                for session, info in list(sessions.items()):
                    if session not in self._seen_peers.get(peer, {}):
                        self.on_peer_entry(session, peer, info)
        for (peer, track), tsessions in list(view.tracks.items()):
            if only_peer is None or peer == only_peer:
                for session, tinfo in list(tsessions.items()):
                    if session not in self._seen_tracks.get((peer, track), {}):
                        self.on_track_entry(session, peer, track, tinfo)

    def _forget_unwanted(self) -> None:
        # Unsubscribing stops updates; it does not claim that peers left, so no events.
        for peer in [p for p in self._seen_peers if not self._wants_peer(p)]:
            del self._seen_peers[peer]
        for key in [k for k in self._seen_tracks if not self._wants_tracks(k[0])]:
            del self._seen_tracks[key]

    # ---- time and teardown ---------------------------------------------------------------

    @property
    def mixer_stage(self) -> MixerStage | None:
        """The stage of this endpoint's audio mixer (None without one)."""
        return self._view.mixer_stage() if self.mixer is not None and self._view is not None else None

    def _stage(self) -> MixerStage | None:
        """The stage this endpoint's timer drives: its mixer's, or the room's in bounded mode."""
        if self.mixer is not None:
            return self.mixer_stage
        return self._view.stage if self._view is not None else None

    def handle_timeout(self, now: float) -> None:
        for track in self.remote_tracks.values():
            track.handle_timeout(now)
        stage = self._stage()
        if stage is not None:
            stage.handle_timeout(now)
        if self._next_refresh is not None and now >= self._next_refresh:
            for local in self.local_tracks.values():
                local.refresh(now)
            self._next_refresh = now + HINT_REFRESH_INTERVAL

    def next_deadline(self) -> float | None:
        deadline = self._next_refresh
        stage = self._stage()
        if stage is not None:
            d = stage.next_deadline()
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        for track in self.remote_tracks.values():
            d = track.next_deadline()
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        return deadline

    def close(self, now: float, reason: str) -> None:
        """Tell the core this connection is gone: leave the room and stop everything."""
        if self.closed:
            return
        if self._view is not None:
            self._leave(now)
        self.closed = True
        self._events.append(Closed(reason))
