"""WebRtcPort: the WebRTC side of a worker's single UDP port, shared by every WebRTC transport.

WHIP/WHEP sessions and SDK sessions live on the same port, so they share one demultiplexer
(ICE ufrag, then remote address: RFC 7983 classification) and one DTLS certificate. A viewer's
sink runs inside the *publisher's* input handling, whichever transport either of them uses; its
``now`` is the packet's arrival (``MediaPacket.arrival``), so the peers share no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from trackmesh.core.ids import SessionId
from trackmesh.net import Address
from trackmesh.transports.webrtc.answer import LocalParams
from trackmesh.transports.webrtc.demux import PacketKind, SharedPortDemux
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.ice.stun import StunMessage

from .worker import WorkerRuntime

#: A transport's handler for the datagrams of one connection: ``(now, data, addr, kind, stun)``, with what the
#: demultiplexer found (:data:`~trackmesh.transports.webrtc.demux.Routed`).
DatagramHandler = Callable[[float, bytes, Address, PacketKind, StunMessage | None], None]


class WebRtcPort:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        # Backdated a day so a client whose clock runs a little behind still accepts it.
        self.certificate = DtlsCertificate.generate(datetime.now(UTC) - timedelta(days=1))
        self.fingerprint = self.certificate.fingerprint_sha256()
        self.demux: SharedPortDemux[SessionId] = SharedPortDemux()
        self._owners: dict[SessionId, DatagramHandler] = {}
        self._unrouted = "udp_rx_unrouted"
        runtime.counters.setdefault(self._unrouted, 0)
        runtime.datagram_handler = self.on_datagram

    @classmethod
    def of(cls, runtime: WorkerRuntime) -> WebRtcPort:
        """The worker's port (made by the first transport that asks)."""
        port = runtime.services.get(cls)
        if port is None:
            port = runtime.services[cls] = cls(runtime)
        assert isinstance(port, cls)
        return port

    def local_params(self, ufrag: str, pwd: str) -> LocalParams:
        """Our side of an SDP answer: these ICE credentials, our fingerprint, our one candidate."""
        cfg = self.runtime.config
        return LocalParams(ufrag, pwd, self.fingerprint, cfg.node_ip, self.runtime.udp_port)

    def attach(self, key: SessionId, ufrag: str, handler: DatagramHandler) -> None:
        """Route datagrams for ``key`` (first found by ``ufrag``) to ``handler``."""
        self._owners[key] = handler
        self.demux.register(ufrag, key)

    def detach(self, key: SessionId) -> None:
        self._owners.pop(key, None)
        self.demux.unregister(key)

    def on_datagram(self, now: float, data: bytes, addr: tuple[str, int]) -> None:
        routed = self.demux.route(data, addr)
        handler = self._owners.get(routed[0]) if routed is not None else None
        if handler is None or routed is None:
            self.runtime.counters[self._unrouted] += 1
            return
        handler(now, data, addr, routed[1], routed[2])
