"""WHIP/WHEP room policy (join, publish on connect, WHEP auto-follow, naming) above a generic WebRtcPeer, in
memory on a virtual clock with the in-process registry and hub (tests/transports/webrtc/peer_client.py)."""

from __future__ import annotations

import pytest

from trackmesh.core.model import LocalTrackState, TrackKind
from trackmesh.sdp.model import Fingerprint
from trackmesh.transports.webrtc.answer import NegotiatedMedia, RemoteTransport
from trackmesh.transports.whip_whep.session import (
    PeerMode,
    SessionSetupError,
    default_local_names,
    default_remote_names,
)

from ..webrtc.peer_client import Net
from ..webrtc.test_peer import publish, send_frames


def _media(*lines: tuple[str, str, str]) -> tuple[NegotiatedMedia, ...]:
    # Only mid, kind and our direction matter for naming; the transport is shared by every line (BUNDLE).
    fp = Fingerprint("sha-256", ":".join(["AB"] * 32))
    transport = RemoteTransport("ufrag", "pwd" * 8, fp, (fp,), "active", (), False, (), False)
    return tuple(
        NegotiatedMedia(index=i, mid=mid, kind=kind, direction=direction, transport=transport)
        for i, (mid, kind, direction) in enumerate(lines)
    )


def test_whip_names_the_first_line_of_a_kind_main_and_the_rest_by_mid() -> None:
    media = _media(("0", "audio", "recvonly"), ("1", "video", "recvonly"), ("2", "video", "recvonly"))
    assert default_remote_names(media) == {"0": "audio_main", "1": "video_main", "2": "video_2"}
    assert default_local_names(media) == {}


def test_whep_numbers_the_lines_it_sends_on_per_kind() -> None:
    media = _media(("a", "video", "sendonly"), ("b", "audio", "sendonly"), ("c", "video", "sendrecv"))
    assert default_local_names(media) == {"a": "video_0", "b": "audio_0", "c": "video_1"}
    assert default_remote_names(media) == {"c": "video_main"}


def test_whip_tracks_go_live_in_the_room_only_once_connected() -> None:
    net = Net()
    _, watcher = net.connect(PeerMode.WHEP, peer="watcher")
    _, ppeer = net.connect(PeerMode.WHIP, peer="alice", handshake=False)
    assert ppeer.endpoint.room == "room"
    assert not watcher.endpoint.room_tracks()  # joined, nothing published yet
    net.flush()  # ICE + DTLS: Connected reaches the session through the driver
    tracks = {(t.peer, t.track, t.kind) for t in watcher.endpoint.room_tracks()}
    assert tracks == {("alice", "audio_main", TrackKind.AUDIO), ("alice", "video_main", TrackKind.VIDEO)}


def test_a_whep_viewer_is_invisible_and_follows_the_first_track_of_each_kind() -> None:
    net = Net()
    pub, ppeer = publish(net, "alice")
    _, vpeer = net.connect(PeerMode.WHEP, peer="viewer")
    assert ppeer.endpoint.room_tracks() == []  # the viewer announced no tracks
    for name, track in (("audio_0", "audio_main"), ("video_0", "video_main")):
        local = vpeer.endpoint.local_track(name)
        assert local is not None and local.state is LocalTrackState.ACTIVE
        assert local.source is not None and (local.source.peer, local.source.track) == ("alice", track)
    send_frames(net, pub, 1, 2)
    assert vpeer.outbound["1"].packets == 2


def test_a_bare_peer_does_not_join_or_publish() -> None:
    net = Net()
    _, peer = net.connect(None)
    assert peer.endpoint.room is None and not peer.endpoint.local_tracks and not net.rooms


def test_a_refused_join_is_a_typed_setup_error() -> None:
    with pytest.raises(SessionSetupError, match="room name") as info:
        Net().connect(PeerMode.WHEP, room="")
    assert info.value.error.message
