"""SdkSession in memory: protobuf requests in, responses and events out, on an in-process MediaWorker.

The data channel is bypassed (``on_message`` is fed directly and ``_push`` captured); SCTP and DTLS are covered by
their own tests and the whole path by tests/e2e/test_sdk_rooms.py with the published SDK in Chromium.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from tests.transports.webrtc.peer_client import certificate
from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.model import MediaCodec, MediaPacket
from trackmesh.core.worker import MediaWorker
from trackmesh.rtp.srtp import SrtpProfile, SrtpSession
from trackmesh.transports.sdk.naming import assign_mlines
from trackmesh.transports.sdk.protocol import ErrorCode, features_mixer_pb2, features_pb2, session_pb2, shared_pb2
from trackmesh.transports.sdk.session import SdkSession, TokenClaims
from trackmesh.transports.webrtc.answer import AnswerPolicy, LocalParams, answer_offer
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent
from trackmesh.transports.webrtc.peer import WebRtcPeer

FP = ":".join(["AB"] * 32)
TOKENS = {
    "tok-r1": TokenClaims("r1", None),
    "tok-r1-a": TokenClaims("r1", "a"),
    "tok-any": TokenClaims(),
    "tok-rec": TokenClaims("r1", "a", record=True),
}


def _mline(kind: str, mid: str, direction: str) -> str:
    pt, codec = (111, "opus/48000/2") if kind == "audio" else (96, "VP8/90000")
    return (
        f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\n"
        f"a=ice-ufrag:cufrag\r\na=ice-pwd:cpwdcpwdcpwdcpwdcpwdcpwd\r\na=fingerprint:sha-256 {FP}\r\n"
        f"a=setup:actpass\r\na=mid:{mid}\r\na={direction}\r\na=rtcp-mux\r\n"
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
        f"a=rtpmap:{pt} {codec}\r\n"
    )


def sdk_offer(senders: list[str], receivers: list[str], ufrag: str = "cufrag") -> str:
    """Like the SDK's: sendonly m-lines for senders, recvonly ones for receivers, then the data channel."""
    mids = [str(i) for i in range(len(senders) + len(receivers) + 1)]
    text = f"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {' '.join(mids)}\r\n"
    i = 0
    for kind in senders:
        text += _mline(kind, str(i), "sendonly")
        i += 1
    for kind in receivers:
        text += _mline(kind, str(i), "recvonly")
        i += 1
    text += (
        f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:cufrag\r\n"
        f"a=ice-pwd:cpwdcpwdcpwdcpwdcpwdcpwd\r\na=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\na=mid:{i}\r\n"
        "a=sctp-port:5000\r\n"
    )
    return text.replace("cufrag", ufrag)


def tracks(senders: list[tuple[str, str, bool]], receivers: list[str]) -> shared_pb2.Tracks:
    t = shared_pb2.Tracks()
    for name, kind, attached in senders:
        s = t.senders.add(name=name, kind=shared_pb2.AUDIO if kind == "audio" else shared_pb2.VIDEO)
        if attached:
            s.state.source.id = f"id-{name}"
    for i, kind in enumerate(receivers):
        t.receivers.add(name=f"{kind}_{i}", kind=shared_pb2.AUDIO if kind == "audio" else shared_pb2.VIDEO)
    return t


class Pushed(list[session_pb2.ServerEvent]):
    """Stands in for ``SdkSession._push(now, event)``: keeps every server event, in order."""

    def __call__(self, now: float, event: session_pb2.ServerEvent) -> None:
        self.append(event)


