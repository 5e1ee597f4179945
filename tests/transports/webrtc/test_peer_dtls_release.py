"""WHIP/WHEP peers free OpenSSL's DTLS connection once connected (issue 19: idle peer memory);
media, consent and the DTLS close still work, in memory on a virtual clock (see peer_client.py)."""

from __future__ import annotations

from trackmesh.transports.webrtc.dtls.endpoint import DtlsState
from trackmesh.transports.webrtc.events import Disconnected
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


def test_a_peer_that_may_carry_a_data_channel_keeps_its_connection() -> None:
    net = Net()
    _, bare = net.connect(None, release_dtls=False)  # an SDK peer: its data channel runs over DTLS
    assert bare.dtls.state is DtlsState.CONNECTED and not bare.dtls.connection_released
