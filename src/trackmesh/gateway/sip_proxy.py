"""The zone gateway's ``--sip-port``: a UDP driver around the stateless SIP proxy core.

A trunk or phone needs one address for the zone (docs/sip.md, *In a cluster*): each new dialog goes to
the least-loaded media node whose load report names a SIP address (``"sip": "host:port"``), and the
dialog's later requests follow the Record-Route back to it (transports/sip/proxy.py). No dialog state
here, so a gateway restart keeps established calls routable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from trackmesh.transports.sip.proxy import SipNode, StatelessProxy

from .directory import NodeEntry

__all__ = ["SipProxyDriver", "sip_address"]

log = logging.getLogger("trackmesh.gateway")


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

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        self._udp = transport
        self.proxy = StatelessProxy(host, int(transport.get_extra_info("sockname")[1]), self.counters)

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None

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
        while (out := proxy.poll_transmit()) is not None:
            udp.sendto(out.data, out.destination)