class World:
    def __init__(self) -> None:
        self.now = 100.0
        self.worker = MediaWorker(1, 0, "secret", LocalRegistry(), LocalChannelHub())
        self.cert = certificate()

    def session(
        self,
        senders: list[tuple[str, str, bool]],
        receivers: list[str],
        claims: TokenClaims | None = None,
        offer: str | None = None,
    ) -> tuple[SdkSession, list[session_pb2.ServerEvent]]:
        ice = IceLiteAgent()
        creds = ice.local_credentials
        local = LocalParams(creds.ufrag, creds.pwd, self.cert.fingerprint_sha256(), "127.0.0.1", 4000)
        offer = offer or sdk_offer([k for _, k, _ in senders], receivers)
        answer = answer_offer(offer, local, AnswerPolicy.sdk())
        t = tracks(senders, receivers)
        names = assign_mlines(t, answer.media)
        endpoint = self.worker.create_endpoint()
        peer = WebRtcPeer(
            self.now,
            endpoint,
            answer,
            ice,
            self.cert,
            deque(),
            wallclock=0.0,
            remote_names=lambda m: names.senders,
        )
        sdk = SdkSession(self.now, peer, names, t, claims or TokenClaims(), TOKENS.get, local, cookie_key=b"k" * 32)
        out = Pushed()
        sdk._push = out  # type: ignore[method-assign]
        return sdk, out

    def drain(self, *sessions: SdkSession) -> None:
        for _ in range(10):
            ready = {e.session for e in self.worker.take_ready()}
            if not ready:
                return
            for s in sessions:
                if s.endpoint.session in ready:
                    s.on_core_events(self.now)


_req_ids = iter(range(1, 1_000_000))


def request(sdk: SdkSession, **kw: Any) -> session_pb2.Response:
    req = session_pb2.Request(req_id=next(_req_ids), **kw)
    out = sdk._push
    assert isinstance(out, Pushed)
    before = len(out)
    sdk.on_message(0.0, session_pb2.ClientEvent(seq=1, request=req).SerializeToString())
    responses = [e.response for e in out[before:] if e.HasField("response")]
    assert len(responses) == 1 and responses[0].req_id == req.req_id
    return responses[0]


def join(sdk: SdkSession, room: str, peer: str, token: str = "tok-any", auto: bool = True) -> session_pb2.Response:
    info = session_pb2.RoomJoin(room=room, peer=peer)
    info.publish.peer = info.publish.tracks = True
    info.subscribe.peers = info.subscribe.tracks = auto
    return request(
        sdk, session=session_pb2.Request.Session(join=session_pb2.Request.Session.Join(info=info, token=token))
    )


def err(resp: session_pb2.Response) -> int | None:
    return resp.error.code if resp.HasField("error") else None


def source_peer(sdk: SdkSession, receiver: str) -> str | None:
    """The peer whose track feeds the session's receiver ``receiver``."""
    track = sdk.endpoint.local_track(receiver)
    assert track is not None, receiver
    return None if track.source is None else track.source.peer


def room_events(out: list[session_pb2.ServerEvent]) -> list[tuple[str, str]]:
    res: list[tuple[str, str]] = []
    for e in out:
        if e.HasField("room"):
            which = e.room.WhichOneof("event")
            assert which is not None  # a room event always carries one
            part = getattr(e.room, which)
            res.append((which, f"{part.peer}/{getattr(part, 'track', '')}".rstrip("/")))
    return res


@pytest.fixture
def world() -> World:
    return World()


def test_mline_assignment_follows_declared_order(world: World) -> None:
    sdk, _ = world.session([("mic", "audio", True), ("camera", "video", True)], ["video", "audio"])
    assert {s.name: s.mid for s in sdk.senders.values()} == {"mic": "0", "camera": "1"}
    assert {r.name: r.mid for r in sdk.receivers.values()} == {"video_0": "2", "audio_1": "3"}
    assert set(sdk.endpoint.local_tracks) == {"video_0", "audio_1"}
    assert sdk.has_data_channel


