"""WebRtcPeer end to end in memory: a WHIP publisher and WHEP viewers through one MediaWorker
with the in-process registry and hub, on a virtual clock (see peer_client.py)."""

from __future__ import annotations

import random

import pytest

from trackmesh.core.controls import CreateLocalTrack, Join, Publish
from trackmesh.core.events import AlternateWanted
from trackmesh.core.model import LocalTrackState, MediaCodec, MediaPacket, TrackKind
from trackmesh.rtp.packet import find_extension
from trackmesh.rtp.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    ReportBlock,
    SenderReport,
    TransportCcFeedback,
    build_nack,
    build_pli,
    build_rr,
)
from trackmesh.transports.webrtc.demux import PacketKind, classify
from trackmesh.transports.webrtc.events import Connected, Disconnected, IceSelected
from trackmesh.transports.webrtc.peer import DEFAULT_CONNECT_TIMEOUT, WebRtcPeer
from trackmesh.transports.whip_whep.session import PeerMode, SessionSetupError

from .peer_client import EXT_MID, VP8_DELTA, VP8_KEY, Client, Net

A_SSRC, V_SSRC, RTX_SSRC = 0x1111, 0x2222, 0x3333


@pytest.fixture
def net() -> Net:
    return Net()


def publish(net: Net, peer: str = "alice") -> tuple[Client, WebRtcPeer]:
    return net.connect(PeerMode.WHIP, peer=peer, ssrcs=(A_SSRC, V_SSRC, RTX_SSRC))


def send_frames(
    net: Net, client: Client, first_seq: int, count: int, *, keyframe_first: bool = True, ssrc: int = V_SSRC
) -> list[bytes]:
    """``count`` VP8 packets (one per frame, 30 fps) and as many Opus packets; returns the
    video payloads sent."""
    sent = []
    for i in range(count):
        seq = first_seq + i
        body = (VP8_KEY if keyframe_first and i == 0 else VP8_DELTA) + bytes([seq & 0xFF]) * 40
        client.send_rtp(96, seq, 3000 * seq, ssrc, body, mid="1", marker=True)
        client.send_rtp(111, seq, 960 * seq, A_SSRC, b"opus" + bytes([seq & 0xFF]) * 20, mid="0", level=30)
        sent.append(body)
        net.flush()
        net.advance(1 / 30)
    return sent


def test_ice_and_dtls_connect(net: Net) -> None:
    client, peer = publish(net)
    events = net.peer_events(peer)
    assert events[0] == IceSelected(client.addr)
    assert Connected() in events
    assert peer.connected and client.srtp is not None
    assert net.demux.lookup_address(client.addr) == peer.endpoint.session
    # WHIP publishes its m-lines under the atm0s names once media can flow.
    assert set(peer.endpoint.remote_tracks) == {"audio_main", "video_main"}


def test_published_media_reaches_both_viewers_rewritten(net: Net) -> None:
    # The second viewer negotiates other payload type numbers than the publisher.
    v1, p1 = net.connect(PeerMode.WHEP)
    v2, p2 = net.connect(PeerMode.WHEP, audio_pt=109, video_pt=120)
    pub, _ = publish(net)
    sent = send_frames(net, pub, 100, 10)
    for viewer, vpt, apt in ((v1, 96, 111), (v2, 120, 109)):
        video = viewer.media(viewer.local_ssrc("1"))
        audio = viewer.media(viewer.local_ssrc("0"))
        assert [h.payload_type for h, _ in video] == [vpt] * 10
        assert [h.payload_type for h, _ in audio] == [apt] * 10
        assert viewer.payloads(viewer.local_ssrc("1")) == sent
        seqs = [h.sequence_number for h, _ in video]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(10)]
        ts = [h.timestamp for h, _ in video]
        assert [(t - ts[0]) & 0xFFFFFFFF for t in ts] == [3000 * i for i in range(10)]
        # Our transport-wide sequence numbers are present and strictly increasing.
        locs = [(find_extension(p, h, 3), p) for h, p in video]
        twcc = [int.from_bytes(p[loc[0] : loc[0] + 2], "big") for loc, p in locs if loc is not None]
        assert len(twcc) == 10 and twcc == sorted(twcc) and len(set(twcc)) == 10
    local = p1.endpoint.local_track("video_0")
    assert local is not None and local.state is LocalTrackState.ACTIVE
    assert p2.outbound["1"].counters["codec_not_negotiated"] == 0


