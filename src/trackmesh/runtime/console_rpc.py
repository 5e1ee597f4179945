"""The console's calls on a media worker: what is live (rooms, peers, tracks) and the operator's
actions (kick a peer, end a room, mute or unmute a published track). One per worker (:meth:`ConsoleRpc.of`); every
:class:`~.conn_table.ConnTable` of the worker registers with it, and so do the RTMP, SIP and MoQ
transports (``others``: each transport's :class:`OtherSessions` adapter, in its runtime module):
their sessions are listed, kicked, ended with their room and muted like WebRTC ones.

Each call is scoped to one app (tenant): a console logged in with an app's secret sees and acts on
that app's sessions only. ``"apps": "*"`` in a listing, kick or mute is the console role's cluster
operator (the cluster secret's login): every app's sessions, each row with its ``app``. Nothing
here runs per packet: a listing reads counters the peers keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from trackmesh.core.ids import SessionId
from trackmesh.rpc import RpcError

if TYPE_CHECKING:
    from trackmesh.core.endpoint import Endpoint
    from trackmesh.transports.webrtc.peer import WebRtcPeer

    from .worker import WorkerRuntime

__all__ = ["EVERY_APP", "KICK_REASON", "ROOM_ENDED_REASON", "BitrateMeter", "ConsoleRpc", "OtherSessions"]

#: Close reasons of the operator's actions (the connector logs them as KickByApi: "kick" is in both).
KICK_REASON = "kicked by the operator (console)"
ROOM_ENDED_REASON = "room ended by the operator (console, kick)"
#: The key of what is kept for the cluster operator's listings of every app (no app id has a NUL).
EVERY_APP = "\0every"


class OtherSessions(Protocol):
    """A transport's sessions for the console (the sessions that are not WebRTC connections: RTMP
    publishers, SIP and rtpengine calls, MoQ publishers into rooms). Each transport registers one
    with ``ConsoleRpc.of(runtime).others``; it lists its sessions (read at each console push,
    about once a second, never per packet) and ends one the way the transport itself ends it. A
    mute is the core's (a RemoteTrack stops reaching its viewers), the same for every transport.
    docs/console.md has the table per transport."""

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        """The sessions of ``app`` (None: of every app): ``app``, ``session`` (int), ``room``, ``peer``,
        ``transport``, ``connected``, ``remote`` (or None)."""
        ...

    def close(self, now: float, session: int, reason: str) -> bool:
        """End ``session`` now with ``reason``; False when it is not this transport's."""
        ...