def test_join_publish_and_room_events(world: World) -> None:
    alice, aout = world.session([("mic", "audio", True), ("camera", "video", True)], [])
    bob, bout = world.session([], ["video", "audio"])
    assert err(join(alice, "r1", "alice")) is None
    assert set(alice.endpoint.remote_tracks) == {"mic", "camera"}
    senders = [(e.sender.name, e.sender.state.status) for e in aout if e.HasField("sender")]
    assert senders == [("mic", shared_pb2.Sender.ACTIVE), ("camera", shared_pb2.Sender.ACTIVE)]
    assert err(join(bob, "r1", "bob")) is None
    world.drain(alice, bob)
    assert room_events(bout) == [
        ("peer_joined", "alice"),
        ("track_started", "alice/mic"),
        ("track_started", "alice/camera"),
    ]
    assert any(e.HasField("session") and e.session.WhichOneof("event") == "joined" for e in bout)
    # Attach a receiver, get WAITING/ACTIVE states; then alice leaves.
    resp = request(
        bob,
        receiver=session_pb2.Request.Receiver(
            name="video_0",
            attach=session_pb2.Request.Receiver.Attach(source=shared_pb2.Receiver.Source(peer="alice", track="camera")),
        ),
    )
    assert err(resp) is None
    world.drain(alice, bob)
    states = [e.receiver.state.status for e in bout if e.HasField("receiver") and e.receiver.HasField("state")]
    assert shared_pb2.Receiver.ACTIVE in states
    assert err(request(alice, session=session_pb2.Request.Session(leave=session_pb2.Request.Session.Leave()))) is None
    world.drain(alice, bob)
    tail = room_events(bout)[-3:]
    assert tail == [("track_stopped", "alice/mic"), ("track_stopped", "alice/camera"), ("peer_leaved", "alice")] or (
        tail[-1] == ("peer_leaved", "alice")
    )


def test_a_later_join_tells_the_worker_with_its_tokens_claims(world: World) -> None:
    """The worker records the peer of a ``record: true`` token that joins after connect."""
    sdk, _ = world.session([("mic", "audio", True)], [])
    joined: list[tuple[str, str, bool]] = []
    sdk.on_join = lambda now, room, peer, claims: joined.append((room, peer, claims.record))
    assert err(join(sdk, "r1", "b", token="tok-rec")) is not None  # refused (wrong peer): not told
    assert joined == []
    assert err(join(sdk, "r1", "a", token="tok-rec")) is None
    assert joined == [("r1", "a", True)]


def test_manual_mode_room_subscribe(world: World) -> None:
    alice, _ = world.session([("camera", "video", True)], [])
    viewer, vout = world.session([], ["video"])
    join(alice, "r1", "alice")
    assert err(join(viewer, "r1", "v", auto=False)) is None
    world.drain(alice, viewer)
    assert room_events(vout) == []
    assert (
        err(
            request(
                viewer, room=session_pb2.Request.Room(subscribe=session_pb2.Request.Room.SubscribePeer(peer="alice"))
            )
        )
        is None
    )
    world.drain(alice, viewer)
    assert room_events(vout) == [("peer_joined", "alice"), ("track_started", "alice/camera")]
    # In auto mode room subscription is an error, answered, and the session still works.
    alice_resp = request(
        alice, room=session_pb2.Request.Room(subscribe=session_pb2.Request.Room.SubscribePeer(peer="v"))
    )
    assert err(alice_resp) == ErrorCode.RPC_INVALID_REQUEST


def test_source_switch_and_detach(world: World) -> None:
    a, _ = world.session([("camera", "video", True)], [])
    b, _ = world.session([("camera", "video", True)], [])
    v, _ = world.session([], ["video"])
    for s, name in ((a, "a"), (b, "b"), (v, "v")):
        join(s, "r1", name)
    attach = session_pb2.Request.Receiver.Attach

    def att(peer: str) -> session_pb2.Response:
        return request(
            v,
            receiver=session_pb2.Request.Receiver(
                name="video_0", attach=attach(source=shared_pb2.Receiver.Source(peer=peer, track="camera"))
            ),
        )

    assert err(att("a")) is None
    assert source_peer(v, "video_0") == "a"
    assert err(att("b")) is None
    assert source_peer(v, "video_0") == "b"
    detach = session_pb2.Request.Receiver(name="video_0", detach=session_pb2.Request.Receiver.Detach())
    assert err(request(v, receiver=detach)) is None
    assert err(request(v, receiver=detach)) == ErrorCode.RPC_TRACK_NOT_ATTACHED
    assert err(att("nobody")) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND
    assert err(att("a")) is None  # still usable