def test_viewer_key_frame_requests_merge_into_one_pli(net: Net) -> None:
    v1, _ = net.connect(PeerMode.WHEP)
    v2, _ = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 1, 2)
    net.advance(1.0)
    pub.rtcp.clear()
    v1.send_rtcp(build_pli(1, v1.local_ssrc("1")))
    v2.send_rtcp(build_pli(2, v2.local_ssrc("1")))
    net.flush()
    net.advance(0.05)
    plis = pub.rtcp_of(Pli)
    assert len(plis) == 1 and plis[0].media_ssrc == V_SSRC


def test_viewer_nack_is_answered_with_rtx_from_the_buffer(net: Net) -> None:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    plain_viewer, _ = net.connect(PeerMode.WHEP, rtx=False)
    pub, _ = publish(net)
    sent = send_frames(net, pub, 500, 5)
    vssrc = viewer.local_ssrc("1")
    lost = viewer.media(vssrc)[2][0].sequence_number
    rtx_ssrc = vpeer.outbound["1"].rtx_ssrc
    assert rtx_ssrc is not None
    viewer.send_rtcp(build_nack(1, vssrc, [lost]))
    net.flush()
    ((h, p),) = viewer.media(rtx_ssrc)
    assert h.payload_type == 97
    body = p[h.payload_offset : h.payload_offset + h.payload_length]
    # RFC 4588 s4: OSN then the original payload.
    assert int.from_bytes(body[:2], "big") == lost and body[2:] == sent[2]
    # Without RTX the same packet is sent again (the first copy was lost on the way).
    pssrc = plain_viewer.local_ssrc("1")
    last = plain_viewer.media(pssrc)[-1][0].sequence_number
    plain_viewer.lose.add((pssrc, (last + 1) & 0xFFFF))
    send_frames(net, pub, 505, 2, keyframe_first=False)
    assert [h.sequence_number for h, _ in plain_viewer.media(pssrc)][-1] == (last + 2) & 0xFFFF
    plain_viewer.send_rtcp(build_nack(1, pssrc, [(last + 1) & 0xFFFF]))
    net.flush()
    h2, p2 = plain_viewer.media(pssrc)[-1]
    assert h2.sequence_number == (last + 1) & 0xFFFF and h2.payload_type == 96
    assert p2[h2.payload_offset :] == VP8_DELTA + bytes([505 & 0xFF]) * 40


def test_viewer_nack_older_than_the_ring_age_is_not_answered(net: Net) -> None:
    """The retransmission ring is bounded by age (1 s) as well as count: a NACK that late is
    counted as a miss, not answered with a packet the viewer's jitter buffer has given up on."""
    viewer, vpeer = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 500, 5)
    vssrc = viewer.local_ssrc("1")
    early, late = (viewer.media(vssrc)[i][0].sequence_number for i in (1, 2))
    rtx_ssrc = vpeer.outbound["1"].rtx_ssrc
    assert rtx_ssrc is not None
    net.advance(0.5)
    viewer.send_rtcp(build_nack(1, vssrc, [early]))
    net.flush()
    assert len(viewer.media(rtx_ssrc)) == 1  # within the age bound: answered
    net.advance(0.7)
    viewer.send_rtcp(build_nack(1, vssrc, [late]))
    net.flush()
    assert len(viewer.media(rtx_ssrc)) == 1  # 1.2 s after it was sent: not answered
    counters = vpeer.outbound["1"].counters
    assert (counters["nack_hits"], counters["nack_misses"]) == (1, 1)


def test_publisher_loss_is_nacked_and_rtx_unwrapped(net: Net) -> None:
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 10, 3)
    # seq 13 is lost on the way in; 14 arrives.
    pub.send_rtp(96, 14, 3000 * 14, V_SSRC, VP8_DELTA + b"x" * 40, mid="1")
    net.flush()
    net.advance(0.02)
    nacks = pub.rtcp_of(Nack)
    assert nacks and nacks[0].lost == [13] and nacks[0].media_ssrc == V_SSRC
    # The publisher repairs it on its RTX stream (payload type 97, OSN first).
    pub.send_rtp(97, 1, 3000 * 13, RTX_SSRC, (13).to_bytes(2, "big") + VP8_DELTA + b"r" * 40, mid="1")
    net.flush()
    vssrc = viewer.local_ssrc("1")
    got = viewer.media(vssrc)
    assert got[-1][0].timestamp - got[-2][0].timestamp == -3000
    assert viewer.payloads(vssrc)[-1] == VP8_DELTA + b"r" * 40
    # The repaired packet takes the slot right before 14's: seq continuity holds.
    assert got[-1][0].sequence_number == (got[-2][0].sequence_number - 1) & 0xFFFF


