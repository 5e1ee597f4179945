"""The worker side of recording on the real core (in process): a recorded track's tap asks the
publisher for a key frame when the recording thread wants one, through the channel's feedback."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from trackmesh.cluster.local import LocalChannelHub
from trackmesh.core.events import EndpointEvent, KeyframeRequested
from trackmesh.core.model import MediaCodec, MediaPacket, TrackInfo, TrackKind
from trackmesh.core.tracks import RemoteTrack
from trackmesh.recording.writer import RecordingWriter
from trackmesh.runtime.recording import _Tap


def test_the_tap_turns_the_threads_wish_into_one_keyframe_request(tmp_path: Path) -> None:
    hub = LocalChannelHub()
    events: deque[EndpointEvent] = deque()
    track = RemoteTrack(TrackInfo("cam", "video", TrackKind.VIDEO), 7, events)
    track.start(0.0, hub)
    writer = RecordingWriter(tmp_path, 3600.0, {}, wall_offset=time.time() - time.monotonic())
    tap = _Tap("k", 7, writer, track, hub)
    hub.subscribe(0.0, 7, tap)
    pkt = MediaPacket(MediaCodec.VP8, 96, 1, 3000, True, False, b"\x10\x00\x00", arrival=10.0)
    track.on_packet(pkt)
    assert not [e for e in events if isinstance(e, KeyframeRequested)]
    tap.want_keyframe()  # what the recording thread calls while the track waits for a key frame
    track.on_packet(pkt)
    track.on_packet(pkt)
    assert [e for e in events if isinstance(e, KeyframeRequested)] == [KeyframeRequested("video")]
    assert not tap.keyframe_wanted
    writer.stop(1.0)
