"""ConnTable: the WebRTC connections of one transport on a worker, and their lifecycle.

WHIP/WHEP (webrtc_worker.py) and the SDK (sdk_worker.py) drive the same kind of connection, a
:class:`~trackmesh.transports.webrtc.peer.WebRtcPeer` on the worker's shared port
(:class:`~.webrtc_port.WebRtcPort`), and differ only in their control calls and in the state
machine above the peer. What they share lives here, once:

- attach: route the connection's ufrag on the port, its core events and its timer to it;
- after each input (datagram, core events, timer, control call): drain the peer's events
  (``IceSelected`` binds the remote address on the port, ``Connected`` and ``ApplicationData`` go to the
  machine above, ``Disconnected`` closes),
  close when the machine above asked to, reschedule its deadline;
- close, in one order (peer, its leftover events, core endpoint, port route, core events, timer,
  table), once;
- the connector's session events (docs/connector.md), for both transports: ``RouteBegin`` and
  ``RouteSuccess`` (the node's HTTP layer routed the request here) then ``Connecting`` when the
  endpoint is made (``new_endpoint``, before it joins a room), ``Connected`` with the peer's
  ``Connected``, ``Disconnected`` at the close, or at ``abort`` when setup fails before ``attach``;
  ``ConnectError`` instead for an offer refused (``refused``: invalid SDP) or a connect timeout;
  ``Reconnect`` at an ICE restart and ``Reconnected`` at the first check with its credentials;
  and, from a 1-s sampler (``TrackSampler``, core/track_watch.py), ``RemoteTrackMuted`` and
  ``LocalTrackLayer``;
- lookup by conn id, stats, ``close_all`` at worker shutdown and ``drain`` (the node drains:
  tell clients to go away, ``WorkerRuntime.drain``).

The transport-specific part of a connection is the :class:`TableConn` it puts in the table.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ControlError
from trackmesh.core.ids import SessionId
from trackmesh.core.track_watch import SAMPLE_EVERY, TrackWatch
from trackmesh.net import Address
from trackmesh.transports.webrtc.demux import PacketKind, is_rtcp
from trackmesh.transports.webrtc.events import ApplicationData, Connected, Disconnected, IceSelected
from trackmesh.transports.webrtc.ice.stun import StunMessage
from trackmesh.transports.webrtc.peer import WebRtcPeer

from .admission import SessionAdmission
from .console_rpc import ConsoleRpc
from .media_metrics import FirstMediaWatch, MediaMetrics
from .webrtc_port import WebRtcPort
from .worker import WorkerRuntime

__all__ = ["ConnTable", "ConnTimer", "TableConn", "Timed", "TrackSampler", "origin"]

#: How a connection that never came up closes (transports/webrtc/peer.py): ConnectError, not Disconnected.
CONNECT_TIMEOUT = "connect timeout"


class Timed(Protocol):
    def next_deadline(self) -> float | None: ...
    def handle_timeout(self, now: float) -> None: ...


class TableConn(Protocol):
    """One connection as the table drives it."""

    closing: bool
    ufrags: list[str]  # every local ICE ufrag it had (one more per ICE restart)

    @property
    def token_hash(self) -> str:
        """The token that created it: admission counts sessions per token (--max-sessions-per-token)."""
        ...

    @property
    def key(self) -> SessionId: ...

    @property
    def kind(self) -> str:
        """What the connection speaks, for logs: "whip", "whep" or "sdk"."""
        ...

    @property
    def peer(self) -> WebRtcPeer: ...

    @property
    def machine(self) -> Timed:
        """What the worker's timer fires: the peer, or the session above it when there is one."""
        ...

    def on_connected(self, now: float) -> None:
        """ICE and DTLS are up (``Connected``)."""
        ...

    def on_application_data(self, now: float, data: bytes) -> None:
        """One DTLS application record from the client (``ApplicationData``: SCTP, for data channels)."""
        ...

    def on_core_events(self, now: float) -> None:
        """The core has events for this connection's endpoint."""
        ...

    def close_reason(self) -> str | None:
        """Set when the machine above the peer wants the connection closed (after its last words)."""
        ...

    def goaway(self, now: float, reason: str, remain_seconds: int) -> bool:
        """The node drains: tell the client to move; False when its protocol has no way to say so."""
        ...

    def farewell(self, now: float, reason: str) -> None:
        """The worker stops: last words to the client before the close."""
        ...


C = TypeVar("C", bound=TableConn)


