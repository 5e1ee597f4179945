"""WHIP/WHEP and SDK sessions share the worker's one WebRTC port: demux and certificate."""

from __future__ import annotations

from trackmesh.config import resolve
from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.runtime.webrtc_port import WebRtcPort
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime


def test_transports_share_one_port() -> None:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    whip_whep = WebRtcTransport(runtime)
    sdk = SdkTransport(runtime)
    port = runtime.services[WebRtcPort]
    assert isinstance(port, WebRtcPort)
    assert whip_whep.demux is sdk.demux is port.demux
    assert whip_whep.fingerprint == sdk.fingerprint == port.fingerprint
    assert runtime.datagram_handler == port.on_datagram


def test_unrouted_datagrams_are_counted() -> None:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    port = WebRtcPort.of(runtime)
    port.on_datagram(1.0, b"\x80\x60" + b"\0" * 20, ("127.0.0.1", 5000))
    port.on_datagram(1.0, b"", ("127.0.0.1", 5000))
    assert runtime.counters["udp_rx_unrouted"] == 2
