"""Renegotiation with changed m-lines (``session.sdp``), in memory: senders and receivers added after join, m-lines
stopped (port 0) or made inactive, recycled m-line indexes, and offers that must be refused without harm.

The offers follow what Chromium makes for ``@atm0s-media-sdk/core`` (tests/e2e/test_sdk_renegotiation.py runs the
real thing): a new transceiver is a new m-line with the next mid at the end, a stopped one keeps its index at port
0, and a later transceiver may take that index with a new mid (RFC 8829 s5.2.2).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.transports.sdk.test_session import FP, World, err, join, request, room_events
from trackmesh.rtp.packet import RtpHeader, build_rtp_packet
from trackmesh.sdp.model import parse
from trackmesh.transports.sdk.errors import RpcFailure
from trackmesh.transports.sdk.ice_restart import restart_claims_refusal, restart_ice
from trackmesh.transports.sdk.protocol import ErrorCode, session_pb2, shared_pb2
from trackmesh.transports.sdk.renegotiation import apply_plan, plan_for
from trackmesh.transports.sdk.session import SdkSession, TokenClaims
from trackmesh.transports.webrtc.answer import LocalParams

EXT_MID = 4
PT = {"audio": 111, "video": 96}

#: One m-line of an offer: (kind, mid, direction); direction "stopped" is port 0, kind "application" the data channel.
Line = tuple[str, str, str]


def _line(kind: str, mid: str, direction: str, ufrag: str, ssrc: int | None, pt: int | None) -> str:
    transport = (
        f"c=IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:cpwdcpwdcpwdcpwdcpwdcpwd\r\n"
        f"a=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\na=mid:{mid}\r\n"
    )
    if kind == "application":
        return f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n{transport}a=sctp-port:5000\r\n"
    pt = pt if pt is not None else PT[kind]
    codec = "opus/48000/2" if kind == "audio" else "VP8/90000"
    port = 0 if direction == "stopped" else 9
    text = (
        f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}\r\n{transport}"
        f"a={'inactive' if direction == 'stopped' else direction}\r\na=rtcp-mux\r\n"
        f"a=extmap:{EXT_MID} urn:ietf:params:rtp-hdrext:sdes:mid\r\na=rtpmap:{pt} {codec}\r\n"
    )
    if ssrc is not None and direction == "sendonly":
        text += f"a=ssrc:{ssrc} cname:client\r\n"
    return text


def offer(
    lines: list[Line], ufrag: str = "cufrag", ssrcs: dict[str, int] | None = None, pts: dict[str, int] | None = None
) -> str:
    live = [mid for _, mid, d in lines if d != "stopped"]
    text = f"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {' '.join(live)}\r\n"
    for kind, mid, direction in lines:
        text += _line(kind, mid, direction, ufrag, (ssrcs or {}).get(mid), (pts or {}).get(mid))
    return text


def tracks(senders: list[tuple[str, str, bool]], receivers: list[str]) -> shared_pb2.Tracks:
    t = shared_pb2.Tracks()
    for name, kind, attached in senders:
        s = t.senders.add(name=name, kind=shared_pb2.AUDIO if kind == "audio" else shared_pb2.VIDEO)
        if attached:
            s.state.source.id = f"id-{name}"
    for i, kind in enumerate(receivers):
        t.receivers.add(name=f"{kind}_{i}", kind=shared_pb2.AUDIO if kind == "audio" else shared_pb2.VIDEO)
    return t


def sdp_request(sdk: SdkSession, text: str, t: shared_pb2.Tracks) -> session_pb2.Response:
    update = session_pb2.Request.Session.UpdateSdp(sdp=text, tracks=t)
    return request(sdk, session=session_pb2.Request.Session(sdp=update))


def answer_lines(resp: session_pb2.Response) -> list[tuple[str, str | None, int, str | None]]:
    sd = parse(resp.session.sdp.sdp)
    return [(m.kind, m.mid, m.port, m.direction) for m in sd.media]


def rtp(mid: str | None, ssrc: int, seq: int = 1, pt: int = 96) -> tuple[bytes, RtpHeader]:
    ext = {EXT_MID: mid.encode()} if mid is not None else None
    data = build_rtp_packet(pt, seq, 1000, ssrc, b"\x10\x00\x9d\x01\x2a" + b"\x00" * 20, extensions=ext)
    return data, RtpHeader.parse(data)


def attach(sdk: SdkSession, name: str, peer: str, track: str) -> session_pb2.Response:
    source = shared_pb2.Receiver.Source(peer=peer, track=track)
    req = session_pb2.Request.Receiver(name=name, attach=session_pb2.Request.Receiver.Attach(source=source))
    return request(sdk, receiver=req)


@pytest.fixture
def world() -> World:
    return World()


def session(world: World, lines: list[Line], t: shared_pb2.Tracks) -> tuple[SdkSession, list[Any]]:
    """A session whose connect offer is ``lines``."""
    senders = [
        (s.name, "audio" if s.kind == shared_pb2.AUDIO else "video", s.state.HasField("source")) for s in t.senders
    ]
    receivers = ["audio" if r.kind == shared_pb2.AUDIO else "video" for r in t.receivers]
    sdk, out = world.session(senders, receivers, offer=offer(lines))
    assert [m.mid for m in sdk.peer.answer.media] == [mid for _, mid, d in lines if d != "stopped"], "offer shape"
    return sdk, out


# Connect offers used below (as the SDK makes them: senders, then receivers, then the data channel).
ALICE0: list[Line] = [("video", "0", "sendonly"), ("application", "1", "")]
BOB0: list[Line] = [("video", "0", "recvonly"), ("application", "1", "")]


def test_sender_added_after_join_is_published_and_its_ssrcs_are_demuxed_by_mid(world: World) -> None:
    alice, aout = session(world, ALICE0, tracks([("camera", "video", True)], []))
    bob, bout = session(world, BOB0, tracks([], ["video"]))
    assert err(join(alice, "r1", "alice")) is None and err(join(bob, "r1", "bob")) is None
    world.drain(alice, bob)
    ssrc_before = alice.peer.answer.media[0].remote_ssrcs
    # Alice starts a screen share: a new sendonly m-line (mid 2) at the end, the Tracks list names it.
    lines = [*ALICE0, ("video", "2", "sendonly")]
    t = tracks([("camera", "video", True), ("screen", "video", True)], [])
    resp = sdp_request(alice, offer(lines), t)
    assert err(resp) is None, resp
    assert [line[:3] for line in answer_lines(resp)] == [
        ("video", "0", 4000),
        ("application", "1", 4000),
        ("video", "2", 4000),
    ]
    assert answer_lines(resp)[2][3] == "recvonly"
    sd = parse(resp.session.sdp.sdp)
    group = sd.bundle_group()
    assert group is not None and group.mids == ["0", "1", "2"]
    assert all(m.ice_ufrag == alice.local.ice_ufrag for m in sd.media)  # no ICE restart
    assert sd.origin.session_version == "2"
    assert alice.senders["screen"].mid == "2" and "screen" in alice.endpoint.remote_tracks
    assert alice.peer.answer.media[0].remote_ssrcs == ssrc_before
    senders = [(e.sender.name, e.sender.state.status) for e in aout if e.HasField("sender")]
    assert senders[-1] == ("screen", shared_pb2.Sender.ACTIVE)
    world.drain(alice, bob)
    assert ("track_started", "alice/screen") in room_events(bout)
    # Bob attaches his receiver to the screen share; a packet on a new SSRC carrying mid 2 reaches it.
    assert err(attach(bob, "video_0", "alice", "screen")) is None
    world.drain(alice, bob)
    got: list[int] = []
    receiver = bob.endpoint.local_track("video_0")
    assert receiver is not None
    receiver.sink = lambda pkt: got.append(pkt.seq)
    data, h = rtp("2", 0x5C5C5C5C, seq=7)
    alice.peer.inbound.on_rtp(world.now, data, h)
    assert got == [7]
    assert alice.peer.inbound.by_mid["2"].streams[0].ssrc == 0x5C5C5C5C
    # A packet naming the camera's mid still goes to the camera, not to the screen.
    data, h = rtp("0", 0x0C0C0C0C, seq=9)
    alice.peer.inbound.on_rtp(world.now, data, h)
    assert got == [7] and alice.peer.inbound.by_mid["0"].streams[0].ssrc == 0x0C0C0C0C


def test_receiver_added_after_join_is_attachable_and_sent_on_its_own_ssrc(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    bob, bout = session(
        world, [("audio", "0", "sendonly"), ("application", "1", "")], tracks([("mic", "audio", True)], [])
    )
    assert err(join(alice, "r1", "alice")) is None and err(join(bob, "r1", "bob")) is None
    world.drain(alice, bob)
    assert ("track_started", "alice/camera") in room_events(bout)
    assert err(attach(bob, "video_0", "alice", "camera")) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND  # not there yet
    lines: list[Line] = [("audio", "0", "sendonly"), ("application", "1", ""), ("video", "2", "recvonly")]
    resp = sdp_request(bob, offer(lines), tracks([("mic", "audio", True)], ["video"]))
    assert err(resp) is None, resp
    media = parse(resp.session.sdp.sdp).media
    assert media[2].mid == "2" and media[2].direction == "sendonly" and media[2].ssrcs  # a=ssrc + msid for ontrack
    new_ssrc = media[2].ssrcs[0].ssrc
    assert bob.receivers["video_0"].mid == "2" and bob.peer.outbound["2"].ssrc == new_ssrc
    assert new_ssrc not in {m.local_ssrc for m in alice.peer.answer.media}
    assert err(attach(bob, "video_0", "alice", "camera")) is None
    world.drain(alice, bob)
    states = [e.receiver.state.status for e in bout if e.HasField("receiver") and e.receiver.name == "video_0"]
    assert shared_pb2.Receiver.ACTIVE in states or shared_pb2.Receiver.WAITING in states
    # A second identical offer changes nothing: same SSRC, same names.
    resp = sdp_request(bob, offer(lines), tracks([("mic", "audio", True)], ["video"]))
    assert err(resp) is None and parse(resp.session.sdp.sdp).media[2].ssrcs[0].ssrc == new_ssrc


def test_stopped_sender_and_receiver_mlines_unpublish_and_detach(world: World) -> None:
    alice, aout = session(world, ALICE0, tracks([("camera", "video", True)], []))
    bob, bout = session(world, BOB0, tracks([], ["video"]))
    assert err(join(alice, "r1", "alice")) is None and err(join(bob, "r1", "bob")) is None
    t = tracks([("camera", "video", True), ("screen", "video", True)], [])
    assert err(sdp_request(alice, offer([*ALICE0, ("video", "2", "sendonly")]), t)) is None
    world.drain(alice, bob)
    assert err(attach(bob, "video_0", "alice", "screen")) is None
    world.drain(alice, bob)
    # Alice stops the screen transceiver: port 0. Bob sees track_stopped; the camera stays.
    resp = sdp_request(alice, offer([*ALICE0, ("video", "2", "stopped")]), t)
    assert err(resp) is None, resp
    assert answer_lines(resp)[2][:3] == ("video", "2", 0)
    group = parse(resp.session.sdp.sdp).bundle_group()
    assert group is not None and group.mids == ["0", "1"]
    world.drain(alice, bob)
    assert room_events(bout)[-1] == ("track_stopped", "alice/screen")
    assert set(alice.endpoint.remote_tracks) == {"camera"} and alice.senders["screen"].mid is None
    assert "2" not in alice.peer.inbound.by_mid
    assert [(e.sender.name, e.sender.state.status) for e in aout if e.HasField("sender")][-1] == (
        "screen",
        shared_pb2.Sender.INACTIVE,
    )
    # A packet still arriving for the stopped mid reaches nothing.
    before = alice.peer.inbound.counters["unknown_ssrc"]
    alice.peer.inbound.on_rtp(world.now, *rtp("2", 0x77777777))
    assert alice.peer.inbound.counters["unknown_ssrc"] == before + 1
    # The screen sender has no m-line any more: attaching a source to it is refused, the session goes on.
    req = session_pb2.Request.Sender(name="screen", attach=session_pb2.Request.Sender.Attach())
    assert err(request(alice, sender=req)) is not None
    # Bob stops his receiver m-line: the LocalTrack is detached and its stream ends.
    assert err(attach(bob, "video_0", "alice", "camera")) is None
    resp = sdp_request(bob, offer([("video", "0", "stopped"), ("application", "1", "")]), tracks([], ["video"]))
    assert err(resp) is None, resp
    receiver = bob.endpoint.local_track("video_0")
    assert receiver is not None and receiver.channel is None
    assert bob.peer.outbound == {} and bob.receivers["video_0"].mid is None
    assert err(attach(bob, "video_0", "alice", "camera")) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND


def test_inactive_sender_resumes_under_its_name(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    bob, bout = session(world, BOB0, tracks([], ["video"]))
    assert err(join(alice, "r1", "alice")) is None and err(join(bob, "r1", "bob")) is None
    t = tracks([("camera", "video", True)], [])
    resp = sdp_request(alice, offer([("video", "0", "inactive"), ("application", "1", "")]), t)
    assert err(resp) is None and answer_lines(resp)[0] == ("video", "0", 4000, "inactive")
    world.drain(alice, bob)
    assert room_events(bout)[-1] == ("track_stopped", "alice/camera") and not alice.endpoint.remote_tracks
    assert alice.senders["camera"].mid == "0"
    assert err(sdp_request(alice, offer(ALICE0), t)) is None
    world.drain(alice, bob)
    assert room_events(bout)[-1] == ("track_started", "alice/camera") and "0" in alice.peer.inbound.by_mid


def test_recycled_mline_index_gets_the_new_sender(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    assert err(join(alice, "r1", "alice")) is None
    t = tracks([("camera", "video", True), ("screen", "video", True)], [])
    assert err(sdp_request(alice, offer([*ALICE0, ("video", "2", "sendonly")]), t)) is None
    assert err(sdp_request(alice, offer([*ALICE0, ("video", "2", "stopped")]), t)) is None
    # A new audio sender takes index 2 with mid 3 (Chromium recycles a stopped m-line's index).
    t2 = tracks([("camera", "video", True), ("screen", "video", True), ("music", "audio", True)], [])
    resp = sdp_request(alice, offer([*ALICE0, ("audio", "3", "sendonly")]), t2)
    assert err(resp) is None, resp
    assert answer_lines(resp)[2][:3] == ("audio", "3", 4000)
    assert alice.senders["music"].mid == "3" and alice.senders["screen"].mid is None
    assert set(alice.endpoint.remote_tracks) == {"camera", "music"}


def test_extra_receive_mline_without_a_name_carries_nothing(world: World) -> None:
    """Chromium's offerToReceive* adds a nameless recvonly m-line; a new receiver after it must get its own."""
    bob, _ = session(world, BOB0, tracks([], ["video"]))
    lines: list[Line] = [*BOB0, ("audio", "2", "recvonly")]
    assert err(sdp_request(bob, offer(lines), tracks([], ["video"]))) is None
    assert set(bob.receivers) == {"video_0"} and "2" not in bob.peer.outbound
    lines.append(("audio", "3", "recvonly"))
    assert err(sdp_request(bob, offer(lines), tracks([], ["video", "audio"]))) is None
    assert bob.receivers["audio_1"].mid == "3" and "3" in bob.peer.outbound and "2" not in bob.peer.outbound


