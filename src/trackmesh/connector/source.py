"""Events at the source: a media worker's (or gateway's) side of the connector.

:class:`EventSource` is the worker's :class:`~trackmesh.core.audit.EndpointAudit`: it turns
lifecycle facts into atm0s HookEvents with an id unique at the source, and keeps them in a
bounded queue until the connector acknowledges them (at least once: the connector deduplicates
by id). Recording never blocks nor raises: past ``max_queued`` events are dropped, counted and
logged once per burst (the drop is the only loss, and it is visible in metrics).

Clock: the worker's ``now`` is monotonic; hooks carry wall-clock milliseconds, so the driver
gives ``wall_offset`` (wall minus monotonic at start).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from trackmesh.core.audit import RouteFailure
from trackmesh.core.ids import SessionId
from trackmesh.core.model import TrackKind

from . import events as ev

log = logging.getLogger("trackmesh.connector")

_KIND = {TrackKind.AUDIO: ev.Kind.AUDIO, TrackKind.VIDEO: ev.Kind.VIDEO}


def disconnect_reason(reason: str) -> ev.DisconnectReason:
    """The atm0s reason for a transport's close reason."""
    text = reason.lower()
    if "stopping" in text or "sigterm" in text or "shutdown" in text:
        return ev.DisconnectReason.NODE_SHUTDOWN
    if "timeout" in text or "timed out" in text or "expired" in text or "consent" in text:
        return ev.DisconnectReason.TIMEOUT
    if "kick" in text:
        return ev.DisconnectReason.KICK_BY_API
    return ev.DisconnectReason.USER_ACTION