def test_bad_input(world: World) -> None:
    sdk, _ = world.session([("mic", "audio", False)], ["video"], claims=TokenClaims("r1", "a"))
    for garbage in (b"\xff\xff\xff", b"\x12\x05\x08", b"", b"\x0a"):
        sdk.on_message(0.0, garbage)
    assert sdk.counters["malformed"] >= 2
    # A request with no kind, and requests before join.
    assert err(request(sdk)) == ErrorCode.RPC_INVALID_REQUEST
    room_sub = session_pb2.Request.Room(subscribe=session_pb2.Request.Room.SubscribePeer(peer="x"))
    assert err(request(sdk, room=room_sub)) == ErrorCode.RPC_INVALID_REQUEST
    attach = session_pb2.Request.Receiver(
        name="video_0",
        attach=session_pb2.Request.Receiver.Attach(source=shared_pb2.Receiver.Source(peer="p", track="t")),
    )
    assert err(request(sdk, receiver=attach)) == ErrorCode.RPC_INVALID_REQUEST
    leave = session_pb2.Request.Session(leave=session_pb2.Request.Session.Leave())
    assert err(request(sdk, session=leave)) == ErrorCode.RPC_INVALID_REQUEST
    # Unknown track names.
    unknown = session_pb2.Request.Sender(name="nope", detach=session_pb2.Request.Sender.Detach())
    assert err(request(sdk, sender=unknown)) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND
    detach_mic = session_pb2.Request.Sender(name="mic", detach=session_pb2.Request.Sender.Detach())
    assert err(request(sdk, sender=detach_mic)) == ErrorCode.RPC_TRACK_NOT_ATTACHED
    # Token checks: invalid token, room/peer not matching the token.
    assert err(join(sdk, "r1", "a", token="forged")) == ErrorCode.RPC_TOKEN_INVALID
    assert err(join(sdk, "r2", "a", token="tok-r1")) == ErrorCode.RPC_TOKEN_ROOM_PEER_NOT_MATCH
    assert err(join(sdk, "r1", "b", token="tok-r1-a")) == ErrorCode.RPC_TOKEN_ROOM_PEER_NOT_MATCH
    # Features and message channels are not there yet: an error, not a timeout.
    assert err(request(sdk, message_channel=session_pb2.Request.MessageChannel(label="chat"))) is not None
    # ...and after all that the session still joins and publishes.
    assert err(join(sdk, "r1", "a", token="tok-r1-a")) is None
    attach_mic = session_pb2.Request.Sender(
        name="mic", attach=session_pb2.Request.Sender.Attach(source=shared_pb2.Sender.Source(id="x"))
    )
    assert err(request(sdk, sender=attach_mic)) is None
    assert err(request(sdk, sender=attach_mic)) == ErrorCode.RPC_TRACK_ALREADY_ATTACHED
    assert "mic" in sdk.endpoint.remote_tracks
    assert err(join(sdk, "r1", "a", token="tok-r1-a")) == ErrorCode.RPC_INVALID_REQUEST  # already joined


def test_renegotiation_same_mlines_and_added_mlines(world: World) -> None:
    sdk, _ = world.session([("camera", "video", True)], ["video"])
    same = sdk_offer(["video"], ["video"])
    resp = request(sdk, session=session_pb2.Request.Session(sdp=session_pb2.Request.Session.UpdateSdp(sdp=same)))
    assert err(resp) is None and "m=video" in resp.session.sdp.sdp
    assert sdk.local.ice_ufrag in resp.session.sdp.sdp
    more = sdk_offer(["video", "audio"], ["video"])
    resp = request(sdk, session=session_pb2.Request.Session(sdp=session_pb2.Request.Session.UpdateSdp(sdp=more)))
    assert err(resp) == ErrorCode.INVALID_SDP
    bad = request(sdk, session=session_pb2.Request.Session(sdp=session_pb2.Request.Session.UpdateSdp(sdp="v=0")))
    assert err(bad) == ErrorCode.INVALID_SDP


def test_disconnect_then_requests_are_refused(world: World) -> None:
    sdk, _ = world.session([], [])
    resp = request(sdk, session=session_pb2.Request.Session(disconnect=session_pb2.Request.Session.Disconnect()))
    assert err(resp) is None
    assert err(join(sdk, "r1", "x")) == ErrorCode.RPC_ALREADY_DISCONNECTED
    sdk.handle_timeout(world.now + 1.0)
    assert sdk.close_reason == "disconnected by the client"


