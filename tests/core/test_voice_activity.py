"""Voice activity of a LocalTrack: an event of the viewer's endpoint, timed by the packets' arrival."""

from __future__ import annotations

from trackmesh.core.controls import CreateLocalTrack, Join, Publish, Subscribe
from trackmesh.core.events import VoiceActivity
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind, TrackSource

from .conftest import Harness, drain

A = TrackKind.AUDIO


def test_a_watching_local_track_reports_loud_packets_at_most_every_half_second(h: Harness) -> None:
    pub, viewer = h.endpoint(), h.endpoint(1)
    assert pub.control(h.now, Join("r", "alice")) is None
    assert pub.control(h.now, Publish("mic", A)) is None
    assert viewer.control(h.now, Join("r", "bob")) is None
    assert viewer.control(h.now, CreateLocalTrack("audio_0", A)) is None
    assert viewer.control(h.now, Subscribe("audio_0", TrackSource("alice", "mic"))) is None
    local = viewer.local_track("audio_0")
    remote = pub.remote_track("mic")
    assert local is not None and remote is not None
    drain(viewer)
    levels = [90, 20, 20, 20, 45, 30]  # RFC 6464 -dBov: silence, voice...; 45 is below a 40 threshold
    arrivals = [h.now + 0.1 * i for i in range(len(levels))] + [h.now + 0.7]
    levels.append(10)

    def send() -> list[VoiceActivity]:
        for i, (level, at) in enumerate(zip(levels, arrivals, strict=True)):
            pkt = MediaPacket(MediaCodec.OPUS, 111, i, 960 * i, False, False, b"x", audio_level=level, arrival=at)
            remote.on_packet(pkt)
        return [ev for ev in drain(viewer) if isinstance(ev, VoiceActivity)]

    assert send() == []  # not watched: nothing
    local.voice_threshold = 40
    got = send()
    source = TrackSource("alice", "mic")
    # The first loud packet, then none for 500 ms of arrival time, then the next loud one.
    assert got == [VoiceActivity("audio_0", source, -20), VoiceActivity("audio_0", source, -10)]
