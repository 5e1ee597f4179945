"""The whole publish path in memory on a virtual clock: an RTMP client's chunk stream into the
session, its events into the room bridge, a viewer in the room collecting RTP. Encoders that start
near 2^24 ms (extended timestamps from 4 h 40 min on) or cross the 2^32 ms wrap (49.7 days, RTMP
s5.3.1.3: timestamps wrap and are compared in serial-number arithmetic) keep playing: every frame
arrives, RTP timestamps step by the frame interval, also over the RTP wrap."""

from __future__ import annotations

import itertools

import pytest

from tests.transports.rtmp.test_bridge import AVC_CONFIG, Room, inter_tag, key_tag
from tests.transports.rtmp.test_session import Pair
from trackmesh.core.model import TrackKind
from trackmesh.transports.rtmp.bridge import AUDIO_TRACK, RtmpPublisher
from trackmesh.transports.rtmp.events import AudioData, VideoData

OPUS_HEAD = b"\x90Opus" + b"OpusHead" + bytes(11)
U32 = 1 << 32


def feed(pair: Pair, room: Room, pub: RtmpPublisher, gen: int, wire: bytes) -> None:
    """What the worker does: TCP reads into the session, its media events into the bridge."""
    for at in range(0, len(wire), 4096):
        for event in pair.send(wire[at : at + 4096]):
            if isinstance(event, VideoData):
                pub.video(room.now, gen, event.timestamp, event.payload)
            elif isinstance(event, AudioData):
                pub.audio(room.now, gen, event.timestamp, event.payload)
        room.pump(pub)
        room.now += 0.01


@pytest.mark.parametrize("start_ms", [2**24 - 500, 2**32 - 500, 2**32 - 1], ids=["near-2^24", "across-2^32", "at-2^32"])
def test_a_publisher_keeps_playing_across_the_24_bit_field_and_the_2_32_wrap(start_ms: int) -> None:
    pair, room = Pair(), Room()
    sid = pair.publish()
    pub = room.publisher()
    gen = pub.attach(room.now)
    c = pair.client
    frames = 60  # 2 s at 30 fps, key frame every second; Opus every 20 ms
    stamps = [(start_ms + i * 1000 // 30) % U32 for i in range(frames)]  # what goes on the wire
    wire = c.video(sid, start_ms % U32, AVC_CONFIG) + c.audio(sid, start_ms % U32, OPUS_HEAD)
    feed(pair, room, pub, gen, wire)  # the sequence headers publish the tracks
    _, video = room.viewer()
    _, audio = room.viewer(TrackKind.AUDIO, AUDIO_TRACK)
    wire = b""
    for i, t in enumerate(stamps):
        wire += c.video(sid, t, key_tag(size=300) if i % 30 == 0 else inter_tag())
        for k in range(i * 5 // 3, (i + 1) * 5 // 3):  # the 20 ms Opus frames of this 33 ms
            wire += c.audio(sid, (start_ms + k * 20) % U32, b"\x91Opus\xfc" + bytes([k & 0xFF]))
    feed(pair, room, pub, gen, wire)
    stats = pair.session.stats
    assert stats.video_messages == frames + 1 and stats.dropped_messages == 0
    live = [p for p in video if p.replay == 0]  # a GOP replay (the viewer's key-frame request) is a copy
    ends = [p.ts for p in live if p.marker]
    assert len(ends) == frames, (len(ends), pub.counters)  # every frame reached the viewer
    steps = [(b - a) % U32 for a, b in itertools.pairwise(ends)]
    assert set(steps) <= {33 * 90, 34 * 90}, sorted(set(steps))  # 33/34 ms at 90 kHz, never backwards
    assert all(0 <= p.ts < U32 for p in video + audio)
    # The capture clock (what viewers' sender reports map RTP to) follows the encoder's timeline too.
    captures = [p.capture for p in live if p.marker]
    assert all(0.032 < b - a < 0.035 for a, b in itertools.pairwise(captures)), captures
    assert sum(1 for p in live if p.keyframe and p.marker) == 2
    opus = [p.ts for p in audio]
    assert len(opus) == frames * 5 // 3 and {(b - a) % U32 for a, b in itertools.pairwise(opus)} == {960}
    assert [bytes(p.payload)[1] for p in audio] == [k & 0xFF for k in range(len(opus))]  # in order, none lost