def test_voice_activity_rate_and_threshold(world: World) -> None:
    alice, _ = world.session([("mic", "audio", True)], [])
    bob, bout = world.session([], ["audio"])
    join(alice, "r1", "alice")
    join(bob, "r1", "bob")
    request(
        bob,
        receiver=session_pb2.Request.Receiver(
            name="audio_0",
            attach=session_pb2.Request.Receiver.Attach(source=shared_pb2.Receiver.Source(peer="alice", track="mic")),
        ),
    )
    bob.channel_open = True
    track = alice.endpoint.remote_track("mic")
    assert track is not None

    def voice() -> list[int]:
        return [
            e.receiver.voice_activity.audio_level
            for e in bout
            if e.HasField("receiver") and e.receiver.HasField("voice_activity")
        ]

    for i in range(40):  # 40 packets, 20 ms apart: 0.8 s
        level = 60 if i < 5 else 20  # -60 dBov (silence) then -20 dBov (voice)
        at = world.now + i * 0.02
        before = voice()
        pkt = MediaPacket(MediaCodec.OPUS, 111, i, i * 960, False, False, b"x", audio_level=level, arrival=at)
        track.on_packet(pkt)
        # An event of bob's endpoint, drained after the input like any other: nothing reaches bob's data
        # channel from inside alice's packet.
        assert voice() == before
        world.drain(alice, bob)
    assert voice() == [-20, -20]  # at most one per 500 ms, only >= -40 dBov


# ---- audio mixer (features.mixer) -----------------------------------------------------------------


def join_mixer(
    sdk: SdkSession, room: str, peer: str, outputs: list[str], manual: list[tuple[str, str]] | None = None
) -> session_pb2.Response:
    info = session_pb2.RoomJoin(room=room, peer=peer)
    info.publish.peer = info.publish.tracks = True
    info.subscribe.peers = info.subscribe.tracks = True
    mixer = info.features.mixer
    mixer.mode = features_mixer_pb2.MANUAL if manual is not None else features_mixer_pb2.AUTO
    mixer.outputs.extend(outputs)
    for p, t in manual or []:
        mixer.sources.add(peer=p, track=t)
    return request(
        sdk, session=session_pb2.Request.Session(join=session_pb2.Request.Session.Join(info=info, token="tok-any"))
    )


def mixer_events(out: list[session_pb2.ServerEvent]) -> list[tuple[str, int, str]]:
    res = []
    for e in out:
        if e.HasField("features") and e.features.HasField("mixer"):
            m = e.features.mixer
            if m.HasField("slot_set"):
                res.append(("set", m.slot_set.slot, m.slot_set.source.peer))
            else:
                res.append(("unset", m.slot_unset.slot, ""))
    return res


def speak(world: World, sessions: list[SdkSession], levels: dict[SdkSession, int | None], seconds: float) -> None:
    """Each publisher in ``levels`` sends 20 ms Opus packets with its level (None: silent, nothing sent)."""
    for _ in range(round(seconds / 0.02)):
        world.now += 0.02
        for sdk, level in levels.items():
            if level is None:
                continue
            track = sdk.endpoint.remote_track("mic")
            assert track is not None
            seq = int(world.now * 50) & 0xFFFF
            pkt = MediaPacket(MediaCodec.OPUS, 111, seq, seq * 960, False, False, b"x", audio_level=level)
            pkt.arrival = world.now
            track.on_packet(pkt)
        world.worker.handle_timeout(world.now)
        world.drain(*sessions)