def test_a_packet_never_forwarded_is_a_gap_at_the_viewer(net: Net) -> None:
    # Sequence rewriting must never hide loss: the viewer can only NACK a hole it sees (issue 17).
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    lost = {13, 20, 21, 40}
    for seq in range(10, 50):
        if seq in lost:
            continue  # lost on the way in, never repaired
        body = (VP8_KEY if seq == 10 else VP8_DELTA) + bytes([seq & 0xFF]) * 40
        pub.send_rtp(96, seq, 3000 * seq, V_SSRC, body, mid="1", marker=True)
        net.flush()
        net.advance(1 / 30)
    got = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    first = got[0]
    # Every forwarded packet keeps its distance to the first: the holes are exactly the losses.
    assert [(s - first) & 0xFFFF for s in got] == [seq - 10 for seq in range(10, 50) if seq not in lost]
    holes = {(first + i) & 0xFFFF for i in range(40)} - set(got)
    assert len(holes) == len(lost)


def test_duplicates_from_the_publisher_are_not_forwarded(net: Net) -> None:
    # Chrome probes bandwidth with RTX copies of packets it already sent; forwarded, a copy
    # reuses the viewer's sequence number, its SRTP replay check drops it and the viewer's
    # transport-cc feedback reports it lost.
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    send_frames(net, pub, 10, 3)
    vssrc = viewer.local_ssrc("1")
    before = len(viewer.media(vssrc))
    pub.send_rtp(97, 1, 3000 * 11, RTX_SSRC, (11).to_bytes(2, "big") + VP8_DELTA + b"p" * 40, mid="1")
    pub.send_rtp(96, 12, 3000 * 12, V_SSRC, VP8_DELTA + bytes([12]) * 40, mid="1", marker=True)
    net.flush()
    assert len(viewer.media(vssrc)) == before
    # The RTX copy is caught here; the same-SSRC copy already by our SRTP replay check.
    assert ppeer.inbound.counters["duplicate"] == 1 and ppeer.counters["srtp_dropped"] == 1
    send_frames(net, pub, 13, 1, keyframe_first=False)
    seqs = [h.sequence_number for h, _ in viewer.media(vssrc)]
    assert len(seqs) == before + 1 and len(set(seqs)) == len(seqs)
    # The receiver report does not count the copies as received (no negative loss).
    net.advance(1.0)
    (block,) = [b for rr in pub.rtcp_of(ReceiverReport) for b in rr.reports if b.ssrc == V_SSRC][-1:]
    assert block.packets_lost == 0


def test_receiver_and_sender_reports_and_twcc_feedback(net: Net) -> None:
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 1, 40)
    net.advance(1.0)
    rrs = pub.rtcp_of(ReceiverReport)
    assert rrs and {b.ssrc for rr in rrs for b in rr.reports} >= {A_SSRC, V_SSRC}
    fbs = pub.rtcp_of(TransportCcFeedback)
    assert fbs
    # libwebrtc drops transport-cc feedback whose media source SSRC it does not send on.
    assert {fb.media_ssrc for fb in fbs} <= {A_SSRC, V_SSRC}
    srs = viewer.rtcp_of(SenderReport)
    assert {sr.ssrc for sr in srs} == {viewer.local_ssrc("0"), viewer.local_ssrc("1")}
    video_sr = [sr for sr in srs if sr.ssrc == viewer.local_ssrc("1")][-1]
    assert video_sr.packet_count == 40
    assert video_sr.ntp_timestamp >> 32 > 3_900_000_000


def test_fir_only_publisher_gets_fir(net: Net) -> None:
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    ppeer.inbound.by_name["video_main"].pli = False
    send_frames(net, pub, 1, 2)
    net.advance(1.0)
    pub.rtcp.clear()
    viewer.send_rtcp(build_pli(1, viewer.local_ssrc("1")))
    net.flush()
    net.advance(0.5)
    firs = pub.rtcp_of(Fir)
    assert firs and firs[0].entries[0][0] == V_SSRC
    assert not pub.rtcp_of(Pli)


