"""The console's rows for sessions outside the WebRTC connection tables: RTMP publishers, SIP (and
rtpengine) calls and MoQ publishers into rooms, from the calls the workers already answer
(``rtmp.list``, ``sip.stats``) and the MoQ listener's room ingest, as rows of the same shape as
``console.rooms`` (runtime/console_rpc.py) so the console's ``group_rooms`` puts them in their rooms.
Standalone's console adds them to its workers' rows; a cluster media node's console queryable
(runtime/console_query.py) to the rows it answers the ``trackmesh console`` role with
(:func:`add_other_sessions`), so they show there too with their zone and node.

Scoped to one app like the rest of the console: an RTMP publisher or a MoQ room belongs to the app
of its token; SIP calls carry no app and are listed to the default app ("") only. These rows have
no per-track detail and no kick (``kickable: false``): RTMP is ended with ``DELETE /rtmp/conn/{conn_id}``,
SIP calls with a BYE.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["add_other_sessions", "moq_rows", "rtmp_rows", "sip_rows"]


def _row(session: str, room: Any, peer: Any, transport: str, connected: bool, worker: Any,
         remote: Any = None) -> dict[str, Any]:  # fmt: skip
    return {"session": session, "room": None if room is None else str(room),
            "peer": None if peer is None else str(peer), "transport": transport, "connected": connected,
            "worker": worker, "remote": remote, "tracks": [], "kickable": False}  # fmt: skip


def rtmp_rows(app: str, results: Iterable[Any]) -> list[dict[str, Any]]:
    """``rtmp.list`` of every worker (a worker's error, e.g. RTMP off, is skipped)."""
    out = []
    for result in results:
        if not isinstance(result, list):
            continue
        for p in result:
            if isinstance(p, dict) and str(p.get("app", "")) == app:
                out.append(_row(str(p.get("session", p.get("conn_id"))), p.get("room"), p.get("peer"), "rtmp",
                                bool(p.get("connected")), p.get("worker"), p.get("remote")))  # fmt: skip
    return out


def sip_rows(app: str, results: Iterable[Any]) -> list[dict[str, Any]]:
    """``sip.stats`` of every worker: its calls, for the default app only (they carry no app)."""
    if app:
        return []
    out = []
    for result in results:
        if not isinstance(result, dict):
            continue
        for c in result.get("calls", []):
            if isinstance(c, dict):
                # A call is in its room from its first RTP packet (runtime/sip_media.py).
                out.append(_row(str(c.get("session")), c.get("room") if c.get("joined") else None, c.get("peer"),
                                str(c.get("kind", "sip")), bool(c.get("joined")), c.get("worker")))  # fmt: skip
    return out


def moq_rows(app: str, ingest: Any) -> list[dict[str, Any]]:
    """The MoQ room ingest's publishers (runtime/moq_room_ingest.py): each room's peers, whose
    endpoints live in the first worker."""
    out = []
    for room in list(getattr(ingest, "rooms", {}).values()):
        if room.app != app:
            continue
        for peer, endpoint in list(room.peers.items()):
            out.append(_row(str(endpoint.session), room.name, peer, "moq", True, 0))
    return out


def add_other_sessions(app: str, rooms: list[Any], rtmp: list[Any], sip: list[Any]) -> list[Any]:
    """Each worker's ``console.rooms`` result (a list of rows, or the error it answered) with the RTMP
    publishers and SIP calls of the same worker (``rtmp.list`` and ``sip.stats``, in worker order)."""
    out: list[Any] = []
    for index, result in enumerate(rooms):
        if isinstance(result, list):
            result = [*result, *rtmp_rows(app, rtmp[index:index + 1]), *sip_rows(app, sip[index:index + 1])]
        out.append(result)
    return out
