"""``--hook-body protobuf``: atm0s's protobuf-binary body, decoded by an atm0s-shaped decoder
(tests/connector/atm0s_shape: atm0s's field numbers and types only, none of ours)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from trackmesh.connector import events as ev
from trackmesh.connector.protobuf_body import to_protobuf
from trackmesh.connector.protocol import hook_pb2
from trackmesh.connector.service import AppHooks, ConnectorService
from trackmesh.connector.signing import content_type

from .atm0s_shape import atm0s_hook_pb2 as atm0s
from .receiver import HookReceiver
from .test_service import FAST, SECRET, check_order, room_traffic, wait_for

# Every variant atm0s 0.2 has, with the oneof field an atm0s decoder finds it in.
ATM0S_PEER: list[tuple[ev.PeerEventBody, str]] = [
    (ev.RouteBegin("10.0.0.7"), "route_begin"),
    (ev.RouteSuccess(12, 3), "route_success"),
    (ev.RouteError(30, None, ev.RouteErrorType.POOL_EMPTY), "route_error"),
    (ev.RouteError(30, 4, ev.RouteErrorType.MEDIA_ERROR), "route_error"),
    (ev.Connecting("10.0.0.7"), "connecting"),
    (ev.Connected(80, "10.0.0.7"), "connected"),
    (ev.ConnectError(10000, ev.ConnectErrorType.TIMEOUT), "connect_error"),
    (ev.Reconnect("10.0.0.8"), "reconnect"),
    (ev.Reconnected(450, "10.0.0.8"), "reconnected"),
    (ev.Disconnected(60000, ev.DisconnectReason.KICK_BY_API), "disconnected"),
    (ev.Join("room-ü", "alice"), "join"),
    (ev.Leave("room-ü", "alice"), "leave"),
    (ev.RemoteTrackStarted("video_main", ev.Kind.VIDEO), "remote_track_started"),
    (ev.RemoteTrackEnded("audio_main", ev.Kind.AUDIO), "remote_track_ended"),
    (ev.LocalTrack("video_0", ev.Kind.VIDEO), "local_track_started"),
    (ev.LocalTrackAttach("video_0", "bob", "video_main"), "local_track_attach"),
    (ev.LocalTrackDetach("video_0", "bob", "video_main"), "local_track_detach"),
]
ROOM: list[tuple[ev.RoomEventBody, str]] = [
    (ev.Started(), "started"),
    (ev.Stopped(), "stopped"),
    (ev.PeerJoined("alice"), "peer_joined"),
    (ev.PeerLeaved("alice"), "peer_leaved"),
    (ev.AllPeersLeaved(), "all_peers_leaved"),
]


def _fields(msg: Any) -> dict[str, Any]:
    return {f.name: v for f, v in msg.ListFields()}


def _expected(body: Any) -> dict[str, Any]:
    """The record's fields as protobuf leaves them: defaults (0, "", False) are not on the wire."""
    as_json = ev.to_dict(ev.HookEvent(0, 0, ev.PeerEvent(0, body)))["event"]["Peer"]["event"][body.TAG]
    return {k: v for k, v in as_json.items() if v not in (None, 0, "", False)}


@pytest.mark.parametrize(("body", "field"), ATM0S_PEER, ids=lambda x: getattr(x, "TAG", str(x)))
def test_atm0s_decoder_reads_every_atm0s_peer_event(body: ev.PeerEventBody, field: str) -> None:
    data = to_protobuf(ev.HookEvent(7, 1733500000123, ev.PeerEvent(2**63 + 5, body)))
    got = atm0s.HookEvent.FromString(data)
    assert (got.node, got.ts, got.WhichOneof("event")) == (7, 1733500000123, "peer")
    assert got.peer.session_id == 2**63 + 5
    assert got.peer.WhichOneof("event") == field
    assert _fields(getattr(got.peer, field)) == _expected(body)
    # The optional dest_node is absent when None, present (even 0) otherwise, as with prost.
    if isinstance(body, ev.RouteError):
        assert got.peer.route_error.HasField("dest_node") == (body.dest_node is not None)
    assert content_type(data) is None