def test_viewers_follow_the_next_publisher_with_continuous_numbers(net: Net) -> None:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    alice, apeer = publish(net, "alice")
    send_frames(net, alice, 100, 5)
    apeer.close(net.now, "bye")
    net.after_input()
    net.flush()
    local = vpeer.endpoint.local_track("video_0")
    assert local is not None and local.state is LocalTrackState.WAITING
    bob, _ = publish(net, "bob")
    local = vpeer.endpoint.local_track("video_0")
    assert local is not None and local.state is LocalTrackState.ACTIVE
    assert local.source is not None and local.source.peer == "bob"
    bob_sent = send_frames(net, bob, 40000, 5)
    vssrc = viewer.local_ssrc("1")
    seqs = [h.sequence_number for h, _ in viewer.media(vssrc)]
    assert len(seqs) == 10
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(10)]
    assert viewer.payloads(vssrc)[5:] == bob_sent
    aseqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("0"))]
    assert aseqs == [(aseqs[0] + i) & 0xFFFF for i in range(10)]


def test_viewer_waits_then_resumes_when_the_same_track_is_republished(net: Net) -> None:
    viewer, _vpeer = net.connect(PeerMode.WHEP)
    alice, apeer = publish(net, "alice")
    send_frames(net, alice, 1, 3)
    apeer.close(net.now, "network change")
    net.after_input()
    alice2, _ = publish(net, "alice")
    send_frames(net, alice2, 9000, 3)
    seqs = [h.sequence_number for h, _ in viewer.media(viewer.local_ssrc("1"))]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(6)]


def test_a_viewer_joining_late_attaches_to_existing_tracks(net: Net) -> None:
    pub, _ = publish(net)
    viewer, vpeer = net.connect(PeerMode.WHEP)
    # The late viewer waits for a key frame: inter frames are useless to its decoder.
    send_frames(net, pub, 1, 3, keyframe_first=False)
    assert viewer.media(viewer.local_ssrc("1")) == []
    assert vpeer.outbound["1"].counters["waiting_keyframe"] == 3
    assert len(viewer.media(viewer.local_ssrc("0"))) == 3
    send_frames(net, pub, 4, 2)
    assert len(viewer.media(viewer.local_ssrc("1"))) == 2


def test_garbage_is_counted_and_other_peers_are_unaffected(net: Net) -> None:
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    send_frames(net, pub, 1, 2)
    garbage = [
        b"",
        b"\x00",
        b"\x00\x01\x00\x08" + b"\x21\x12\xa4\x42" + b"x" * 12,  # truncated STUN
        b"\x16\xfe\xfd" + b"\x00" * 5,  # truncated DTLS record
        b"\x80\x60" + b"\x00" * 30,  # RTP that fails SRTP authentication
        b"\x80\xc8" + b"\x00" * 30,  # RTCP that fails SRTCP authentication
        b"\xff" * 50,
        bytes(range(256)),
    ]
    for g in garbage:
        # Straight to the peer (the port's demultiplexer would drop most of these first).
        ppeer.handle_datagram(net.now, g, pub.addr, classify(g[0]) if g else PacketKind.UNKNOWN)
    # Authenticated but malformed RTP: a header claiming more than it has; an unknown SSRC.
    assert pub.srtp is not None
    pub.out.append(pub.srtp.protect_rtp(b"\x80\x60\x00\x05" + b"\x00" * 4 + (0x9999).to_bytes(4, "big") + b"zz"))
    pub.out.append(pub.srtp.protect_rtcp(b"\x81\xc9\x00\x10" + b"\x00" * 12))
    net.flush()
    c = ppeer.counters
    assert c["empty"] == 1 and c["srtp_dropped"] >= 1 and c["srtcp_dropped"] >= 1 and c["unknown_kind"] >= 1
    assert ppeer.inbound.counters["unknown_ssrc"] == 1 and c["rtcp_malformed"] == 1
    assert ppeer.ice.counters["malformed"] >= 1 and ppeer.dtls.malformed_datagrams >= 1
    assert c["handler_errors"] == 0
    sent = send_frames(net, pub, 3, 3)
    assert viewer.payloads(viewer.local_ssrc("1"))[-3:] == sent


