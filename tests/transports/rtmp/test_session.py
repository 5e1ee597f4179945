"""The server session in memory on a virtual clock: the publish flow ffmpeg/OBS follow, the
replies they wait for, decisions from above, acknowledgements, timestamps, timeouts, bad input."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.transports.rtmp.client import TestClient, commands
from trackmesh.transports.rtmp import amf0
from trackmesh.transports.rtmp import messages as m
from trackmesh.transports.rtmp.chunk import Message
from trackmesh.transports.rtmp.events import (
    AudioData,
    Closed,
    ConnectRequested,
    MetadataReceived,
    PublishRequested,
    Unpublished,
    VideoData,
)
from trackmesh.transports.rtmp.session import ServerSession


def _fixed(n: int) -> bytes:
    return bytes(n)


class Pair:
    """A client and a session wired together in memory; ``now`` is the virtual clock."""

    def __init__(self, now: float = 100.0, **session_args: Any) -> None:
        self.now = now
        self.session = ServerSession(now, random=_fixed, **session_args)
        self.client = TestClient(chunk_size=4096)
        self.received: list[Message] = []

    def send(self, data: bytes) -> list[object]:
        self.session.receive_data(data, self.now)
        self.pump()
        return list(self.session.events())

    def pump(self) -> None:
        self.received += self.client.receive(self.session.data_to_send())

    def handshake(self) -> None:
        assert self.send(self.client.hello()) == []
        assert self.client.handshake_done
        assert self.send(self.client.c2()) == []

    def connect(self) -> None:
        self.handshake()
        [event] = self.send(self.client.set_chunk_size() + self.client.connect())
        assert isinstance(event, ConnectRequested)
        self.session.accept_connect()
        self.pump()

    def publish(self, key: str = "tok123") -> int:
        self.connect()
        c = self.client
        events = self.send(
            c.command("releaseStream", 2, None, key)
            + c.command("FCPublish", 3, None, key)
            + c.command("createStream", 4, None)
        )
        assert events == []
        stream_id = commands(self.received)[-1][3]  # the _result of createStream
        assert isinstance(stream_id, int | float), stream_id
        sid = int(stream_id)
        [event] = self.send(c.command("publish", 5, None, key, "live", stream_id=sid))
        assert event == PublishRequested(sid, key, "live")
        self.session.accept_publish(sid)
        self.pump()
        return sid


def test_connect_replies_like_a_server_encoders_accept() -> None:
    p = Pair()
    p.handshake()
    [event] = p.send(p.client.connect())
    assert event == ConnectRequested(
        "live",
        "rtmp://127.0.0.1/live",
        "FMLE/3.0",
        0,
        {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://127.0.0.1/live"},
    )
    assert p.session.data_to_send() == b""  # nothing until the layer above decides
    p.session.accept_connect()
    p.pump()
    types = [msg.type_id for msg in p.received]
    assert types == [m.WINDOW_ACK_SIZE, m.SET_PEER_BANDWIDTH, m.SET_CHUNK_SIZE, m.COMMAND_AMF0]
    assert p.client.decoder.chunk_size == 4096
    [[name, tid, props, info]] = commands(p.received)
    assert (name, tid) == ("_result", 1.0)
    assert isinstance(props, dict) and isinstance(info, dict)
    assert info["code"] == "NetConnection.Connect.Success"


def test_full_publish_flow_and_media() -> None:
    p = Pair()
    sid = p.publish("tok123")
    replies = commands(p.received)
    names = [r[0] for r in replies]
    assert names == ["_result", "_result", "onFCPublish", "_result", "onStatus"]
    assert replies[3][3] == float(sid) == 1.0
    status = replies[4][3]
    assert isinstance(status, dict) and status["code"] == "NetStream.Publish.Start"
    stream_begin = [x for x in p.received if x.type_id == m.USER_CONTROL]
    assert m.parse_user_control(stream_begin[0].payload) == (m.UC_STREAM_BEGIN, sid)

    c = p.client
    events = p.send(
        c.metadata(sid, {"width": 1280.0, "videocodecid": 7.0})
        + c.video(sid, 0, b"\x17\x00\x00\x00\x00config")
        + c.audio(sid, 0, b"\xaf\x00\x12\x10")
        + c.video(sid, 33, b"\x27\x01\x00\x00\x00frame")
    )
    assert events == [
        MetadataReceived(sid, {"width": 1280.0, "videocodecid": 7.0}),
        VideoData(sid, 0, b"\x17\x00\x00\x00\x00config"),
        AudioData(sid, 0, b"\xaf\x00\x12\x10"),
        VideoData(sid, 33, b"\x27\x01\x00\x00\x00frame"),
    ]
    events = p.send(c.command("FCUnpublish", 6, None, "tok123") + c.command("deleteStream", 7, None, float(sid)))
    assert events == [Unpublished(sid, "tok123")]
    assert commands(p.received)[-1][0] == "onFCUnpublish"
    p.session.connection_lost()
    assert p.session.events() == [Closed("connection lost", False)]


def test_messages_after_a_pending_decision_wait_for_it() -> None:
    p = Pair()
    p.handshake()
    c = p.client
    events = p.send(c.connect() + c.command("createStream", 2, None))
    assert [type(e) for e in events] == [ConnectRequested]
    p.session.accept_connect()
    p.pump()
    assert [r[0] for r in commands(p.received)] == ["_result", "_result"]  # connect first, then createStream


def test_reject_publish_sends_onstatus_error_and_closes() -> None:
    p = Pair()
    p.connect()
    c = p.client
    p.send(c.command("createStream", 2, None))
    [event] = p.send(c.command("publish", 3, None, "bad", "live", stream_id=1))
    assert isinstance(event, PublishRequested)
    p.session.reject_publish(1, "unknown or expired token")
    p.pump()
    status = commands(p.received)[-1]
    assert status[0] == "onStatus"
    assert status[3] == {
        "level": "error",
        "code": "NetStream.Publish.BadName",
        "description": "unknown or expired token",
        "details": "bad",
    }
    assert p.session.events() == [Closed("publish rejected: unknown or expired token", False)]
    assert p.session.closed
    assert p.send(c.video(1, 0, b"x")) == []  # nothing after the end


def test_messages_held_for_a_decision_are_capped() -> None:
    p = Pair()
    p.handshake()
    p.send(p.client.connect())
    [event] = p.send(b"".join(p.client.command("createStream", 2 + i, None) for i in range(300)))
    assert isinstance(event, Closed) and event.error and "pending" in event.reason


def test_reject_connect() -> None:
    p = Pair()
    p.handshake()
    p.send(p.client.connect("wrongapp"))
    p.session.reject_connect("unknown app 'wrongapp'")
    p.pump()
    [[name, _tid, _none, info]] = commands(p.received)
    assert name == "_error" and isinstance(info, dict) and info["code"] == "NetConnection.Connect.Rejected"
    assert p.session.events() == [Closed("connect rejected: unknown app 'wrongapp'", False)]


def test_acknowledgements_are_sent_per_window() -> None:
    p = Pair()
    sid = p.publish()
    c = p.client
    p.send(c.encoder.encode(2, 0, m.WINDOW_ACK_SIZE, 0, m.window_ack_size(10_000)))
    for i in range(30):
        p.send(c.video(sid, i * 33, bytes(1000)))
    acks = [m.parse_u32(x.payload, "ack") for x in p.received if x.type_id == m.ACKNOWLEDGEMENT]
    total = p.session.stats.bytes_received
    # Each ack reports all bytes so far (handshake included), once per 10,000 bytes: a video
    # message here is 1,000 bytes plus a chunk header, so an ack lands within one message of due.
    assert len(acks) >= 3
    assert all(10_000 <= b - a < 10_000 + 1100 for a, b in itertools.pairwise(acks))
    assert acks[-1] <= total and total - acks[-1] < 10_000
    assert p.session.stats.acks_sent == len(acks)


def test_ping_request_gets_a_response() -> None:
    p = Pair()
    p.connect()
    p.send(p.client.encoder.encode(2, 0, m.USER_CONTROL, 0, m.ping_request(4242)))
    [pong] = [x for x in p.received if x.type_id == m.USER_CONTROL]
    assert m.parse_user_control(pong.payload) == (m.UC_PING_RESPONSE, 4242)


def test_timestamps_unwrap_past_2_32() -> None:
    p = Pair()
    sid = p.publish()
    c = p.client
    stamps = [0xFFFFFF00, 0xFFFFFFF0, 0x10, 0x1000]
    events = p.send(b"".join(c.video(sid, t, b"\x27\x01\x00\x00\x00") for t in stamps))
    assert [e.timestamp for e in events if isinstance(e, VideoData)] == [
        0xFFFFFF00,
        0xFFFFFFF0,
        0x100000010,
        0x100001000,
    ]


def test_ffmpeg_31_bit_wrap_keeps_the_timeline() -> None:
    # FFmpeg's FLV writer: sequence header at 0, frames from 2^31 - 66, wrapping to 0 at 2^31.
    p = Pair()
    sid = p.publish()
    c = p.client
    stamps = [0, 0x7FFFFFBE, 0x7FFFFFDF, 0x00000000, 0x00000021, 0x7FFFFFFF]
    events = p.send(b"".join(c.video(sid, t, b"\x27\x01\x00\x00\x00") for t in stamps))
    # Relative to the first frame: -66 ms (header at 0 reads as after), then 33 ms steps; the last
    # (a sequence end FFmpeg stamps before the wrap) 34 ms back.
    assert [e.timestamp for e in events if isinstance(e, VideoData)] == [0, -66, -33, 0, 33, -1]


def test_extended_timestamps_near_2_24() -> None:
    p = Pair()
    sid = p.publish()
    c = p.client
    stamps = [0xFFFFF0 + 20 * i for i in range(5)]  # crosses the 24-bit field limit
    events = p.send(b"".join(c.video(sid, t, bytes(300)) for t in stamps))
    assert [e.timestamp for e in events if isinstance(e, VideoData)] == stamps


def test_aggregate_messages_are_split() -> None:
    p = Pair()
    sid = p.publish()

    def tag(type_id: int, ts: int, body: bytes) -> bytes:
        header = bytes((type_id,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        return header + bytes((ts >> 24,)) + b"\x00\x00\x00" + body + (len(body) + 11).to_bytes(4, "big")

    body = tag(m.VIDEO, 5000, b"\x27\x01\x00\x00\x00v") + tag(m.AUDIO, 5010, b"\xaf\x01a")
    events = p.send(p.client.encoder.encode(6, 200, m.AGGREGATE, sid, body))
    assert events == [VideoData(sid, 200, b"\x27\x01\x00\x00\x00v"), AudioData(sid, 210, b"\xaf\x01a")]
    [unpublished, closed] = p.send(p.client.encoder.encode(6, 300, m.AGGREGATE, sid, body[:-3]))
    assert unpublished == Unpublished(sid, "tok123")
    assert isinstance(closed, Closed) and closed.error and "aggregate" in closed.reason


def test_media_on_a_stream_not_publishing_is_dropped_and_counted() -> None:
    p = Pair()
    p.connect()
    assert p.send(p.client.video(1, 0, b"x")) == []
    assert p.session.stats.dropped_messages == 1


def test_unknown_command_gets_error_and_is_counted() -> None:
    p = Pair()
    p.connect()
    p.send(p.client.command("getSomething", 9, None))
    [_, error] = commands(p.received)
    assert error[0] == "_error" and error[1] == 9.0
    assert p.session.stats.unknown_commands == 1


def test_digest_handshake_client_completes() -> None:
    p = Pair()
    p.client = TestClient(chunk_size=4096, digest=True)
    p.connect()
    assert p.session.handshake_digest_used


def test_handshake_timeout() -> None:
    p = Pair(now=5.0, handshake_timeout=10.0)
    p.send(b"\x03" + bytes(100))
    assert p.session.next_deadline() == 15.0
    p.session.handle_timeout(14.9)
    assert p.session.events() == []
    p.session.handle_timeout(15.0)
    assert p.session.events() == [Closed("handshake timeout", True)]
    assert p.session.next_deadline() is None


def test_idle_timeout_ends_a_publisher() -> None:
    p = Pair(idle_timeout=30.0)
    sid = p.publish()
    p.now += 20
    p.send(p.client.video(sid, 0, b"\x27\x01\x00\x00\x00"))
    assert p.session.next_deadline() == p.now + 30
    p.session.handle_timeout(p.now + 30)
    assert p.session.events() == [Unpublished(sid, "tok123"), Closed("idle timeout", True)]


def test_protocol_error_closes_without_raising() -> None:
    p = Pair()
    p.connect()
    events = p.send(p.client.encoder.encode(3, 0, m.COMMAND_AMF0, 0, b"\x02\x00\x09conn"))  # truncated AMF
    assert events == [Closed("AMF0 value truncated", True)]


def test_command_before_connect_is_an_error() -> None:
    p = Pair()
    p.handshake()
    [event] = p.send(p.client.command("createStream", 1, None))
    assert isinstance(event, Closed) and event.error and "before connect" in event.reason


def test_amf3_command_is_understood() -> None:
    p = Pair()
    p.handshake()
    body = b"\x00" + amf0.encode_all("connect", 1.0) + b"\x11\x0a\x0b\x01\x07app\x06\x09live\x01"
    [event] = p.send(p.client.encoder.encode(3, 0, m.COMMAND_AMF3, 0, body))
    assert isinstance(event, ConnectRequested) and event.app == "live"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_after_the_handshake_never_raises(data: bytes) -> None:
    p = Pair()
    p.connect()
    events = p.send(data)
    assert all(not isinstance(e, Closed) or e.error for e in events)
