"""The console's reach into the sessions that are not WebRTC connections (docs/console.md): RTMP
publishers, SIP (and rtpengine) calls and MoQ publishers into rooms. Each transport registers an
adapter with the worker's :class:`~.console_rpc.ConsoleRpc` (``ConsoleRpc.of(runtime).others``),
which lists their sessions with their tracks (read from the sessions' core endpoints, as for
WebRTC) and closes them on a kick or a room end, the way the transport itself ends one:

- an RTMP publisher: ``onStatus NetStream.Publish.Unpublish`` and its TCP connection closed, no
  linger (as ``DELETE /rtmp/conn/{conn_id}``);
- a SIP call: its media ends and the SIP driver sends the BYE (RFC 3261 s15), as after a media
  timeout; an rtpengine call ends (its SIP proxy owns the dialog and hangs up itself);
- a MoQ publisher: the peer leaves the room and the MoQ session that publishes its namespace is
  closed (CONNECTION_CLOSE, NO_ERROR, with the reason; draft-ietf-moq-transport s3.6): the room's
  other MoQ peers of that session leave with it.

A mute is the core's (a RemoteTrack stops reaching its viewers), the same for every transport:
:class:`~.console_rpc.ConsoleRpc` finds the endpoint in the worker's core. Nothing here runs per
packet: the listing is read at each console push (about once a second).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from trackmesh.core.endpoint import Endpoint
from trackmesh.core.ids import SessionId

if TYPE_CHECKING:
    from .moq_room_ingest import MoqRoomIngest
    from .rtmp_worker import RtmpTransport
    from .sip_media import SipMediaTransport

__all__ = ["MoqSessions", "OtherSessions", "RtmpSessions", "SipSessions"]


class OtherSessions(Protocol):
    """A transport's sessions for the console."""

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        """The sessions of ``app`` (None: of every app): ``app``, ``session`` (int), ``room``, ``peer``,
        ``transport``, ``connected``, ``remote`` (or None)."""
        ...

    def close(self, now: float, session: int, reason: str) -> bool:
        """End ``session`` now with ``reason``; False when it is not this transport's."""
        ...


class RtmpSessions:
    def __init__(self, rtmp: RtmpTransport) -> None:
        self.rtmp = rtmp

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        out = []
        for entry in self.rtmp.entries.values():
            if app is not None and entry.app != app:
                continue
            p, conn = entry.publisher, entry.conn
            remote = f"{conn.peer[0]}:{conn.peer[1]}" if conn is not None and conn.peer else None
            out.append({"app": entry.app, "session": int(p.endpoint.session), "room": p.room, "peer": p.peer,
                        "transport": "rtmp", "connected": conn is not None, "remote": remote})  # fmt: skip
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        entry = self.rtmp.by_session.get(SessionId(session))
        if entry is None:
            return False
        self.rtmp.delete(now, {"conn_id": entry.publisher.endpoint.conn_id, "reason": reason})
        return True


class SipSessions:
    def __init__(self, sip: SipMediaTransport) -> None:
        self.sip = sip

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        endpoints = self.sip.runtime.core.endpoints
        out = []
        for call in self.sip.calls.values():
            endpoint = endpoints.get(call.session)
            if endpoint is None or (app is not None and endpoint.app != app):
                continue
            joined = call.media.started  # in its room from its first RTP packet (runtime/sip_media.py)
            out.append({"app": endpoint.app, "session": int(call.session), "room": call.media.room if joined else None,
                        "peer": call.media.peer, "transport": call.kind, "connected": joined, "remote": None})
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        return self.sip.hang_up(now, SessionId(session), reason)


class MoqSessions:
    def __init__(self, ingest: MoqRoomIngest) -> None:
        self.ingest = ingest

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        out = []
        for room in list(self.ingest.rooms.values()):
            if app is not None and room.app != app:
                continue
            for peer, endpoint in list(room.peers.items()):
                if not isinstance(endpoint, Endpoint):
                    continue  # joined on another worker (standalone --workers N): listed by that worker
                out.append({"app": room.app, "session": int(endpoint.session), "room": room.name, "peer": peer,
                            "transport": "moq", "connected": True, "remote": None})  # fmt: skip
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        from trackmesh.transports.moq.errors import SessionErrorCode

        ingest = self.ingest
        for room in list(ingest.rooms.values()):
            peer = next(
                (p for p, e in room.peers.items() if isinstance(e, Endpoint) and int(e.session) == session), None
            )
            if peer is None:
                continue
            # The peer leaves with the operator's reason (its last track closes its endpoint) ...
            for name in [n for n, t in room.tracks.items() if t.peer == peer]:
                ingest.drop_track(room, name, reason)
            # ... and the MoQ session publishing the room's namespace is closed, with the reason.
            for publisher, _ in list(ingest.relay.namespaces.get(room.namespace, [])):
                closer = getattr(publisher, "close", None)
                if callable(closer):
                    closer(SessionErrorCode.NO_ERROR, reason)
            return True
        return False