def test_consent_expiry_disconnects_and_viewers_wait(net: Net) -> None:
    _viewer, vpeer = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    send_frames(net, pub, 1, 2)
    del net.clients[pub.addr]  # the publisher vanishes: no more consent checks
    net.advance(31.0)
    events = net.peer_events(ppeer)
    assert Disconnected("ice: consent expired") in events
    assert ppeer.closed and ppeer.endpoint.closed
    local = vpeer.endpoint.local_track("video_0")
    assert local is not None and local.state is LocalTrackState.WAITING
    assert not vpeer.closed  # the viewer kept its consent fresh
    assert ppeer.next_deadline() is None


def test_a_publisher_without_consent_checks_lives_while_its_media_flows(net: Net) -> None:
    # GStreamer webrtcbin (libnice) sends no check after nomination, only Binding indications
    # (at most every 25 s) that we do not even rely on here: its authenticated SRTP and SRTCP
    # prove the pair alive (issue 17: it was cut at exactly 30 s).
    viewer, vpeer = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    started = net.now
    seq = 1
    while net.now - started < 75.0:
        body = VP8_KEY if seq == 1 else VP8_DELTA
        pub.send_rtp(96, seq, 3000 * seq, V_SSRC, body + bytes(40), mid="1", marker=True)
        seq += 1
        net.flush()
        net.advance(1 / 30, keepalive=False)
        if seq % 30 == 0:
            viewer.send_check()  # the viewer stays fresh the usual way
    assert not ppeer.closed, net.peer_events(ppeer)
    assert ppeer.ice.counters["requests"] <= 2  # no consent check since the handshake
    assert len(viewer.media(viewer.local_ssrc("1"))) > 2000
    # The publisher stops: 30 s of silence later the pair expires and the viewer waits.
    last = net.now
    net.advance(29.9, keepalive=False)
    assert not ppeer.closed
    net.advance(0.2, keepalive=False)
    assert Disconnected("ice: consent expired") in net.peer_events(ppeer)
    assert ppeer.endpoint.closed and net.now - last >= 30.0
    assert vpeer.closed  # the viewer sent nothing either in those 30 s (no checks, no RTCP)


def test_srtp_from_another_address_does_not_keep_a_pair_alive(net: Net) -> None:
    pub, ppeer = publish(net)
    other = ("203.0.113.9", 40000)
    for seq in range(1, 40 * 30):
        # The same authenticated packets, replayed from an address that is not the selected one.
        pub.send_rtp(96, seq, 3000 * seq, V_SSRC, VP8_DELTA + bytes(40), mid="1", marker=True)
        while pub.out:
            data = pub.out.popleft()
            ppeer.handle_datagram(net.now, data, other, classify(data[0]))
        net.advance(1 / 30, keepalive=False)
    assert Disconnected("ice: consent expired") in net.peer_events(ppeer)


def test_a_session_that_never_sends_a_check_is_reaped_at_the_connect_deadline(net: Net) -> None:
    client, peer = net.connect(PeerMode.WHIP, handshake=False)
    client.out.clear()
    del net.clients[client.addr]  # the client never sends anything
    assert peer.next_deadline() == net.now + DEFAULT_CONNECT_TIMEOUT
    net.advance(DEFAULT_CONNECT_TIMEOUT - 0.01, keepalive=False)
    assert not peer.closed
    net.advance(0.02, keepalive=False)
    assert Disconnected("connect timeout: not connected within 15 s (no ICE nomination)") in net.peer_events(peer)
    assert peer.closed and peer.endpoint.closed and peer.next_deadline() is None


def test_ice_without_dtls_is_reaped_at_the_connect_deadline(net: Net) -> None:
    client, peer = net.connect(PeerMode.WHEP, handshake=False)
    net.server_input(client.out.popleft(), client.addr)  # the nominating check, nothing after
    net.outbox.clear()
    del net.clients[client.addr]
    assert peer.ice.selected_address == client.addr and not peer.connected
    net.advance(DEFAULT_CONNECT_TIMEOUT, keepalive=False)
    reason = "connect timeout: not connected within 15 s (ICE nominated, DTLS not done)"
    assert Disconnected(reason) in net.peer_events(peer)


def test_a_connected_session_outlives_the_connect_deadline(net: Net) -> None:
    _client, peer = publish(net)
    net.advance(3 * DEFAULT_CONNECT_TIMEOUT)  # consent checks every second
    assert peer.connected and not peer.closed


