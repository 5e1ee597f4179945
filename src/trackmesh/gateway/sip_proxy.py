"""The zone gateway's ``--sip-port``: UDP and TCP drivers around the stateless SIP proxy core.

TCP (RFC 3261 s18) on the same port: each connection's stream is framed by Content-Length
(parser.StreamFramer) and every frame goes to the core with the connection's peer as its source; what
the core sends over TCP is written on the connection to its destination (a caller's, or ours to a media
node, kept open and shared by every dialog sent to that node), else on a new connection.

A trunk or phone needs one address for the zone (docs/sip.md, *In a cluster*): each new dialog goes to
the least-loaded media node whose load report names a SIP address (``"sip": "host:port"``), and the
dialog's later requests follow the Record-Route back to it (transports/sip/proxy.py). No dialog state
here, so a gateway restart keeps established calls routable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol, cast

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.sip.parser import StreamFramer
from trackmesh.transports.sip.proxy import TCP, ProxyDatagram, SipNode, StatelessProxy

from .directory import NodeEntry

__all__ = ["SipProxyDriver", "sip_address"]

log = logging.getLogger("trackmesh.gateway")

Address = tuple[str, int]
MAX_TCP_CONNECTIONS = 1000
CONNECT_TIMEOUT = 5.0


class Nodes(Protocol):
    nodes: dict[int, NodeEntry]

    def candidates(self, now: float) -> list[NodeEntry]: ...


def sip_address(entry: NodeEntry) -> tuple[str, int] | None:
    """A media node's SIP listener from its load report, or None (SIP off, or a bad value)."""
    value = entry.raw.get("sip")
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]"), int(port)


class SipProxyDriver(asyncio.DatagramProtocol):
    def __init__(self, directory: Nodes, now: Callable[[], float], counters: dict[str, int]) -> None:
        self.directory = directory
        self._now = now
        self.counters = counters
        self.proxy: StatelessProxy | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        #: Open TCP connections by peer: callers' and ours to media nodes.
        self.connections: dict[Address, _ProxyConnection] = {}
        self._connecting: dict[Address, list[bytes]] = {}  # connects of ours in progress: queued bytes
        self._tasks: set[asyncio.Task[None]] = set()
        for what in ("tcp_framing_errors", "tcp_connect_failures"):
            self.counters.setdefault("sip_proxy_" + what, 0)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._udp = transport
        bound = int(transport.get_extra_info("sockname")[1])
        try:
            self._tcp = await loop.create_server(lambda: _ProxyConnection(self), host, bound)
        except OSError:
            transport.close()
            self._udp = None
            raise
        self.proxy = StatelessProxy(host, bound, self.counters)

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for conn in list(self.connections.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()

    def _nodes(self, now: float) -> list[SipNode]:
        """The zone's SIP nodes: healthy ones best first (new dialogs), then the rest (their dialogs)."""
        best = self.directory.candidates(now)
        out = [SipNode(e.node, a) for e in best if (a := sip_address(e)) is not None]
        seen = {e.node for e in best}
        out += [SipNode(e.node, a, accepting=False) for e in self.directory.nodes.values()
                if e.node not in seen and (a := sip_address(e)) is not None]  # fmt: skip
        return out

    def datagram_received(self, data: bytes, addr: Any) -> None:
        proxy, udp = self.proxy, self._udp
        if proxy is None or udp is None:
            return
        now = self._now()
        proxy.handle_datagram(now, data, (addr[0], addr[1]), self._nodes(now))
        self._flush(proxy, udp)

    def stream_frame_received(self, frame: bytes, peer: Address) -> None:
        proxy, udp = self.proxy, self._udp
        if proxy is None or udp is None:
            return
        now = self._now()
        proxy.handle_stream_frame(now, frame, peer, self._nodes(now))
        self._flush(proxy, udp)

    def _flush(self, proxy: StatelessProxy, udp: asyncio.DatagramTransport) -> None:
        while (out := proxy.poll_transmit()) is not None:
            if out.transport == TCP:
                self._send_tcp(out)
            else:
                udp.sendto(out.data, out.destination)

    def _send_tcp(self, out: ProxyDatagram) -> None:
        """On the connection to ``destination``, else a new one to ``connect`` (s18.1.1, s18.2.2); a failed
        connect is counted and the message dropped (the sender's transaction retransmits or times out)."""
        target = out.connect or out.destination
        for where in (out.destination, target):
            queued = self._connecting.get(where)
            if queued is not None:  # a connect of ours in progress: after what queued before (order)
                queued.append(out.data)
                return
            conn = self.connections.get(where)
            if conn is not None:
                conn.write(out.data)
                return
        if len(self.connections) + len(self._connecting) >= MAX_TCP_CONNECTIONS:
            self.counters["sip_proxy_tcp_connect_failures"] += 1
            return
        self._connecting[target] = [out.data]
        task = asyncio.get_running_loop().create_task(self._connect(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, target: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _ProxyConnection(self), target[0], target[1]), CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError):
            self.counters["sip_proxy_tcp_connect_failures"] += 1
            self._connecting.pop(target, None)
            return
        for chunk in self._connecting.pop(target, []):
            conn.write(chunk)


class _ProxyConnection(asyncio.Protocol):
    """One TCP connection of the proxy: bytes -> StreamFramer -> frames to the core."""

    def __init__(self, driver: SipProxyDriver) -> None:
        self.driver = driver
        self.framer = StreamFramer()
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.driver.connections) >= MAX_TCP_CONNECTIONS:
            transport.close()
            return
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (host, port)
        self.driver.connections[self.peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.driver.connections.get(self.peer) is self:
            del self.driver.connections[self.peer]

    def data_received(self, data: bytes) -> None:
        try:
            self.framer.feed(data)
            while (frame := self.framer.next_frame()) is not None:
                self.driver.stream_frame_received(frame, self.peer)
        except RemoteProtocolError:
            # A stream cannot resynchronise after a framing error (s18.3): close it.
            self.driver.counters["sip_proxy_tcp_framing_errors"] += 1
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
