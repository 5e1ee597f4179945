"""The endpoint's audit trail: lifecycle facts for the event log (connector), told as they happen.

The core calls an :class:`EndpointAudit` (when the worker has one) at joins, leaves, publishes,
unpublishes and subscriptions; transports call it when a connection starts, is up and ends. It
must only record: no I/O, no exceptions (the connector's ``EventSource`` appends to a bounded
queue). Kept apart from the endpoint's own event queue, which its transport drains for the client.
"""

from __future__ import annotations

from typing import Protocol

from .ids import SessionId
from .model import TrackKind


class EndpointAudit(Protocol):
    # Told by the transport (the core does not see the connection itself):
    def connecting(self, now: float, session: SessionId, remote_ip: str, app: str = "") -> None: ...

    def connected(self, now: float, session: SessionId, remote_ip: str) -> None: ...

    def disconnected(self, now: float, session: SessionId, reason: str) -> None: ...

    # Told by the endpoint:
    def joined(self, now: float, session: SessionId, room: str, peer: str) -> None: ...

    def left(self, now: float, session: SessionId, room: str, peer: str) -> None: ...

    def track_started(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def track_ended(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def local_track(self, now: float, session: SessionId, track: str, kind: TrackKind) -> None: ...

    def attached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None: ...

    def detached(self, now: float, session: SessionId, track: str, peer: str, remote_track: str) -> None: ...

    # Told by the operator's console (runtime/console_rpc.py):
    def track_muted(self, now: float, session: SessionId, track: str, muted: bool) -> None: ...