class ConnTimer(Generic[C]):
    """Adapts one connection to the worker scheduler: fire its state machine (a WebRtcPeer or an SdkSession), then
    let the table handle what it said. A closing connection has no deadline."""

    __slots__ = ("after_input", "conn", "machine")

    def __init__(self, conn: C, machine: Timed, after_input: Callable[[float, C], None]) -> None:
        self.conn = conn
        self.machine = machine
        self.after_input = after_input

    def next_deadline(self) -> float | None:
        return None if self.conn.closing else self.machine.next_deadline()

    def handle_timeout(self, now: float) -> None:
        self.machine.handle_timeout(now)
        self.after_input(now, self.conn)


class ConnTable(Generic[C]):
    def __init__(
        self,
        runtime: WorkerRuntime,
        name: str,
        log: logging.Logger,
        on_closed: Callable[[float, C, str], None] | None = None,
    ) -> None:
        """``name``: the counters' prefix (``<name>_sessions_created``/``_closed``); ``on_closed(now, conn,
        reason)``: the transport's own bookkeeping after a close (WHIP/WHEP tombstones)."""
        self.runtime = runtime
        self.port = WebRtcPort.of(runtime)
        # Shared by every table of the worker: --max-sessions counts WHIP, WHEP and SDK sessions together.
        self.admission = SessionAdmission.of(runtime)
        self.log = log
        self.conns: dict[SessionId, C] = {}
        self.timers: dict[SessionId, ConnTimer[C]] = {}
        self._restarting: set[SessionId] = set()  # ICE restarted, no check with the new credentials yet
        self.sampler = TrackSampler(self)
        self._on_closed = on_closed
        self.counters = runtime.counters
        self.name = name
        self._created, self._closed = f"{name}_sessions_created", f"{name}_sessions_closed"
        self.counters.setdefault(self._created, 0)
        self.counters.setdefault(self._closed, 0)
        runtime.on_shutdown(self.close_all)
        runtime.on_drain(self.drain)
        # Node metrics (runtime/media_metrics.py): read at scrape time, told once per join and close.
        self.metrics = MediaMetrics.of(runtime)
        self.metrics.sources.append(self)
        ConsoleRpc.of(runtime).tables.append(self)  # the console's listing and actions (kick, end room)
        self._joining: dict[SessionId, float] = {}  # attached, not connected yet: when the request came
        self.first_media = FirstMediaWatch(self.metrics, runtime.track)  # connected, no media yet
        self.apps: dict[SessionId, str] = {}  # the app (tenant) of each connection's token

    def __len__(self) -> int:
        return len(self.conns)

    # ---- lifecycle -------------------------------------------------------------------------

    def new_endpoint(self, now: float, remote_ip: str, app: str, routed_at: float | None = None) -> Endpoint:
        """The core endpoint of a connection being set up; the connector hears ``Connecting`` (with the
        client's address and the app of its token) before the endpoint can join a room, after the
        route events when the request's arrival time ``routed_at`` is known."""
        endpoint = self.runtime.core.create_endpoint(app)
        self.apps[endpoint.session] = app
        self._announce(now, endpoint.session, remote_ip, app, routed_at)
        return endpoint

    def _announce(self, now: float, session: SessionId, remote_ip: str, app: str, routed_at: float | None) -> None:
        audit = self.runtime.core.audit
        if audit is not None:
            if routed_at is not None:
                audit.routed(now, session, remote_ip, app, min(routed_at, now))
            audit.connecting(now, session, remote_ip, app)

    def refused(self, now: float, remote_ip: str, app: str, routed_at: float | None = None) -> None:
        """An offer refused before any endpoint was made (it does not parse or cannot be answered):
        the log records the attempt, ``Connecting`` then ``ConnectError`` (InvalidSdp)."""
        audit = self.runtime.core.audit
        if audit is not None:
            session = self.runtime.core.new_session_id()
            self._announce(now, session, remote_ip, app, routed_at)
            audit.connect_failed(now, session, timed_out=False)

    def abort(self, now: float, session: SessionId, reason: str, kind: str = "") -> None:
        """Setup failed after ``new_endpoint`` and before ``attach``: the endpoint closes, and the
        connector's log does not keep the session open. ``kind``: the transport, for the metrics."""
        self.apps.pop(session, None)
        self.metrics.on_requested(kind or self.name)
        self.metrics.on_failed(kind or self.name, "setup failed")
        self.runtime.core.close_endpoint(now, session, reason)
        audit = self.runtime.core.audit
        if audit is not None:
            audit.disconnected(now, session, reason)

    def attach(self, now: float, conn: C, ufrag: str) -> None:
        """Put a new connection in the table: datagrams to ``ufrag``, its core events and its timer reach it."""
        key = conn.key
        self.conns[key] = conn
        self.admission.add(conn.token_hash)
        self.timers[key] = ConnTimer(conn, conn.machine, self.after_input)
        self.port.attach(key, ufrag, functools.partial(self._on_datagram, conn=conn))
        self.runtime.listen(key, functools.partial(self._on_core_events, conn=conn))
        self.counters[self._created] += 1
        self.sampler.start(now)
        self.metrics.on_requested(conn.kind)
        self._joining[key] = now
        self.after_input(now, conn)

    def add_ufrag(self, conn: C, ufrag: str, now: float | None = None, remote_ip: str = "") -> None:
        """An ICE restart gave the connection a new local ufrag: route it too (the old one stays valid
        until the new one is used, RFC 8445 s9). With ``now``, the connector hears ``Reconnect``, and
        ``Reconnected`` once a check with the new credentials succeeds (``after_input``)."""
        self.port.demux.register(ufrag, conn.key)
        conn.ufrags.append(ufrag)
        audit = self.runtime.core.audit
        if now is not None and audit is not None:
            audit.reconnecting(now, conn.key, remote_ip)
            self._restarting.add(conn.key)

    def after_input(self, now: float, conn: C) -> None:
        peer = conn.peer
        while (event := peer.poll_event()) is not None:
            if isinstance(event, IceSelected):
                self.port.demux.bind(event.addr, conn.key)
            elif isinstance(event, ApplicationData):
                conn.on_application_data(now, event.data)
            elif isinstance(event, Connected):
                asked = self._joining.pop(conn.key, None)
                if asked is not None:
                    self.metrics.on_connected(conn.kind, now - asked)
                    self.first_media.add(now, conn.key, conn.kind, peer, asked)
                conn.on_connected(now)
                if self.runtime.core.audit is not None:
                    self.runtime.core.audit.connected(now, conn.key, "")
                self.log.info("connected", extra={"fields": {"conn": short(peer.endpoint.conn_id), "mode": conn.kind}})
            elif isinstance(event, Disconnected):
                self.close(now, conn, event.reason)
                return
        reason = conn.close_reason()
        if reason is not None:
            self.close(now, conn, reason)
            return
        if self._restarting and conn.key in self._restarting and not peer.ice.restart_pending:
            self._restarting.discard(conn.key)
            audit = self.runtime.core.audit
            if audit is not None:
                addr = peer.ice.selected_address
                audit.reconnected(now, conn.key, addr[0] if addr is not None else "")
        timer = self.timers.get(conn.key)
        if timer is not None:
            self.runtime.track(timer)

    def close(self, now: float, conn: C, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        key = conn.key
        room = conn.peer.endpoint.room  # before the endpoint leaves it (per-room metrics)
        conn.peer.close(now, reason)
        while conn.peer.poll_event() is not None:
            pass
        self.runtime.core.close_endpoint(now, key, reason)
        audit = self.runtime.core.audit
        if audit is not None:  # after the endpoint's Leave
            if reason.startswith(CONNECT_TIMEOUT):
                audit.connect_failed(now, key, timed_out=True)
            else:
                audit.disconnected(now, key, reason)
        self._restarting.discard(key)
        self.first_media.forget(key)
        self.sampler.forget(key)
        self.port.detach(key)
        self.runtime.unlisten(key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            self.runtime.untrack(timer)
        self.conns.pop(key, None)
        self.apps.pop(key, None)
        if self._joining.pop(key, None) is not None:
            self.metrics.on_failed(conn.kind, reason)
        self.metrics.on_closed(conn, reason, room)
        self.admission.release(conn.token_hash, reason)
        self.counters[self._closed] += 1
        self.log.info(
            "session closed",
            extra={"fields": {"conn": short(conn.peer.endpoint.conn_id), "mode": conn.kind, "reason": reason}},
        )
        if self._on_closed is not None:
            self._on_closed(now, conn, reason)

    def close_all(self, now: float, reason: str = "node stopping") -> None:
        """The worker stops: every connection gets its last words, then closes."""
        for conn in list(self.conns.values()):
            conn.farewell(now, reason)
            self.close(now, conn, reason)

    def drain(self, now: float, reason: str, remain_seconds: int) -> int:
        """The node drains: ask every open connection's client to go away; how many were told."""
        told = 0
        for conn in list(self.conns.values()):
            if not conn.closing and conn.goaway(now, reason, remain_seconds):
                self.after_input(now, conn)
                told += 1
        return told

    # ---- lookup ----------------------------------------------------------------------------

    def lookup(self, conn_id: str) -> C | None:
        """The open connection ``conn_id`` names on this worker, or None (unknown, forged, closing)."""
        found = self.runtime.core.lookup(conn_id)
        conn = None if isinstance(found, ControlError) else self.conns.get(found.session)
        return None if conn is None or conn.closing else conn

    def live_conns(self) -> list[C]:
        """The open connections (``media_metrics.ConnSource``)."""
        return [c for c in self.conns.values() if not c.closing]

    def stats(self) -> dict[str, Any]:
        return {
            "sessions": len(self.conns),
            "demux": dict(self.port.demux.counters),
            "admission": self.admission.stats(),
        }

    # ---- inputs ----------------------------------------------------------------------------

    def _on_datagram(
        self, now: float, data: bytes, addr: Address, kind: PacketKind, stun: StunMessage | None, *, conn: C
    ) -> None:
        """A datagram the worker's WebRtcPort routed to ``conn``, with what the demultiplexer found."""
        peer = conn.peer
        peer.handle_datagram(now, data, addr, kind, stun)
        if kind is PacketKind.RTP and not is_rtcp(data):
            self._after_media(now, conn)
        else:
            self.after_input(now, conn)

    def _after_media(self, now: float, conn: C) -> None:
        """:meth:`after_input` for the hot input, one SRTP media packet: with nothing to handle (no peer
        event, no close, no ICE restart waiting), only the peer's inbound deadlines can have come forward
        (``WebRtcPeer.media_deadline``), so the timer is rescheduled with those instead of asking the
        connection (peer, data channel, session) for all of its timers after every packet."""
        peer = conn.peer
        if peer.has_events() or conn.closing or conn.close_reason() is not None or (
            self._restarting and conn.key in self._restarting
        ):
            self.after_input(now, conn)
            return
        timer = self.timers.get(conn.key)
        if timer is not None:
            self.runtime.track_at(timer, peer.media_deadline())

    def _on_core_events(self, now: float, *, conn: C) -> None:
        conn.on_core_events(now)
        self.after_input(now, conn)


class TrackSampler:
    """Once a second, while the table has connections and the worker reports to a connector: each
    published track's packet count and each subscribed video track's forwarded layer go to a
    :class:`~trackmesh.core.track_watch.TrackWatch`, whose reports become ``RemoteTrackMuted`` and
    ``LocalTrackLayer`` events. Reads counters the media path keeps anyway; nothing per packet."""

    __slots__ = ("_due", "table", "watch")

    def __init__(self, table: ConnTable[Any]) -> None:
        self.table = table
        self.watch = TrackWatch()
        self._due: float | None = None

    def start(self, now: float) -> None:
        if self._due is None and self.table.runtime.core.audit is not None:
            self._due = now + SAMPLE_EVERY
            self.table.runtime.track(self)

    def forget(self, session: SessionId) -> None:
        self.watch.forget(session)

    def next_deadline(self) -> float | None:
        return self._due

    def handle_timeout(self, now: float) -> None:
        audit = self.table.runtime.core.audit
        if audit is None or not self.table.conns:
            self._due = None
            return
        self._due = now + SAMPLE_EVERY
        watch = self.watch
        for key, conn in self.table.conns.items():
            if conn.closing:
                continue
            peer = conn.peer
            endpoint = peer.endpoint
            for name, track in endpoint.remote_tracks.items():
                muted = watch.published(now, key, name, track.packets)
                if muted is not None:
                    audit.track_muted(now, key, name, muted)
            forwarded: set[str] = set()
            for out in peer.outbound.values():
                if not out.video or out.local.source is None or out.packets == 0:
                    continue
                forwarded.add(out.local.name)
                layer = watch.forwarded(now, key, out.local.name, (out.spatial_layer, out.temporal_layer))
                if layer is not None:
                    audit.layer_changed(now, key, out.local.name, *layer)
            watch.keep(key, set(endpoint.remote_tracks), forwarded)


def origin(params: dict[str, Any]) -> tuple[str, str, float | None]:
    """Who asked, from a create/connect call's params (for the connector's log): the client's
    address, its token's app, and when the node's HTTP layer took the request (``routed_at``,
    monotonic: the same clock in every process of the machine)."""
    routed_at = params.get("routed_at")
    return (str(params.get("remote_ip") or ""), str(params.get("app") or ""),
            float(routed_at) if isinstance(routed_at, int | float) else None)


def short(conn_id: str) -> str:
    """A conn id for logs: its head is version and node, its tail (nonce and tag) tells them apart."""
    return conn_id[-10:]
