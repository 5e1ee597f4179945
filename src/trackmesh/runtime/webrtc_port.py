"""WebRtcPort: the WebRTC side of a worker's single UDP port, shared by every WebRTC transport.

WHIP/WHEP sessions and SDK sessions live on the same port, so they share one demultiplexer
(ICE ufrag, then remote address: RFC 7983 classification), one DTLS certificate and, above all,
one :class:`~trackmesh.transports.webrtc.events.SharedClock`: a viewer's sink runs inside
the *publisher's* input handling, whichever transport either of them uses, so every peer of the
worker must read the same ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

from trackmesh.core.ids import SessionId
from trackmesh.transports.webrtc.answer import LocalParams
from trackmesh.transports.webrtc.demux import SharedPortDemux
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.events import SharedClock

from .worker import WorkerRuntime

DatagramHandler = Callable[[float, bytes, tuple[str, int]], None]


class _Closable(Protocol):
    closing: bool


class _Timed(Protocol):
    def next_deadline(self) -> float | None: ...
    def handle_timeout(self, now: float) -> None: ...


C = TypeVar("C", bound=_Closable)


class ConnTimer(Generic[C]):
    """Adapts one connection to the worker scheduler: fire its state machine (a WebRtcPeer or an SdkSession), then
    let the transport handle what it said. A closing connection has no deadline."""

    __slots__ = ("after_input", "conn", "machine")

    def __init__(self, conn: C, machine: _Timed, after_input: Callable[[float, C], None]) -> None:
        self.conn = conn
        self.machine = machine
        self.after_input = after_input

    def next_deadline(self) -> float | None:
        return None if self.conn.closing else self.machine.next_deadline()

    def handle_timeout(self, now: float) -> None:
        self.machine.handle_timeout(now)
        self.after_input(now, self.conn)


class WebRtcPort:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        # Backdated a day so a client whose clock runs a little behind still accepts it.
        self.certificate = DtlsCertificate.generate(datetime.now(UTC) - timedelta(days=1))
        self.fingerprint = self.certificate.fingerprint_sha256()
        self.demux: SharedPortDemux[SessionId] = SharedPortDemux()
        self.clock = SharedClock()
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
        key = self.demux.route(data, addr)
        handler = self._owners.get(key) if key is not None else None
        if handler is None:
            self.runtime.counters[self._unrouted] += 1
            return
        handler(now, data, addr)