def test_mixer_auto_slots_follow_loudest_and_exclude_own_voice(world: World) -> None:
    alice, _ = world.session([("mic", "audio", True)], [])
    carol, _ = world.session([("mic", "audio", True)], [])
    bob, bout = world.session([("mic", "audio", True)], ["audio"])
    everyone = [alice, carol, bob]
    join(alice, "r1", "alice")
    join(carol, "r1", "carol")
    assert err(join_mixer(bob, "r1", "bob", ["audio_0"])) is None
    assert bob.mixer_outputs == ("audio_0",)
    # bob is the loudest of all, alice louder than carol: bob's one slot carries alice, never bob.
    speak(world, everyone, {bob: 5, alice: 20, carol: 50}, 1.0)
    assert mixer_events(bout) == [("set", 0, "alice")]
    states = [e.receiver.state.status for e in bout if e.HasField("receiver") and e.receiver.HasField("state")]
    assert states[-1] == shared_pb2.Receiver.ACTIVE
    voice = [e for e in bout if e.HasField("receiver") and e.receiver.HasField("voice_activity")]
    assert voice and all(e.receiver.name == "audio_0" for e in voice)
    assert all(-40 <= e.receiver.voice_activity.audio_level <= 0 for e in voice)
    # alice is muted (sends nothing): after the silence timeout the slot moves to carol.
    speak(world, everyone, {bob: 5, alice: None, carol: 50}, 2.0)
    assert mixer_events(bout)[-1] == ("set", 0, "carol")
    assert all(peer != "bob" for kind, _, peer in mixer_events(bout) if kind == "set")
    # Leaving drops the mixer: rejoining without one is plain.
    assert err(request(bob, session=session_pb2.Request.Session(leave=session_pb2.Request.Session.Leave()))) is None
    world.drain(*everyone)
    assert not bob.mixer_outputs
    assert bob.endpoint.mixer is None


def test_mixer_manual_attach_detach_and_errors(world: World) -> None:
    alice, _ = world.session([("mic", "audio", True)], [])
    bob, bout = world.session([], ["audio", "audio"])
    dave, _ = world.session([], ["video"])
    join(alice, "r1", "alice")
    src = shared_pb2.Receiver.Source(peer="alice", track="mic")
    attach = session_pb2.Request(features=features_pb2.Request()).features
    attach.mixer.attach.sources.append(src)
    detach = features_pb2.Request()
    detach.mixer.detach.sources.append(src)
    # Before join: an error, the session stays usable.
    assert err(request(bob, features=attach)) == ErrorCode.RPC_INVALID_REQUEST
    # An output that is no audio receiver refuses the join (nothing joined).
    assert err(join_mixer(bob, "r1", "bob", ["nope"], manual=[])) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND
    assert err(join_mixer(dave, "r1", "dave", ["video_0"], manual=[])) == ErrorCode.RPC_TRACK_NAME_NOT_FOUND
    assert not bob.joined
    assert err(join_mixer(bob, "r1", "bob", ["audio_0", "audio_1"], manual=[])) is None
    speak(world, [alice, bob], {alice: 20}, 0.5)
    assert mixer_events(bout) == []  # manual, no source yet
    resp = request(bob, features=attach)
    assert err(resp) is None and resp.features.mixer.HasField("attach")
    speak(world, [alice, bob], {alice: 20}, 0.5)
    assert mixer_events(bout) == [("set", 0, "alice")]
    resp = request(bob, features=detach)
    assert err(resp) is None and resp.features.mixer.HasField("detach")
    world.drain(alice, bob)
    assert mixer_events(bout)[-1] == ("unset", 0, "")
    # An auto mixer takes no attach; a session without a mixer neither.
    carol, _ = world.session([], ["audio"])
    join_mixer(carol, "r1", "carol", ["audio_0"])
    assert err(request(carol, features=attach)) == ErrorCode.RPC_INVALID_REQUEST
    eve, _ = world.session([], [])
    join(eve, "r1", "eve")
    assert err(request(eve, features=attach)) == ErrorCode.RPC_INVALID_REQUEST
    assert err(request(eve, features=features_pb2.Request())) == ErrorCode.RPC_INVALID_REQUEST


# ---- message channels -------------------------------------------------------------------------------


def mc(sdk: SdkSession, label: str, which: str, data: bytes = b"") -> session_pb2.Response:
    MC = session_pb2.Request.MessageChannel
    r = MC(label=label)
    if which == "pub":
        r.pub.data = data
    else:
        getattr(r, which).SetInParent()
    return request(sdk, message_channel=r)


def messages(out: list[session_pb2.ServerEvent]) -> list[tuple[str, str, bytes]]:
    return [
        (e.message_channel.label, e.message_channel.message.peer, e.message_channel.message.message)
        for e in out
        if e.HasField("message_channel")
    ]