def test_close_sends_bye_and_close_notify(net: Net) -> None:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    vpeer.close(net.now, "done")
    net.after_input()
    net.flush()
    assert Disconnected("done") in net.peer_events(vpeer)
    assert vpeer.closed and vpeer.endpoint.closed
    (bye,) = viewer.rtcp_of(Bye)
    assert set(bye.ssrcs) == {viewer.local_ssrc("0"), viewer.local_ssrc("1")}
    assert viewer.dtls is not None and viewer.dtls.state.value == "closed"


def test_mid_extension_is_used_when_the_offer_has_no_ssrcs(net: Net) -> None:
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, ppeer = net.connect(PeerMode.WHIP, peer="nossrc")
    body = VP8_KEY + b"k" * 10
    pub.send_rtp(96, 1, 0, 0xABCD, body, mid="1")
    net.flush()
    assert viewer.payloads(viewer.local_ssrc("1")) == [body]
    assert ppeer.inbound.by_name["video_main"].streams[0].ssrc == 0xABCD
    assert EXT_MID == 4


def test_random_datagrams_never_raise(net: Net) -> None:
    rng = random.Random(7)
    viewer, _ = net.connect(PeerMode.WHEP)
    pub, ppeer = publish(net)
    fresh, fpeer = net.connect(PeerMode.WHEP, handshake=False)
    for _ in range(2000):
        first = rng.choice([0, 1, 20, 22, 23, 128, 144, 200, 205, 255])
        data = bytes([first]) + rng.randbytes(rng.randrange(0, 300))
        ppeer.handle_datagram(net.now, data, pub.addr, classify(first))
        fpeer.handle_datagram(net.now, data, fresh.addr, classify(first))
    assert ppeer.counters["handler_errors"] == 0 and fpeer.counters["handler_errors"] == 0
    assert not ppeer.closed
    net.flush()
    sent = send_frames(net, pub, 1, 2)
    assert viewer.payloads(viewer.local_ssrc("1"))[-2:] == sent


def test_setup_errors_are_typed(net: Net) -> None:
    with pytest.raises(SessionSetupError, match="room name"):
        net.connect(PeerMode.WHIP, room="")


def test_a_bare_peer_leaves_joining_and_naming_to_the_layer_above(net: Net) -> None:
    pub, _ = publish(net)
    _, ppeer_sdk = net.connect(None, handshake=False)
    ep = ppeer_sdk.endpoint
    assert ep.room is None and not ep.local_tracks
    assert ep.control(net.now, Join("room", "sdk-viewer")) is None
    assert ep.control(net.now, CreateLocalTrack("cam", TrackKind.VIDEO)) is None
    out = ppeer_sdk.bind_local_track(net.now, "1", "cam")
    assert out.local.sink == out.on_media
    assert pub.srtp is not None


def _ntp_mid(ntp: int) -> int:
    return (ntp >> 16) & 0xFFFFFFFF  # the middle 32 bits of an NTP timestamp (RFC 3550 s6.4.1 LSR)


def test_viewer_reports_reach_the_outgoing_stream_with_rtt(net: Net) -> None:
    viewer, vpeer = net.connect(PeerMode.WHEP)
    pub, _ = publish(net)
    send_frames(net, pub, 1, 40)
    net.advance(1.0)
    assert isinstance(vpeer, WebRtcPeer)
    video_ssrc = viewer.local_ssrc("1")
    srs = [sr for sr in viewer.rtcp_of(SenderReport) if sr.ssrc == video_ssrc]
    assert srs  # we send SRs to viewers, so their LSR can be non-zero
    sr = srs[-1]
    # The network here delivers at once: the viewer held the SR for all the time since it was
    # sent, less 30 ms it "spent on the way", so the RTT comes out as those 30 ms.
    net.advance(0.2, keepalive=False)
    held = (_ntp_mid(vpeer.ctx.ntp(net.now)) - _ntp_mid(sr.ntp_timestamp)) & 0xFFFFFFFF
    dlsr = held - round(0.03 * 65536)
    lsr = _ntp_mid(sr.ntp_timestamp)
    block = ReportBlock(video_ssrc, fraction_lost=26, packets_lost=3, jitter=1800, lsr=lsr, dlsr=dlsr)
    viewer.send_rtcp(build_rr(0x7777, [block]))
    net.flush()
    rep = vpeer.outbound["1"].reception
    assert rep.blocks == 1
    assert rep.packets_lost == 3 and abs(rep.fraction_lost - 26 / 256) < 1e-9
    assert abs(rep.jitter_ms - 20.0) < 1e-9
    assert rep.rtt is not None and abs(rep.rtt - 0.03) < 1e-3
    assert vpeer.outbound["0"].reception.blocks == 0  # the audio stream got no report
    rtx = vpeer.outbound["1"].rtx_ssrc
    assert rtx is not None
    viewer.send_rtcp(build_rr(0x7777, [ReportBlock(rtx, fraction_lost=255, jitter=90000)]))
    net.flush()
    assert rep.blocks == 1 and abs(rep.jitter_ms - 20.0) < 1e-9  # the RTX stream's report is not the media's


