"""Peers free OpenSSL's DTLS connection once connected (issue 19: peer memory); media, consent, the
DTLS close and a data channel's records still work, in memory on a virtual clock (see peer_client.py)."""

from __future__ import annotations

from trackmesh.transports.webrtc.dtls.endpoint import DtlsState
from trackmesh.transports.webrtc.events import ApplicationData, Disconnected
from trackmesh.transports.whip_whep.session import PeerMode

from .peer_client import Net
from .test_peer import A_SSRC, RTX_SSRC, V_SSRC, send_frames


def test_whip_and_whep_peers_release_dtls_and_still_forward_media() -> None:
    net = Net()
    pub, ppeer = net.connect(PeerMode.WHIP, peer="alice", ssrcs=(A_SSRC, V_SSRC, RTX_SSRC))
    viewer, vpeer = net.connect(PeerMode.WHEP)
    assert ppeer.dtls.connection_released and vpeer.dtls.connection_released
    assert ppeer.dtls.state is vpeer.dtls.state is DtlsState.CONNECTED
    sent = send_frames(net, pub, 100, 5)
    assert viewer.payloads(viewer.local_ssrc("1"))[-5:] == sent
    net.advance(40.0)  # consent checks keep an idle released peer up
    assert not vpeer.closed


def test_a_released_viewer_is_closed_by_the_clients_close_notify() -> None:
    net = Net()
    viewer, vpeer = net.connect(PeerMode.WHEP)
    assert viewer.dtls is not None and vpeer.dtls.connection_released
    viewer.dtls.close()
    while (d := viewer.dtls.poll_transmit()) is not None:
        viewer.out.append(d)
    net.flush()
    assert vpeer.closed and Disconnected("dtls closed") in net.peer_events(vpeer)
    # Our close_notify in answer is one OpenSSL would accept: the client, already closed, ignores it.
    assert viewer.dtls.ignored_datagrams == 1


def test_a_peer_that_keeps_its_connection_when_not_asked_to_release() -> None:
    net = Net()
    _, bare = net.connect(None, release_dtls=False)
    assert bare.dtls.state is DtlsState.CONNECTED and not bare.dtls.connection_released


def test_a_released_peer_still_carries_application_data_both_ways() -> None:
    """An SDK peer's data channel (SCTP in DTLS records, RFC 8261) goes on after the release."""
    net = Net()
    client, bare = net.connect(None, release_dtls=True)
    assert client.dtls is not None and bare.dtls.connection_released
    for i in range(3):
        client.dtls.send_application_data(b"sctp from the client %d" % i)
    while (d := client.dtls.poll_transmit()) is not None:
        client.out.append(d)
    net.flush()
    got = [ev.data for ev in net.peer_events(bare) if isinstance(ev, ApplicationData)]
    assert got == [b"sctp from the client %d" % i for i in range(3)]
    assert bare.send_application_data(b"sctp from the server")
    net.flush()
    assert client.app_data == [b"sctp from the server"]
    assert bare.counters["dtls_application_data"] == 3 and not bare.closed