def test_message_channels(world: World) -> None:
    alice, aout = world.session([], [])
    bob, bout = world.session([], [])
    carol, cout = world.session([], [])
    assert err(mc(alice, "chat", "sub")) == ErrorCode.RPC_INVALID_REQUEST  # before join
    for s, p in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        join(s, "r1", p)
    # As the SDK does: sub then start_pub; responses name the label and the operation.
    for s in (alice, bob):
        resp = mc(s, "chat", "sub")
        assert err(resp) is None and resp.message_channel.label == "chat" and resp.message_channel.HasField("sub")
        assert err(mc(s, "chat", "start_pub")) is None
    assert err(mc(carol, "chat", "pub", b"x")) == ErrorCode.RPC_INVALID_REQUEST  # not publishing
    assert err(mc(carol, "", "sub")) == ErrorCode.RPC_INVALID_REQUEST
    assert err(mc(carol, "chat", "pub", b"x" * (64 * 1024 + 1))) == ErrorCode.RPC_INVALID_REQUEST
    assert err(mc(alice, "chat", "pub", "héllo".encode())) is None
    world.drain(alice, bob, carol)
    assert messages(bout) == [("chat", "alice", "héllo".encode())]
    assert messages(aout) == [("chat", "alice", "héllo".encode())]  # subscribed senders get an echo, as atm0s
    assert messages(cout) == []
    # Another label, unsub, stop_pub.
    assert err(mc(carol, "other", "sub")) is None
    assert err(mc(bob, "chat", "unsub")) is None
    assert err(mc(alice, "chat", "pub", b"2")) is None
    world.drain(alice, bob, carol)
    assert messages(bout) == [("chat", "alice", "héllo".encode())]
    assert messages(cout) == []
    assert err(mc(alice, "chat", "stop_pub")) is None
    assert err(mc(alice, "chat", "pub", b"3")) == ErrorCode.RPC_INVALID_REQUEST
    assert err(mc(alice, "chat", "stop_pub")) is None  # idempotent


# ---- bitrate control ----------------------------------------------------------------------------------


def _test_srtp() -> SrtpSession:
    """A real SRTP session on fixed keys, standing in for a finished DTLS handshake (the tests read
    rates and layer choices, not the protected bytes; a real class also satisfies compiled modules)."""
    profile = SrtpProfile.AEAD_AES_128_GCM
    key = bytes(range(profile.key_length + profile.salt_length))
    return SrtpSession(profile, key, key)


def attach_cfg(sdk: SdkSession, name: str, peer: str, track: str, **cfg: int) -> session_pb2.Response:
    src = shared_pb2.Receiver.Source(peer=peer, track=track)
    att = session_pb2.Request.Receiver.Attach(source=src, config=shared_pb2.Receiver.Config(**cfg))
    return request(sdk, receiver=session_pb2.Request.Receiver(name=name, attach=att))