class EventSource:
    def __init__(self, node: int, boot: int, wall_offset: float, max_queued: int = 100_000) -> None:
        self.node = node
        self.wall_offset = wall_offset
        self.max_queued = max_queued
        self._ids = ev.EventIdSource(node, boot)
        self._queue: deque[ev.SourceEvent] = deque()
        self._started: dict[int, float] = {}
        self._ips: dict[int, str] = {}
        self._apps: dict[int, str] = {}
        self._restarted: dict[int, float] = {}
        self.on_ready: Callable[[], None] | None = None
        self.emitted = 0
        self.dropped = 0
        self.acked = 0

    # ---- queue ---------------------------------------------------------------------------

    def take(self, limit: int = 512) -> list[ev.SourceEvent]:
        """Up to ``limit`` events to send; they stay owned by the caller until ``ack`` or
        ``give_back``."""
        out: list[ev.SourceEvent] = []
        while self._queue and len(out) < limit:
            out.append(self._queue.popleft())
        return out

    def ack(self, batch: list[ev.SourceEvent]) -> None:
        self.acked += len(batch)

    def give_back(self, batch: list[ev.SourceEvent]) -> None:
        """The connector did not acknowledge ``batch``: it goes first again, in order."""
        self._queue.extendleft(reversed(batch))

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, event: ev.SourceEvent) -> None:
        """Queue an event made elsewhere (a child worker's, relayed by the node)."""
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        was_empty = not self._queue
        self._queue.append(event)
        if was_empty and self.on_ready is not None:
            self.on_ready()

    def set_app(self, session: SessionId, app: str) -> None:
        """The app a session belongs to (multi-tenancy); "" by default."""
        if app:
            self._apps[session] = app

    def forget(self, session: SessionId) -> None:
        """Drop what is kept about a session that will have no more events."""
        for kept in (self._apps, self._started, self._ips, self._restarted):
            kept.pop(session, None)

    def emit(self, now: float, session: int, body: ev.PeerEventBody) -> None:
        if len(self._queue) >= self.max_queued:
            if self.dropped == 0 or self.dropped % 10_000 == 0:
                log.error("connector event queue full: dropping events", extra={"fields": {
                    "queued": len(self._queue), "dropped": self.dropped + 1}})
            self.dropped += 1
            return
        hook = ev.HookEvent(self.node, int((now + self.wall_offset) * 1000), ev.PeerEvent(session, body))
        was_empty = not self._queue
        self._queue.append(ev.SourceEvent(self._ids.next(), self._apps.get(session, ""), hook))
        self.emitted += 1
        if was_empty and self.on_ready is not None:
            self.on_ready()

    def emit_app(self, now: float, app: str, event: ev.RecordEvent | ev.ComposeEvent) -> None:
        """Queue a recording or compose event of ``app`` (not a session's)."""
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return
        hook = ev.HookEvent(self.node, int((now + self.wall_offset) * 1000), event)
        was_empty = not self._queue
        self._queue.append(ev.SourceEvent(self._ids.next(), app, hook))
        self.emitted += 1
        if was_empty and self.on_ready is not None:
            self.on_ready()

    # ---- EndpointAudit -------------------------------------------------------------------

    def connecting(self, now: float, session: SessionId, remote_ip: str, app: str = "") -> None:
        self._started[session] = now
        if app:
            self._apps[session] = app
        self._ips[session] = remote_ip
        self.emit(now, session, ev.Connecting(remote_ip))

    def connected(self, now: float, session: SessionId, remote_ip: str) -> None:
        after = int((now - self._started.get(session, now)) * 1000)
        self.emit(now, session, ev.Connected(max(0, after), remote_ip or self._ips.get(session, "")))

    def disconnected(self, now: float, session: SessionId, reason: str) -> None:
        duration = int((now - self._started.pop(session, now)) * 1000)
        self._ips.pop(session, None)
        self._restarted.pop(session, None)
        # Emitted before the session's app is forgotten: its Disconnected belongs to its app too.
        self.emit(now, session, ev.Disconnected(max(0, duration), disconnect_reason(reason)))
        self._apps.pop(session, None)

    def routed(self, now: float, session: SessionId, remote_ip: str, app: str, started: float) -> None:
        """RouteBegin at the request's arrival, RouteSuccess now (to this node), as atm0s's gateway."""
        self.route_succeeded(now, session, remote_ip, app, started, self.node)

    # ---- RouteAudit (gateways) -----------------------------------------------------------

    def route_succeeded(
        self, now: float, session: SessionId, remote_ip: str, app: str, started: float, dest_node: int
    ) -> None:
        if app:
            self._apps[session] = app
        self.emit(min(started, now), session, ev.RouteBegin(remote_ip))
        self.emit(now, session, ev.RouteSuccess(max(0, int((now - started) * 1000)), dest_node))

    def route_failed(
        self, now: float, session: SessionId, remote_ip: str, app: str, started: float, error: RouteFailure,
        dest_node: int | None,
    ) -> None:
        """RouteBegin then RouteError: a request no media node took; the session ends there."""
        if app:
            self._apps[session] = app
        self.emit(min(started, now), session, ev.RouteBegin(remote_ip))
        self.emit(now, session, ev.RouteError(max(0, int((now - started) * 1000)), dest_node,
                                              ev.RouteErrorType(int(error))))
        self.forget(session)

    def connect_failed(self, now: float, session: SessionId, timed_out: bool) -> None:
        after = int((now - self._started.pop(session, now)) * 1000)
        self._ips.pop(session, None)
        error = ev.ConnectErrorType.TIMEOUT if timed_out else ev.ConnectErrorType.INVALID_SDP
        self.emit(now, session, ev.ConnectError(max(0, after), error))
        self._apps.pop(session, None)

    def reconnecting(self, now: float, session: SessionId, remote_ip: str) -> None:
        self._restarted[session] = now
        self.emit(now, session, ev.Reconnect(remote_ip or self._ips.get(session, "")))

    def reconnected(self, now: float, session: SessionId, remote_ip: str) -> None:
        after = int((now - self._restarted.pop(session, now)) * 1000)
        self.emit(now, session, ev.Reconnected(max(0, after), remote_ip or self._ips.get(session, "")))

    def track_muted(self, now: float, session: SessionId, track: str, muted: bool) -> None:
        self.emit(now, session, ev.RemoteTrackMuted(track, muted))

    def layer_changed(self, now: float, session: SessionId, track: str, spatial: int, temporal: int) -> None:
        self.emit(now, session, ev.LocalTrackLayer(track, spatial, temporal))

    def joined(self, now: float, session: SessionId, room: str, peer: str) -> None:
        self.emit(now, session, ev.Join(room, peer))

    def left(self, now: float, session: SessionId, room: str, peer: str) -> None:
        self.emit(now, session, ev.Leave(room, peer))

    def track_started(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None:
        self.emit(now, session, ev.RemoteTrackStarted(track, _KIND[kind]))

    def track_ended(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None:
        self.emit(now, session, ev.RemoteTrackEnded(track, _KIND[kind]))

    def local_track(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None:
        self.emit(now, session, ev.LocalTrack(track, _KIND[kind]))

    def attached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None:
        self.emit(now, session, ev.LocalTrackAttach(track, peer, remote_track))

    def detached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None:
        self.emit(now, session, ev.LocalTrackDetach(track, peer, remote_track))