def test_a_gop_replay_starts_a_waiting_viewer_and_is_skipped_by_one_already_playing(net: Net) -> None:
    # A publisher that cannot be asked for key frames (RTMP): a bare core endpoint re-sends its GOP.
    cam = net.worker.create_endpoint()
    assert cam.control(net.now, Join("room", "cam")) is None
    assert cam.control(net.now, Publish("video_main", TrackKind.VIDEO)) is None
    playing, ppeer = net.connect(PeerMode.WHEP)
    track = cam.remote_track("video_main")
    assert track is not None

    def packet(seq: int, replay: int = 0) -> MediaPacket:
        body = (VP8_KEY if seq == 1 else VP8_DELTA) + bytes([seq]) * 40
        return MediaPacket(MediaCodec.VP8, 96, seq, 3000 * seq, True, seq == 1, body, arrival=net.now, replay=replay)

    def send(*packets: MediaPacket) -> None:
        for pkt in packets:
            track.on_packet(pkt)
        net.after_input()
        net.flush()

    send(packet(1), packet(2), packet(3))
    ssrc = playing.local_ssrc("1")
    assert len(playing.media(ssrc)) == 3
    late, lpeer = net.connect(PeerMode.WHEP)
    send(packet(4))
    assert late.media(late.local_ssrc("1")) == []  # waits for a key frame
    send(packet(1, replay=1), packet(2, replay=1), packet(3, replay=1), packet(4, replay=1))
    send(packet(5))
    late_seqs = [h.sequence_number for h, _ in late.media(late.local_ssrc("1"))]
    assert len(late_seqs) == 5 and late_seqs == [(late_seqs[0] + i) & 0xFFFF for i in range(5)]
    assert [p[-1] for _, p in late.media(late.local_ssrc("1"))] == [1, 2, 3, 4, 5]
    assert len(playing.media(ssrc)) == 5  # 1..5 once: the replay was not sent to it again
    assert ppeer.outbound["1"].counters["replay_skipped"] == 4
    assert lpeer.outbound["1"].counters["replay_skipped"] == 0
    # A second replay (for yet another viewer) is skipped by both.
    send(packet(1, replay=2), packet(2, replay=2))
    assert lpeer.outbound["1"].counters["replay_skipped"] == 2 and len(late.media(late.local_ssrc("1"))) == 5