@pytest.mark.parametrize(
    ("lines", "kw", "why"),
    [
        ([("audio", "0", "sendonly"), ("application", "1", "")], {}, "changed its kind"),
        ([("video", "5", "sendonly"), ("application", "1", "")], {}, "changed its mid"),
        ([("video", "0", "sendonly")], {}, "fewer than"),
        ([("video", "0", "recvonly"), ("application", "1", "")], {}, "turned from a client sender"),
        (ALICE0, {"ufrag": "other"}, "restart-ice"),
        (ALICE0, {"pts": {"0": 100}}, "payload types"),
        ([("video", "0", "sendonly"), ("application", "1", ""), ("video", "1", "sendonly")], {}, "used by an earlier"),
    ],
)
def test_refused_offers_leave_the_session_usable(world: World, lines: list[Line], kw: dict[str, Any], why: str) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    assert err(join(alice, "r1", "alice")) is None
    answer, version = alice.peer.answer, alice.session_version
    t = tracks([("camera", "video", True), ("screen", "video", True)], [])
    resp = sdp_request(alice, offer(lines, **kw), t)
    assert err(resp) == ErrorCode.INVALID_SDP and why in resp.error.message, resp
    # Nothing changed, and the next good offer (adding the screen share) is answered.
    assert alice.peer.answer is answer and alice.session_version == version and "screen" not in alice.senders
    assert set(alice.endpoint.remote_tracks) == {"camera"}
    resp = sdp_request(alice, offer([*ALICE0, ("video", "2", "sendonly")]), t)
    assert err(resp) is None and set(alice.endpoint.remote_tracks) == {"camera", "screen"}


