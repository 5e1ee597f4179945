"""The explicit media path of WebRtcPeer: what the demultiplexer found travels with the datagram, the packet
carries its arrival time and parsed descriptor, DTLS application data is an event, and only remote protocol
errors are caught at the peer's input (h11's rule: a bug of ours must surface)."""

from __future__ import annotations

import pytest

from trackmesh.codecs.vp8 import Vp8Descriptor
from trackmesh.core.model import MediaPacket
from trackmesh.core.tracks import MediaSink
from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.net import Address
from trackmesh.transports.webrtc.demux import PacketKind
from trackmesh.transports.webrtc.events import ApplicationData
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import Net
from .test_peer import A_SSRC, RTX_SSRC, V_SSRC, net, publish, send_frames

__all__ = ["net"]  # the fixture, shared with test_peer


def _rtp_from(net: Net) -> tuple[bytes, Address, WebRtcPeer]:
    """An SRTP packet of a connected publisher, not yet delivered."""
    pub, ppeer = publish(net)
    send_frames(net, pub, 1, 1)
    assert pub.srtp is not None
    pub.send_rtp(96, 2, 3000, V_SSRC, b"\x10" + bytes(20), mid="1", marker=True)
    return pub.out.popleft(), pub.addr, ppeer


class _BrokenChannel:
    """A channel hub whose publish path fails with ``bug``: a fault below the peer (the core, its hub)
    that the peer's own code reaches through a call. The compiled peer (setup.py) calls the compiled
    media_in directly, so a monkeypatched InboundMedia method would not be reached there; the
    channel behind a RemoteTrack is a protocol, reached in both builds."""

    def __init__(self, bug: Exception) -> None:
        self.bug = bug

    def start_publish(self, now: float, channel: int, publisher: object) -> _BrokenChannel:
        return self

    def send(self, pkt: MediaPacket) -> None:
        raise self.bug

    def stop(self, now: float) -> None:
        pass


def _break_channels(ppeer: WebRtcPeer, now: float, bug: Exception) -> None:
    assert ppeer.endpoint.remote_tracks
    for remote in ppeer.endpoint.remote_tracks.values():
        remote.start(now, _BrokenChannel(bug))  # type: ignore[arg-type]


@pytest.mark.parametrize("bug", [IndexError("our bug"), KeyError("our bug"), LocalProtocolError("our bug")])
def test_a_bug_below_the_peer_surfaces(net: Net, bug: Exception) -> None:
    data, addr, ppeer = _rtp_from(net)
    _break_channels(ppeer, net.now, bug)
    with pytest.raises(type(bug), match="our bug"):
        ppeer.handle_datagram(net.now, data, addr, PacketKind.RTP)
    assert ppeer.counters["handler_errors"] == 0


def test_a_remote_protocol_error_that_escapes_a_parser_is_counted(net: Net) -> None:
    data, addr, ppeer = _rtp_from(net)
    _break_channels(ppeer, net.now, RemoteProtocolError("bad input"))
    ppeer.handle_datagram(net.now, data, addr, PacketKind.RTP)
    assert ppeer.counters["handler_errors"] == 1
    assert not ppeer.closed


def test_dtls_application_data_is_an_event_of_the_peer(net: Net) -> None:
    # A peer that keeps its DTLS connection (an SDK peer with a data channel does).
    pub, ppeer = net.connect(PeerMode.WHIP, peer="alice", ssrcs=(A_SSRC, V_SSRC, RTX_SSRC), release_dtls=False)
    assert not ppeer.dtls.connection_released
    assert pub.dtls is not None
    for record in (b"first sctp packet", b"second"):
        pub.dtls.send_application_data(record)
    while (d := pub.dtls.poll_transmit()) is not None:
        pub.out.append(d)
    net.flush()
    got = [ev for ev in net.peer_events(ppeer) if isinstance(ev, ApplicationData)]
    assert got == [ApplicationData(b"first sctp packet"), ApplicationData(b"second")]
    assert ppeer.counters["dtls_application_data"] == 2


def test_packets_carry_their_arrival_and_parsed_vp8_descriptor_to_every_viewer(net: Net) -> None:
    seen: list[MediaPacket] = []
    viewers = [net.connect(PeerMode.WHEP)[1] for _ in range(2)]
    for vpeer in viewers:
        local = vpeer.endpoint.local_track("video_0")
        assert local is not None and local.sink is not None
        sink = local.sink

        def tap(pkt: MediaPacket, sink: MediaSink = sink) -> None:
            seen.append(pkt)
            sink(pkt)

        local.sink = tap
    pub, _ = publish(net)
    net.advance(0.5)
    at = net.now
    pub.send_rtp(96, 1, 0, V_SSRC, b"\x90\x80\x05" + bytes(10), mid="1", marker=True)  # X, I: picture id 5
    net.flush()
    assert len(seen) == 2 and seen[0] is seen[1]  # one packet object, shared by the viewers
    pkt = seen[0]
    assert pkt.arrival == at
    assert isinstance(pkt.meta, Vp8Descriptor) and pkt.meta.picture_id == 5
    for vpeer in viewers:
        assert vpeer.outbound["1"].last_ts_at == at  # the viewer's now is the packet's arrival