@pytest.mark.parametrize(("body", "field"), ROOM, ids=lambda x: getattr(x, "TAG", str(x)))
def test_atm0s_decoder_reads_every_room_event(body: ev.RoomEventBody, field: str) -> None:
    data = to_protobuf(ev.HookEvent(1, 1733500000000, ev.RoomEvent("r1", body)), app="tenant-a")
    got = atm0s.HookEvent.FromString(data)
    assert got.WhichOneof("event") == "room"
    assert (got.room.app, got.room.room, got.room.WhichOneof("event")) == ("tenant-a", "r1", field)
    assert _fields(getattr(got.room, field)) == {k: v for k, v in ev.to_dict(
        ev.HookEvent(0, 0, ev.RoomEvent("r1", body)))["event"]["Room"]["event"][body.TAG].items()}


@pytest.mark.parametrize("body", [ev.RemoteTrackMuted("audio_main", True), ev.LocalTrackLayer("video_0", 2, 1),
                                  ev.Disconnected(5, ev.DisconnectReason.NODE_FAILURE)], ids=lambda b: b.TAG)
def test_our_additions_do_not_break_an_atm0s_decoder(body: ev.PeerEventBody) -> None:
    """What atm0s does not have is skipped by its decoder (an unknown field or enum value), never
    misread; our own decoder reads it back."""
    data = to_protobuf(ev.HookEvent(1, 2, ev.PeerEvent(99, body)))
    got = atm0s.HookEvent.FromString(data)
    assert got.peer.session_id == 99
    ours = hook_pb2.HookEvent.FromString(data)
    if isinstance(body, ev.Disconnected):
        assert got.peer.disconnected.reason == 4 and ours.peer.disconnected.reason == 4
    else:
        assert got.peer.WhichOneof("event") is None
        field = {"RemoteTrackMuted": "remote_track_muted", "LocalTrackLayer": "local_track_layer"}[body.TAG]
        assert ours.peer.WhichOneof("event") == field
        assert _fields(getattr(ours.peer, field)) == _expected(body)


def test_protobuf_webhooks_are_signed_over_the_exact_bytes_and_decode(tmp_path: Any) -> None:
    """The service with ``hook_body="protobuf"``: every delivery verifies with the
    ``standardwebhooks`` package (over the binary body), carries no content-type, as atm0s's,
    and decodes with the atm0s-shaped decoder; retries resend the same bytes, in order per room."""
    rx = HookReceiver(SECRET, answer=lambda n, msg_id: 500 if n % 4 == 0 else 200).start()

    async def main() -> None:
        svc = ConnectorService(f"sqlite:///{tmp_path / 'c.db'}", 1, lambda app: AppHooks(rx.url, SECRET), FAST,
                               destroy_after=3600, hook_body="protobuf")
        await svc.start()
        batch, _where = room_traffic(rooms=2, peers_per_room=2)
        await svc.submit(batch)
        # Per room: Started, and for each peer (they come one after the other) PeerJoined, PeerLeaved, AllPeersLeaved.
        total = len(batch) + 2 * (1 + 2 * 3)
        await wait_for(lambda: svc.outbox.delivered == total)
        check_order(rx, svc.engine)
        await svc.stop()

    try:
        asyncio.run(main())
        accepted = rx.accepted()
        assert accepted and rx.unverified == 0 and any(r.status == 500 for r in rx.requests)
        names = []
        for r in accepted:
            assert r.content_type is None
            msg = atm0s.HookEvent.FromString(r.body)
            inner = msg.peer if msg.WhichOneof("event") == "peer" else msg.room
            names.append(inner.WhichOneof("event"))
            assert msg.node == 1 and abs(msg.ts / 1000 - time.time()) < 60
        expected = {"connecting", "join", "leave", "disconnected", "started", "peer_joined", "all_peers_leaved"}
        assert expected <= set(names)
    finally:
        rx.stop()