def test_data_channel_mline_cannot_be_stopped(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    lines = offer(ALICE0).replace("m=application 9", "m=application 0")
    resp = sdp_request(alice, lines, tracks([("camera", "video", True)], []))
    assert err(resp) == ErrorCode.INVALID_SDP and "data channel" in resp.error.message


def test_sender_declared_before_its_mline_waits_for_the_next_offer(world: World) -> None:
    """The SDK snapshots Tracks after createOffer: a sender added meanwhile is listed before its m-line exists."""
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    assert err(join(alice, "r1", "alice")) is None
    t = tracks([("camera", "video", True), ("screen", "video", True)], [])
    assert err(sdp_request(alice, offer(ALICE0), t)) is None
    assert "screen" not in alice.senders
    assert err(sdp_request(alice, offer([*ALICE0, ("video", "2", "sendonly")]), t)) is None
    assert alice.senders["screen"].mid == "2" and "screen" in alice.endpoint.remote_tracks


def test_ice_restart_offer_may_add_mlines_and_keeps_dtls_and_ssrcs(world: World) -> None:
    """restart-ice (sdk_worker): checked first with the current credentials, then answered with new ones."""
    bob, _ = session(world, BOB0, tracks([], ["video"]))
    ssrc = bob.peer.outbound["0"].ssrc
    restart = offer([*BOB0, ("audio", "2", "recvonly")], ufrag="newufrag")
    t = tracks([], ["video", "audio"])
    probe = plan_for(bob, restart, t, ice_restart=True)  # pure: nothing changed yet
    assert "2" not in bob.peer.outbound and probe.receivers == {"2": "audio_1"}
    old = bob.local
    new_local = LocalParams("srvnew", "srvnewpasswordsrvnewpass", old.fingerprint, old.host, old.port)
    answer = apply_plan(bob, world.now, plan_for(bob, restart, t, new_local, ice_restart=True), new_local)
    sd = parse(answer)
    assert {m.ice_ufrag for m in sd.media if m.port} == {"srvnew"} and bob.local is new_local
    assert sd.media[0].ssrcs[0].ssrc == ssrc and bob.receivers["audio_1"].mid == "2" and "2" in bob.peer.outbound
    # The DTLS fingerprint never changes on a live connection.
    other_fp = restart.replace(FP, ":".join(["CD"] * 32))
    with pytest.raises(RpcFailure, match="DTLS fingerprint"):
        plan_for(bob, other_fp, t, ice_restart=True)


def test_simulcast_sender_added_after_join_is_demuxed_by_mid_and_rid(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    assert err(join(alice, "r1", "alice")) is None
    simulcast = (
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        "a=rid:0 send\r\na=rid:1 send\r\na=rid:2 send\r\na=simulcast:send 0;1;2\r\n"
    )
    text = offer([*ALICE0, ("video", "2", "sendonly")]) + simulcast
    resp = sdp_request(alice, text, tracks([("camera", "video", True), ("screen", "video", True)], []))
    assert err(resp) is None, resp
    assert "a=simulcast:recv 0;1;2" in resp.session.sdp.sdp
    track = alice.peer.inbound.by_mid["2"]
    assert track.rids == ("0", "1", "2") and "screen" in alice.endpoint.remote_tracks
    for spatial, ssrc in ((2, 0x2222), (0, 0x2000)):
        ext = {EXT_MID: b"2", 10: str(spatial).encode()}
        data = build_rtp_packet(96, 1, 1000, ssrc, b"\x10\x00\x9d\x01\x2a" + b"\x00" * 20, extensions=ext)
        alice.peer.inbound.on_rtp(world.now, data, RtpHeader.parse(data))
    assert [s.ssrc for s in track.streams] == [0x2000, -1, 0x2222]


def test_restart_ice_restarts_the_agent_only_for_new_client_credentials(world: World) -> None:
    """transports/sdk/ice_restart.py: the driver's restart_ice request, in memory."""
    bob, _ = session(world, BOB0, tracks([], ["video"]))
    old = bob.local
    made: list[LocalParams] = []

    def local_params(ufrag: str, pwd: str) -> LocalParams:
        made.append(LocalParams(ufrag, pwd, old.fingerprint, old.host, old.port))
        return made[-1]

    t = tracks([], ["video", "audio"])
    # A refused offer changes nothing: no restart, no new local parameters.
    with pytest.raises(RpcFailure):
        restart_ice(bob, world.now, offer(BOB0, ufrag="newufrag").replace(FP, ":".join(["CD"] * 32)), t, local_params)
    assert made == [] and bob.local is old
    # The same client credentials: a renegotiation, the agent keeps its credentials.
    same = restart_ice(bob, world.now, offer([*BOB0, ("audio", "2", "recvonly")]), t, local_params)
    assert same.local is None and made == [] and bob.receivers["audio_1"].mid == "2"
    assert {m.ice_ufrag for m in parse(same.sdp).media if m.port} == {old.ice_ufrag}
    # New client credentials: the agent restarts, the answer carries our new ones.
    new = restart_ice(bob, world.now, offer([*BOB0, ("audio", "2", "recvonly")], ufrag="newufrag"), t, local_params)
    assert new.local is made[-1] and bob.local is new.local and new.local.ice_ufrag != old.ice_ufrag
    assert bob.peer.ice.local_credentials.ufrag == new.local.ice_ufrag
    assert {m.ice_ufrag for m in parse(new.sdp).media if m.port} == {new.local.ice_ufrag}


def test_restart_claims_refusal_only_for_another_token_of_another_room_or_peer(world: World) -> None:
    alice, _ = session(world, ALICE0, tracks([("camera", "video", True)], []))
    claims_other = TokenClaims("r2", None, None)
    assert restart_claims_refusal(alice, claims_other, same_token=False) is None  # not joined yet
    assert err(join(alice, "r1", "alice")) is None
    assert restart_claims_refusal(alice, claims_other, same_token=True) is None
    assert restart_claims_refusal(alice, claims_other, same_token=False) == "Wrong room"
    assert restart_claims_refusal(alice, TokenClaims("r1", "eve", None), same_token=False) == "Wrong peer"
    assert restart_claims_refusal(alice, TokenClaims("r1", "alice", None), same_token=False) is None
