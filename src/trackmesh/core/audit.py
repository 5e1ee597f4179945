"""The endpoint's audit trail: lifecycle facts for the event log (connector), told as they happen.

The core calls an :class:`EndpointAudit` (when the worker has one) at joins, leaves, publishes,
unpublishes and subscriptions; transports call it when a connection starts, is up and ends. It
must only record: no I/O, no exceptions (the connector's ``EventSource`` appends to a bounded
queue). Kept apart from the endpoint's own event queue, which its transport drains for the client.
"""

from __future__ import annotations

import enum
from typing import Protocol

from .ids import SessionId
from .model import TrackKind


class EndpointAudit(Protocol):
    # Told by the transport (the core does not see the connection itself):
    def connecting(self, now: float, session: SessionId, remote_ip: str, app: str = "") -> None: ...

    def connected(self, now: float, session: SessionId, remote_ip: str) -> None: ...

    def disconnected(self, now: float, session: SessionId, reason: str) -> None: ...

    def routed(self, now: float, session: SessionId, remote_ip: str, app: str, started: float) -> None:
        """The gateway part chose this worker for a request that arrived at ``started`` (standalone:
        the node's own HTTP layer is the gateway)."""
        ...

    def connect_failed(self, now: float, session: SessionId, timed_out: bool) -> None:
        """The session never connected: its offer was refused (``timed_out`` False: invalid SDP) or
        ICE/DTLS did not come up in time. It ends the session (no Disconnected follows)."""
        ...

    def reconnecting(self, now: float, session: SessionId, remote_ip: str) -> None:
        """An ICE restart began (WHIP PATCH, SDK restart)."""
        ...

    def reconnected(self, now: float, session: SessionId, remote_ip: str) -> None:
        """The first check with the restarted ICE credentials succeeded."""
        ...

    # Told by the worker's track sampler (core/track_watch.py):
    def track_muted(self, now: float, session: SessionId, track: str, muted: bool) -> None: ...

    def layer_changed(self, now: float, session: SessionId, track: str, spatial: int, temporal: int) -> None: ...

    # Told by the endpoint:
    def joined(self, now: float, session: SessionId, room: str, peer: str) -> None: ...

    def left(self, now: float, session: SessionId, room: str, peer: str) -> None: ...

    def track_started(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def track_ended(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def local_track(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def attached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None: ...

    def detached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None: ...


class RouteFailure(enum.IntEnum):
    """Why a gateway could not place a new session (atm0s's RouteError.ErrorType)."""

    POOL_EMPTY = 0  # no media node with room
    TIMEOUT = 1  # the chosen node did not answer in time
    GATEWAY_ERROR = 2  # another zone's gateway failed us
    MEDIA_ERROR = 3  # the chosen node failed


class RouteAudit(Protocol):
    """What a gateway tells the event log (connector) about each new-session request it routes:
    ``RouteBegin`` (at ``started``) then ``RouteSuccess`` or ``RouteError``. The connector's
    ``EventSource`` implements it; a gateway without one reports nothing."""

    def route_succeeded(
        self, now: float, session: SessionId, remote_ip: str, app: str, started: float, dest_node: int
    ) -> None: ...

    def route_failed(
        self, now: float, session: SessionId, remote_ip: str, app: str, started: float, error: RouteFailure,
        dest_node: int | None,
    ) -> None: ...