class BitrateMeter:
    """Bits per second of byte counters between two listings (the console asks about once a second).

    Keyed by (session, direction, track); a key not read in a listing is forgotten, so it holds
    only what is live. The first reading of a key has no rate (None)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], tuple[float, int, int | None]] = {}
        self._seen: dict[tuple[str, str, str], tuple[float, int, int | None]] = {}

    def read(self, key: tuple[str, str, str], now: float, octets: int) -> int | None:
        prev = self._last.get(key)
        rate = prev[2] if prev is not None else None
        if prev is not None and now - prev[0] >= 0.5:
            rate = max(round((octets - prev[1]) * 8 / (now - prev[0])), 0)
            self._seen[key] = (now, octets, rate)
        else:
            self._seen[key] = prev if prev is not None else (now, octets, None)
        return rate

    def sweep(self) -> None:
        """End of a listing: keep what it read."""
        self._last, self._seen = self._seen, {}


def _published(endpoint: Endpoint, now: float, meter: BitrateMeter, peer: WebRtcPeer | None) -> list[dict[str, Any]]:
    """The tracks an endpoint publishes (any transport: its core RemoteTracks)."""
    out: list[dict[str, Any]] = []
    session = str(endpoint.session)
    for name, remote in sorted(endpoint.remote_tracks.items()):
        inbound = peer.inbound.by_name.get(name) if peer is not None else None
        out.append({
            "name": name,
            "kind": remote.info.kind.value,
            "direction": "publish",
            "packets": remote.packets,
            "codec": remote.codec.name if remote.codec is not None else None,
            "bitrate_bps": meter.read((session, "publish", name), now, remote.octets),
            # Simulcast: the rids the publisher sends (RFC 8853), empty for one stream.
            "simulcast": list(inbound.rids) if inbound is not None else [],
            "muted": remote.muted,
        })
    return out


def _tracks(peer: WebRtcPeer, now: float, meter: BitrateMeter) -> list[dict[str, Any]]:
    out = _published(peer.endpoint, now, meter, peer)
    session = str(peer.endpoint.session)
    for mid, track in sorted(peer.outbound.items()):
        rep = track.reception
        source = track.local.source
        out.append({
            "name": track.local.name,
            "mid": mid,
            "kind": track.kind,
            "direction": "subscribe",
            "source": f"{source.peer}/{source.track}" if source is not None else None,
            "packets": track.packets,
            "bitrate_bps": meter.read((session, "subscribe", mid), now, track.octets),
            # The simulcast stream or VP9 spatial layer forwarded, and the top temporal layer.
            "layer": {"spatial": track.spatial_layer, "temporal": track.temporal_layer} if track.video else None,
            "loss": round(rep.fraction_lost, 4),
            "rtt_ms": round(rep.rtt_ms, 1) if rep.rtt is not None else None,
            "jitter_ms": round(rep.jitter_ms, 1),
        })
    return out


class ConsoleTable(Protocol):
    """What the console needs of a ``conn_table.ConnTable``: its open connections, their apps, a close."""

    apps: dict[Any, str]

    def live_conns(self) -> Sequence[Any]: ...

    def close(self, now: float, conn: Any, reason: str) -> None: ...


class ConsoleRpc:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.tables: list[ConsoleTable] = []
        self.others: list[OtherSessions] = []  # RTMP, SIP, MoQ: adapters registered by those transports
        self.meters: dict[str, BitrateMeter] = {}  # per app
        runtime.register_rpc("console.rooms", self.rooms)
        runtime.register_rpc("console.kick", self.kick)
        runtime.register_rpc("console.end_room", self.end_room)
        runtime.register_rpc("console.mute", self.mute)
        runtime.register_rpc("console.unmute", self.unmute)

    @classmethod
    def of(cls, runtime: WorkerRuntime) -> ConsoleRpc:
        found = runtime.services.get(cls)
        if found is None:
            found = runtime.services[cls] = cls(runtime)
        assert isinstance(found, ConsoleRpc)
        return found

    def _conns(self, app: str | None) -> list[tuple[ConsoleTable, Any]]:
        """The live WebRTC connections of ``app`` (None: of every app)."""
        return [(table, conn) for table in self.tables for conn in table.live_conns()
                if app is None or table.apps.get(conn.key, "") == app]  # fmt: skip

    @staticmethod
    def _scope(params: dict[str, Any]) -> str | None:
        """The app a call is about; None for the cluster operator's ``"apps": "*"`` (every app)."""
        return None if params.get("apps") == "*" else str(params.get("app", ""))

    def rooms(self, now: float, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The app's live sessions, one row each: app, room (None before a join), peer, transport, tracks."""
        out = []
        app = self._scope(params)
        meter_key = EVERY_APP if app is None else app
        meter = self.meters.setdefault(meter_key, BitrateMeter())
        for table, conn in self._conns(app):
            peer: WebRtcPeer = conn.peer
            endpoint = peer.endpoint
            out.append({
                "app": table.apps.get(conn.key, ""),
                "session": str(endpoint.session),
                "room": endpoint.room,
                "peer": endpoint.peer,
                "transport": conn.kind,
                "connected": peer.connected,
                "worker": self.runtime.index,
                "remote": f"{peer.ctx.addr[0]}:{peer.ctx.addr[1]}" if peer.ctx.addr is not None else None,
                "tracks": _tracks(peer, now, meter),
            })
        endpoints = self.runtime.core.endpoints
        for other in self.others:
            for row in other.rows(app):
                found = endpoints.get(SessionId(row["session"]))
                tracks = _published(found, now, meter, None) if found is not None else []
                out.append({**row, "session": str(row["session"]), "worker": self.runtime.index, "tracks": tracks})
        meter.sweep()
        if not out:
            self.meters.pop(meter_key, None)  # no live session of that app: nothing to remember
        return out

    def kick(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        session, app = str(params.get("session", "")), self._scope(params)
        for table, conn in self._conns(app):
            if str(conn.key) == session:
                table.close(now, conn, KICK_REASON)
                return {"kicked": 1}
        if self._other_endpoint(app, session) is not None:
            for other in self.others:
                if other.close(now, int(session), KICK_REASON):
                    return {"kicked": 1}
        raise RpcError(404, "no live session with this id in your app")

    def _other_endpoint(self, app: str | None, session: str) -> Endpoint | None:
        """The core endpoint of a session of ``app`` (None: any app) on this worker (any transport), or None."""
        if not session.isdigit() or len(session) > 20:
            return None
        endpoint = self.runtime.core.endpoints.get(SessionId(int(session)))
        if endpoint is None or endpoint.closed or (app is not None and endpoint.app != app):
            return None
        return endpoint

    def mute(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        return self._set_muted(now, params, True)

    def unmute(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        return self._set_muted(now, params, False)

    def _set_muted(self, now: float, params: dict[str, Any], muted: bool) -> dict[str, Any]:
        """A published track of a live session stops (or resumes) reaching its viewers."""
        session, track, app = str(params.get("session", "")), str(params.get("track", "")), self._scope(params)
        endpoint: Endpoint | None = next((conn.peer.endpoint for _, conn in self._conns(app)
                                          if str(conn.key) == session), None)  # fmt: skip
        if endpoint is None:  # an RTMP, SIP or MoQ session: its core endpoint, mute is the core's
            endpoint = self._other_endpoint(app, session)
        if endpoint is None:
            raise RpcError(404, "no live session with this id in your app")
        remote = endpoint.remote_tracks.get(track)
        if remote is None:
            raise RpcError(404, "this session publishes no such track")
        changed = remote.set_muted(now, muted)  # the worker flushes its key-frame request
        audit = self.runtime.core.audit
        if changed and audit is not None:
            audit.track_muted(now, endpoint.session, track, muted)  # the peer's timeline shows it
        return {"muted": muted, "changed": changed}

    def end_room(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        room, app = str(params.get("room", "")), str(params.get("app", ""))
        kicked = 0
        for table, conn in self._conns(app):
            if conn.peer.endpoint.room == room:
                table.close(now, conn, ROOM_ENDED_REASON)
                kicked += 1
        for other in list(self.others):  # RTMP publishers, SIP calls, MoQ peers of the room
            rows = [row for row in other.rows(app) if row["room"] == room]
            for row in rows:  # (one MoQ session may carry several peers: closing it ends them all)
                other.close(now, int(row["session"]), ROOM_ENDED_REASON)
            kicked += len(rows)
        return {"kicked": kicked}