def test_a_viewer_takes_the_original_codec_it_negotiated_else_the_alternate_which_it_asks_for(net: Net) -> None:
    """The routing decision, per viewer: packets marked ``alternate_of`` (RTMP: H.264 made from
    HEVC/AV1/VP9) go only to viewers that did not negotiate the original codec, which ask the
    publisher for them about once a second (FeedbackKind.ALTERNATE); a viewer that negotiated the
    original takes it and skips the alternate. The test client offers VP8 only."""
    cam = net.worker.create_endpoint()
    assert cam.control(net.now, Join("room", "cam")) is None
    assert cam.control(net.now, Publish("video_main", TrackKind.VIDEO)) is None
    viewer, vpeer = net.connect(PeerMode.WHEP)
    track = cam.remote_track("video_main")
    assert track is not None
    while cam.poll_event() is not None:
        pass

    def send(codec: MediaCodec, seq: int, alternate_of: MediaCodec | None = None, key: bool = False) -> None:
        body = (VP8_KEY if key else VP8_DELTA) + bytes([seq]) * 40 if codec is MediaCodec.VP8 else b"\x65" * 40
        pkt = MediaPacket(codec, 96, seq, 3000 * seq, True, key, body, arrival=net.now, alternate_of=alternate_of)
        track.on_packet(pkt)
        net.after_input()
        net.flush()

    def alternate_wanted() -> list[AlternateWanted]:
        return [ev for ev in iter(cam.poll_event, None) if isinstance(ev, AlternateWanted)]

    ssrc = viewer.local_ssrc("1")
    counters = vpeer.outbound["1"].counters
    # The original is VP8 (negotiated): its alternate is skipped (as is an H.264 one: not
    # negotiated either), and nothing is asked for.
    for seq in (1, 2):
        send(MediaCodec.VP8, seq, key=seq == 1)
        send(MediaCodec.VP8, 100 + seq, alternate_of=MediaCodec.VP8, key=seq == 1)
        send(MediaCodec.H264, 200 + seq, alternate_of=MediaCodec.VP8)
    assert [p[-1] for _, p in viewer.media(ssrc)] == [1, 2] and counters["alternate_skipped"] == 2
    assert counters["codec_not_negotiated"] == 2 and alternate_wanted() == []
    # The original is H.265 (not negotiated): this viewer asks for the alternate, once a second
    # while the original keeps coming, and takes the alternate.
    send(MediaCodec.H265, 3)
    send(MediaCodec.H265, 4)
    assert alternate_wanted() == [AlternateWanted("video_main", True)]
    assert counters["codec_not_negotiated"] == 4
    send(MediaCodec.VP8, 5, alternate_of=MediaCodec.H265, key=True)
    send(MediaCodec.VP8, 6, alternate_of=MediaCodec.H265)
    assert [p[-1] for _, p in viewer.media(ssrc)] == [1, 2, 5, 6] and counters["alternate_skipped"] == 2


def test_sender_reports_follow_the_sources_capture_clock(net: Net) -> None:
    """``MediaPacket.capture`` (RTMP: the publisher's timeline): a viewer's SRs map each stream's
    timestamps to when the source captured them, not to when they were sent, so audio that was
    held 200 ms (AAC -> Opus) still lines up with the video of the same instant (RFC 3550 s6.4.1)."""
    cam = net.worker.create_endpoint()
    assert cam.control(net.now, Join("room", "cam")) is None
    assert cam.control(net.now, Publish("video_main", TrackKind.VIDEO)) is None
    assert cam.control(net.now, Publish("audio_main", TrackKind.AUDIO)) is None
    viewer, _ = net.connect(PeerMode.WHEP)
    video, audio = cam.remote_track("video_main"), cam.remote_track("audio_main")
    assert video is not None and audio is not None
    t0 = net.now
    for i in range(10):  # 10 frames captured (and sent) at t0 + i/30, 10 Opus frames of the same instants
        at = t0 + i / 30
        body = (VP8_KEY if i == 0 else VP8_DELTA) + bytes([i]) * 40
        video.on_packet(MediaPacket(MediaCodec.VP8, 96, i, 3000 * i, True, i == 0, body, arrival=at, capture=at))
        net.after_input()
        net.flush()
    net.advance(0.2)
    for i in range(10):  # the audio arrives 200 ms late, stamped with the same capture times
        at = t0 + i / 30
        opus = MediaPacket(MediaCodec.OPUS, 111, i, 1600 * i, False, False, b"\xfc" + bytes(20),
                           arrival=net.now, capture=at)  # fmt: skip
        audio.on_packet(opus)
        net.after_input()
        net.flush()
    net.advance(1.5)
    vssrc, assrc = viewer.local_ssrc("1"), viewer.local_ssrc("0")
    [(vh, _), *_] = viewer.media(vssrc)
    [(ah, _), *_] = viewer.media(assrc)
    srs = viewer.rtcp_of(SenderReport)
    vsr = [sr for sr in srs if sr.ssrc == vssrc][-1]
    asr = [sr for sr in srs if sr.ssrc == assrc][-1]

    def wall(sr: SenderReport, ts: int, rate: int) -> float:
        return sr.ntp_timestamp / 2**32 - ((sr.rtp_timestamp - ts) & 0xFFFFFFFF) / rate

    # The first video frame and the first Opus frame were captured at t0: same wall time.
    assert abs(wall(vsr, vh.timestamp, 90000) - wall(asr, ah.timestamp, 48000)) < 0.002
