"""The asyncio TCP driver of the sans-IO RTMP core (transports/rtmp): a listener and its
connections, nothing else. What a publish *means* (token check, joining a room, media into
tracks) belongs to the :class:`RtmpHandler` given to it.

- One :class:`asyncio.Protocol` per connection: ``data_received`` feeds the
  :class:`~trackmesh.transports.rtmp.session.ServerSession` with the loop's time, hands its
  events to the handler and writes what it has to send. No await and no logging per message.
- One timer per listener: a sweep every ``sweep_interval`` seconds runs each session's
  handshake/idle deadline (a handshake that never finishes, a publisher gone silent).
- A connection limit: over ``max_connections`` a new connection is closed at once and counted.
- Decisions are the handler's and may come later (from a task that checks a token): the
  session holds what follows a pending connect/publish until :meth:`RtmpConnection.accept_connect`
  / ``reject_*`` is called.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
from typing import Protocol, cast

from trackmesh.transports.rtmp.events import Closed, Event
from trackmesh.transports.rtmp.session import ServerSession

__all__ = ["ListenerStats", "RtmpConnection", "RtmpHandler", "RtmpListener"]

log = logging.getLogger("trackmesh.rtmp")
_DIGITS = re.compile(r"\b\d+\b")


class RtmpHandler(Protocol):
    """What the listener reports to. ``on_event`` gets every session event in order; for
    ConnectRequested and PublishRequested it must (now or later) call the connection's
    accept/reject. Exceptions raised here close that connection, never the listener."""

    def on_event(self, conn: RtmpConnection, event: Event) -> None: ...


class ListenerStats:
    """Counters for /metrics."""

    __slots__ = ("bytes_received", "connections", "errors", "handler_errors", "refused")

    def __init__(self) -> None:
        self.connections = 0  # accepted since start
        self.refused = 0  # over the connection limit
        self.errors: dict[str, int] = {}  # sessions closed with error=True, by reason
        self.handler_errors = 0
        self.bytes_received = 0


class RtmpConnection(asyncio.Protocol):
    """One TCP connection and its session; the handler's decisions go through here."""

    def __init__(self, listener: RtmpListener, conn_id: int) -> None:
        self.listener = listener
        self.conn_id = conn_id
        self.peer: tuple[str, int] | None = None
        self.session = ServerSession(
            listener.loop.time(),
            handshake_timeout=listener.handshake_timeout,
            idle_timeout=listener.idle_timeout,
        )
        self._transport: asyncio.Transport | None = None
        self._flushing = False

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are not asyncio.Transport subclasses: the same interface, unchecked.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else None

    def data_received(self, data: bytes) -> None:
        self.listener.stats.bytes_received += len(data)
        self.session.receive_data(data, self.listener.loop.time())
        self._after_input()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.session.connection_lost()
        self._after_input()
        self.listener.forget(self)

    # ---- decisions ----------------------------------------------------------------------

    def accept_connect(self) -> None:
        self.session.accept_connect()
        self._after_input()

    def reject_connect(self, description: str) -> None:
        self.session.reject_connect(description)
        self._after_input()

    def accept_publish(self, stream_id: int) -> None:
        self.session.accept_publish(stream_id)
        self._after_input()

    def reject_publish(self, stream_id: int, description: str, code: str = "NetStream.Publish.BadName") -> None:
        self.session.reject_publish(stream_id, description, code)
        self._after_input()

    def close(self, reason: str = "closed by the server") -> None:
        """End the connection from above (an operator's DELETE, a takeover by a reconnect)."""
        self.session.close(reason)
        self._after_input()

    # ---- internals ----------------------------------------------------------------------

    def handle_timeout(self, now: float) -> None:
        self.session.handle_timeout(now)
        self._after_input()

    def _after_input(self) -> None:
        # A handler that decides inside on_event calls back in here: the outer call delivers
        # what that decision released, in order, instead of a nested loop.
        if self._flushing:
            return
        self._flushing = True
        session = self.session
        try:
            while events := session.events():
                for event in events:
                    self._deliver(event)
        finally:
            self._flushing = False
        transport = self._transport
        if transport is None:
            return
        out = session.data_to_send()
        if out:
            transport.write(out)
        if session.closed:
            transport.close()  # flushes what was written (the onStatus error) first

    def _deliver(self, event: Event) -> None:
        if isinstance(event, Closed) and event.error:
            errors = self.listener.stats.errors
            # Numbers out of the reason keep the label set small ("message length N over ...").
            kind = _DIGITS.sub("N", event.reason.split(":")[0])[:60]
            errors[kind] = errors.get(kind, 0) + 1
            log.info("rtmp conn %d from %s closed: %s", self.conn_id, self.peer, event.reason)
        try:
            self.listener.handler.on_event(self, event)
        except Exception:
            self.listener.stats.handler_errors += 1
            log.exception("rtmp handler failed on %s; closing conn %d", type(event).__name__, self.conn_id)
            self.session.close("handler error")


class RtmpListener:
    """``await RtmpListener(handler).start(host, port)``; ``await close()`` at shutdown."""

    def __init__(
        self,
        handler: RtmpHandler,
        *,
        max_connections: int = 1000,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        sweep_interval: float = 1.0,
    ) -> None:
        self.handler = handler
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.sweep_interval = sweep_interval
        self.stats = ListenerStats()
        self.connections: dict[int, RtmpConnection] = {}
        self.loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(self._new_connection, host, port)
        self._sweeper = self.loop.create_task(self._sweep())

    async def start_on(self, sock: socket.socket) -> None:
        """Serve on a socket already bound and listening (a worker binds at start, so a taken
        port is a startup error and not a failed task)."""
        self._server = await self.loop.create_server(self._new_connection, sock=sock)
        self._sweeper = self.loop.create_task(self._sweep())

    def stop_serving(self) -> None:
        """Stop accepting and sweeping (the connections are closed by their owner)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()

    def _new_connection(self) -> asyncio.Protocol:
        if len(self.connections) >= self.max_connections:
            self.stats.refused += 1
            return _Refused()
        conn = RtmpConnection(self, next(self._ids))
        self.connections[conn.conn_id] = conn
        self.stats.connections += 1
        return conn

    def forget(self, conn: RtmpConnection) -> None:
        """Drop a connection that has ended (called by the connection itself)."""
        self.connections.pop(conn.conn_id, None)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = self.loop.time()
            for conn in list(self.connections.values()):
                deadline = conn.session.next_deadline()
                if deadline is not None and now >= deadline:
                    conn.handle_timeout(now)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.close("server shutting down")
        if self._server is not None:
            await self._server.wait_closed()


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed before reading a byte."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