def test_bitrate_split_by_priority_caps_layers_and_hints_publishers(world: World) -> None:
    """On the virtual clock: two simulcast publishers (150k/500k/1.5M), one viewer with two video receivers
    (priorities 2 and 1); the viewer's estimate is split, each receiver's layer capped, each publisher hinted."""
    from trackmesh.core.events import BitrateTarget

    alice, _ = world.session([("camera", "video", True)], [])
    carol, _ = world.session([("camera", "video", True)], [])
    bob, _ = world.session([], ["video", "video"])
    for s, p in ((alice, "alice"), (carol, "carol"), (bob, "bob")):
        join(s, "r1", p)
    assert err(attach_cfg(bob, "video_0", "alice", "camera", priority=2, max_spatial=2, max_temporal=2)) is None
    assert err(attach_cfg(bob, "video_1", "carol", "camera", priority=1, max_spatial=2, max_temporal=2)) is None
    world.drain(alice, carol, bob)
    bob.peer.ctx.srtp = _test_srtp()
    bob.peer.ctx.addr = ("127.0.0.1", 9)
    rates = (150_000, 500_000, 1_500_000)
    for i in range(220):  # 2.2 s of 100 packets/s per layer
        world.now += 0.01
        for pub in (alice, carol):
            track = pub.endpoint.remote_track("camera")
            assert track is not None
            for layer, bps in enumerate(rates):
                size = bps // 8 // 100
                pkt = MediaPacket(
                    MediaCodec.VP8, 96, i, i * 900, True, i % 50 == 0, b"\0" * size, spatial=layer, arrival=world.now
                )
                track.on_packet(pkt)
    outs = {bob.receivers[n].mid: n for n in ("video_0", "video_1")}
    measured = bob.peer.outbound[bob.receivers["video_0"].mid or ""].layer_rates
    assert measured[:3] == pytest.approx(rates, rel=0.05)

    def caps() -> dict[str, int | None]:
        return {outs[mid]: out.max_spatial for mid, out in bob.peer.outbound.items() if mid in outs}

    def targets(pub: SdkSession) -> list[int]:
        out = []
        while (ev := pub.endpoint.poll_event()) is not None:
            if isinstance(ev, BitrateTarget):
                out.append(ev.bitrate_bps)
        return out

    # No estimate yet: only the configured caps, no hint.
    bob.allocate_bitrate(world.now)
    assert caps() == {"video_0": 2, "video_1": 2}
    assert targets(alice) == [] and targets(carol) == []
    # 1.2 Mbps: 800k for alice's camera (layer 1 fits), 400k for carol's (layer 0).
    bob.peer.ctx.estimate = 1_200_000.0
    bob.allocate_bitrate(world.now)
    assert caps() == {"video_0": 1, "video_1": 0}
    assert (bob.receivers["video_0"].allocated_bps, bob.receivers["video_1"].allocated_bps) == (800_000, 400_000)
    assert targets(alice) == [1_200_000] and targets(carol) == [600_000]
    # The estimate grows to 5 Mbps: both get their top layer, the publishers are asked for all three layers.
    world.now += 1.0
    bob.peer.ctx.estimate = 5_000_000.0
    bob.allocate_bitrate(world.now)
    world.worker.handle_timeout(world.now)
    assert caps() == {"video_0": 2, "video_1": 2}
    full = int(sum(rates) * 1.15 * 1.5)
    assert targets(alice)[-1:] == [pytest.approx(full, rel=0.06)]
    # carol's receiver capped at spatial 0 by config: needs layer 0 only; its publisher is asked for little.
    world.now += 1.0
    cfg = shared_pb2.Receiver.Config(priority=1, max_spatial=0, max_temporal=2)
    assert err(request(bob, receiver=session_pb2.Request.Receiver(name="video_1", config=cfg))) is None
    world.worker.handle_timeout(world.now)
    assert caps()["video_1"] == 0
    assert targets(carol)[-1:] == [pytest.approx(150_000 * 1.15 * 1.5, rel=0.06)]
    # min_spatial is a floor even when the estimate collapses.
    cfg = shared_pb2.Receiver.Config(priority=2, max_spatial=2, max_temporal=2, min_spatial=1)
    assert err(request(bob, receiver=session_pb2.Request.Receiver(name="video_0", config=cfg))) is None
    bob.peer.ctx.estimate = 100_000.0
    bob.allocate_bitrate(world.now)
    assert caps() == {"video_0": 1, "video_1": 0}
    # Detaching withdraws the viewer's hint at the publisher (the core drops it; no viewer left: no target).
    detach = session_pb2.Request.Receiver(name="video_0", detach=session_pb2.Request.Receiver.Detach())
    assert err(request(bob, receiver=detach)) is None
    track = alice.endpoint.remote_track("camera")
    assert track is not None and not track._hints


def test_bitrate_allocation_runs_on_the_session_timer(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    bob, _ = world.session([], ["video"])
    assert bob._next_alloc is None
    bob.on_connected(world.now)
    deadline = bob.next_deadline()
    assert deadline is not None and deadline <= world.now + 0.5
    calls: list[float] = []
    monkeypatch.setattr(bob, "allocate_bitrate", calls.append)
    bob.handle_timeout(world.now + 0.5)
    bob.handle_timeout(world.now + 0.7)
    bob.handle_timeout(world.now + 1.0)
    assert calls == [world.now + 0.5, world.now + 1.0]
