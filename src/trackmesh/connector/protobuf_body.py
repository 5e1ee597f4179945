"""``--hook-body protobuf``: the webhook body as atm0s 0.2 posts it with
``--hook-body-type protobuf-binary``, the protobuf encoding of its ``HookEvent``.

The message types are generated from ``proto/trackmesh/connector/hook.proto`` (our definition,
laid out to be wire-compatible with atm0s's ``connector.proto``: docs/connector.md). Like the
JSON body, the bytes are made once, when the event enters the outbox, and posted unchanged on
every retry; the Standard Webhooks signature covers those exact bytes.

atm0s posts the binary body without a ``content-type`` (reqwest's ``.body(buf)``); so do we
(signing.content_type), so a receiver that tells the two bodies apart by
``content-type: application/json`` works as with atm0s.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from . import events as ev
from .protocol import hook_pb2

#: The variant's oneof field in ``PeerEvent.event`` / ``RoomEvent.event``.
_PEER_FIELD = {
    ev.RouteBegin: "route_begin",
    ev.RouteSuccess: "route_success",
    ev.RouteError: "route_error",
    ev.Connecting: "connecting",
    ev.Connected: "connected",
    ev.ConnectError: "connect_error",
    ev.Reconnect: "reconnect",
    ev.Reconnected: "reconnected",
    ev.Disconnected: "disconnected",
    ev.Join: "join",
    ev.Leave: "leave",
    ev.RemoteTrackStarted: "remote_track_started",
    ev.RemoteTrackEnded: "remote_track_ended",
    ev.LocalTrack: "local_track",
    ev.LocalTrackAttach: "local_track_attach",
    ev.LocalTrackDetach: "local_track_detach",
    ev.RemoteTrackMuted: "remote_track_muted",
    ev.LocalTrackLayer: "local_track_layer",
}
_ROOM_FIELD = {
    ev.Started: "started",
    ev.Stopped: "stopped",
    ev.PeerJoined: "peer_joined",
    ev.PeerLeaved: "peer_leaved",
    ev.AllPeersLeaved: "all_peers_leaved",
}

def _fill(target: Any, body: Any) -> None:
    """Copy the record's fields into the generated message (same names; enums as ints; an
    optional field left unset when None)."""
    for f in fields(body):
        value = getattr(body, f.name)
        if value is not None:
            setattr(target, f.name, int(value) if isinstance(value, int) and not isinstance(value, bool) else value)


def to_protobuf(hook: ev.HookEvent, app: str = "") -> bytes:
    """The protobuf body of ``hook``; ``app`` goes into ``RoomEvent.app`` as atm0s does (its
    PeerEvent's app is not part of the layout we could check, so it is left out there)."""
    msg = hook_pb2.HookEvent(node=hook.node, ts=hook.ts)
    event = hook.event
    if isinstance(event, ev.PeerEvent):
        peer = msg.peer
        peer.session_id = event.session_id
        _fill(getattr(peer, _PEER_FIELD[type(event.event)]), event.event)
        # An empty message must still select its oneof variant.
        getattr(peer, _PEER_FIELD[type(event.event)]).SetInParent()
    else:
        room = msg.room
        room.app = app
        room.room = event.room
        variant = getattr(room, _ROOM_FIELD[type(event.event)])
        _fill(variant, event.event)
        variant.SetInParent()
    return msg.SerializeToString(deterministic=True)
