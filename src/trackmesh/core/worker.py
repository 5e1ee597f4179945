"""MediaWorker: every endpoint of one worker, their ids and their single timer deadline."""

from __future__ import annotations

from .audit import EndpointAudit
from .channel import ChannelHub, MessageHub
from .endpoint import Endpoint
from .errors import ControlError, ErrorCode
from .ids import ConnIdCodec, InvalidConnId, SessionId, SessionIdGenerator
from .mixer.stage import MixerStage
from .registry import Registry
from .room import RoomDirectory


class MediaWorker:
    __slots__ = ("_codec", "_ids", "_ready", "audit", "endpoints", "hub", "node_id", "registry", "rooms", "worker")

    def __init__(
        self,
        node_id: int,
        worker: int,
        secret: str | bytes,
        registry: Registry,
        hub: ChannelHub,
        session_start: int = 0,
        mixer_bound: bool = False,
    ) -> None:
        self.node_id = node_id
        self.worker = worker
        self.registry = registry
        self.hub = hub
        # mixer_bound: remote audio is imported only for the top N+1 by level (see core.mixer).
        if mixer_bound and not isinstance(hub, MessageHub):
            raise ValueError("mixer_bound needs a channel hub with the message path (MessageHub) for the levels")
        bound_node = node_id if mixer_bound else None

        def new_stage(room: str) -> MixerStage:
            return MixerStage(room, registry, hub, bound_node, worker)

        self.rooms = RoomDirectory(registry, new_stage, bounded=mixer_bound)
        self.endpoints: dict[SessionId, Endpoint] = {}
        self._ids = SessionIdGenerator(node_id, worker, session_start)
        self._codec = ConnIdCodec(secret)
        self._ready: dict[SessionId, Endpoint] = {}
        # The connector's source (runtime sets it): endpoints report joins, tracks... to it.
        self.audit: EndpointAudit | None = None

    def _mark_ready(self, endpoint: Endpoint) -> None:
        self._ready[endpoint.session] = endpoint

    def take_ready(self) -> list[Endpoint]:
        """Endpoints that have events to drain since the last call (each at most once)."""
        if not self._ready:
            return []
        ready = list(self._ready.values())
        self._ready.clear()
        return ready

    def new_session_id(self) -> SessionId:
        """A session id for a connection attempt that gets no endpoint (an offer refused before
        one is made): the event log still records the attempt under its own id."""
        return self._ids.next()

    def create_endpoint(self, app: str = "") -> Endpoint:
        """A new endpoint for a connection whose token names ``app`` ("" = the single-tenant app):
        it can join that app's rooms only."""
        session = self._ids.next()
        conn_id = self._codec.encode(self.node_id, self.worker, session)
        endpoint = Endpoint(session, conn_id, self.registry, self.hub, self.rooms, self._mark_ready, self.audit, app)
        self.endpoints[session] = endpoint
        return endpoint

    def lookup(self, conn_id: str) -> Endpoint | ControlError:
        """The live endpoint of ``conn_id``; a forged, stale or foreign id is an error."""
        try:
            parts = self._codec.decode(conn_id)
        except InvalidConnId as exc:
            return ControlError(ErrorCode.UNKNOWN_CONN, str(exc))
        endpoint = self.endpoints.get(parts.session)
        if parts.node_id != self.node_id or parts.worker != self.worker or endpoint is None:
            return ControlError(ErrorCode.UNKNOWN_CONN, "no such connection on this worker")
        if endpoint.conn_id != conn_id:
            return ControlError(ErrorCode.UNKNOWN_CONN, "no such connection on this worker")
        return endpoint

    def close_endpoint(self, now: float, session: SessionId, reason: str) -> None:
        endpoint = self.endpoints.pop(session, None)
        if endpoint is not None:
            endpoint.close(now, reason)

    def handle_timeout(self, now: float) -> None:
        for endpoint in self.endpoints.values():
            deadline = endpoint.next_deadline()
            if deadline is not None and deadline <= now:
                endpoint.handle_timeout(now)

    def next_deadline(self) -> float | None:
        deadline: float | None = None
        for endpoint in self.endpoints.values():
            d = endpoint.next_deadline()
            if d is not None and (deadline is None or d < deadline):
                deadline = d
        return deadline

    def shutdown(self, now: float, reason: str) -> list[Endpoint]:
        """Close every endpoint (each gets a Closed event) and return them for draining."""
        closed = list(self.endpoints.values())
        for endpoint in closed:
            endpoint.close(now, reason)
        self.endpoints.clear()
        return closed
