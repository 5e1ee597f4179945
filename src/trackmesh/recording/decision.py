"""The cluster-wide recording decision of rooms, kept in the room registry (sans-IO).

``POST /api/record/start`` / ``stop`` may reach any media node (any worker), while a room's
publishers may be on several nodes: each node records the tracks it ingests. So the decision
"record room R (these peers, into session S)" is not a call to one worker but registry entries
that every media worker watches (docs/recording.md, *In a cluster*).

Registry layout (names percent-encoded like the room entries, core/registry.py)::

    rec/<room>/d/<member>   -> Decision as JSON   (a start or a stop, by the member that took the call)
    rec/<room>/n/<member>   -> Recorder as JSON   (this member records tracks of the room now)

Registry entries are owned by the member that put them (a member cannot delete another's), so
a decision is *last writer wins*: the room's effective decision is its newest entry, by
``(stamp, member)``; recording runs while that entry is a start. A member's stamp is its wall
clock, but always above every stamp it has seen for the room, so a call always supersedes what
the node taking it knew. Entries do not pile up: a member deletes its own entry once a newer one
exists, and its own stop once it is the room's only entry left (nothing to supersede any more).
An owner that dies takes its entries with it (the registry drops a lost member's entries): a
recording started on a node that is gone stops, as if stopped.

This module only decides; ``runtime/recording.py`` puts, deletes and acts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, unquote

from trackmesh.core.registry import BadEntry

ROOT = "rec/"
STAMP_STEP = 0.001  # a new entry's stamp is at least this much above every stamp seen


def _enc(name: str) -> str:
    return quote(name, safe="")


def decision_key(room: str, member: str) -> str:
    return f"{ROOT}{_enc(room)}/d/{_enc(member)}"


def recorder_key(room: str, member: str) -> str:
    return f"{ROOT}{_enc(room)}/n/{_enc(member)}"


def parse_key(key: str) -> tuple[str, str, str]:
    """``rec/<room>/<d|n>/<member>`` -> (room, kind, member); BadEntry otherwise."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != ROOT[:-1] or parts[2] not in ("d", "n") or not parts[3]:
        raise BadEntry(f"unknown recording key {key!r}")
    return unquote(parts[1]), parts[2], unquote(parts[3])


def _object(value: bytes) -> dict[str, object]:
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEntry("recording entry is not JSON") from exc
    if not isinstance(obj, dict):
        raise BadEntry("recording entry is not a JSON object")
    return obj


@dataclass(frozen=True, slots=True)
class Decision:
    """A start (``on``) or a stop of a room's recording, by ``member`` at ``stamp``.
    ``peers`` None: every peer of the room."""

    on: bool
    stamp: float
    member: str
    app: str = ""
    session: str = ""
    peers: tuple[str, ...] | None = None

    def order(self) -> tuple[float, str]:
        return (self.stamp, self.member)

    def encode(self) -> bytes:
        peers = None if self.peers is None else list(self.peers)
        body = {"on": self.on, "stamp": self.stamp, "app": self.app, "session": self.session, "peers": peers}
        return json.dumps(body).encode()

    @staticmethod
    def decode(member: str, value: bytes) -> Decision:
        obj = _object(value)
        on, stamp, app, session, peers = (obj.get(k) for k in ("on", "stamp", "app", "session", "peers"))
        if not isinstance(on, bool) or not isinstance(stamp, int | float) or isinstance(stamp, bool):
            raise BadEntry("recording decision needs a boolean 'on' and a numeric 'stamp'")
        if not isinstance(app, str) or not isinstance(session, str):
            raise BadEntry("recording decision needs string 'app' and 'session'")
        if peers is not None and not (isinstance(peers, list) and all(isinstance(p, str) for p in peers)):
            raise BadEntry("recording decision 'peers' must be a list of strings or null")
        return Decision(on, float(stamp), member, app, session, None if peers is None else tuple(peers))


@dataclass(frozen=True, slots=True)
class Recorder:
    """A member (a media node's worker) that records tracks of the room now."""

    member: str
    node: int
    worker: int
    session: str
    tracks: int

    def encode(self) -> bytes:
        return json.dumps(
            {"node": self.node, "worker": self.worker, "session": self.session, "tracks": self.tracks}
        ).encode()

    @staticmethod
    def decode(member: str, value: bytes) -> Recorder:
        obj = _object(value)
        node, worker, session, tracks = (obj.get(k) for k in ("node", "worker", "session", "tracks"))
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (node, worker, tracks)):
            raise BadEntry("recorder entry needs integer 'node', 'worker' and 'tracks'")
        if not isinstance(session, str):
            raise BadEntry("recorder entry needs a string 'session'")
        assert isinstance(node, int) and isinstance(worker, int) and isinstance(tracks, int)
        return Recorder(member, node, worker, session, tracks)

    def view(self) -> dict[str, object]:
        return {"node": self.node, "zone": self.node >> 8, "worker": self.worker, "session": self.session,
                "tracks": self.tracks}  # fmt: skip


class RoomDecisions:
    """What one member knows of every room's recording entries; decides, never does I/O.

    Feed it the registry's puts and deletes under ``rec/`` (``on_put`` / ``on_delete``: each
    returns the room it touched, or None for an entry it dropped); ask ``effective(room)``;
    ``start`` / ``stop`` make this member's new entry (the caller puts it); ``garbage(room)``
    names this member's own entries to delete now.
    """

    def __init__(self, member: str) -> None:
        self.member = member
        self.decisions: dict[str, dict[str, Decision]] = {}
        self.recorders: dict[str, dict[str, Recorder]] = {}
        self.bad_entries = 0

    # ---- what the registry says ----------------------------------------------------------------

    def on_put(self, key: str, value: bytes) -> str | None:
        try:
            room, kind, member = parse_key(key)
            if kind == "d":
                self.decisions.setdefault(room, {})[member] = Decision.decode(member, value)
            else:
                self.recorders.setdefault(room, {})[member] = Recorder.decode(member, value)
        except BadEntry:
            self.bad_entries += 1
            return None
        return room

    def on_delete(self, key: str) -> str | None:
        try:
            room, kind, member = parse_key(key)
        except BadEntry:
            return None
        table = self.decisions if kind == "d" else self.recorders
        entries = table.get(room)
        if entries is not None:
            entries.pop(member, None)
            if not entries:
                del table[room]
        return room

    # ---- what it means ------------------------------------------------------------------------

    def newest(self, room: str) -> Decision | None:
        entries = self.decisions.get(room)
        if not entries:
            return None
        return max(entries.values(), key=Decision.order)

    def effective(self, room: str) -> Decision | None:
        """The room's recording now: its newest entry when that is a start, else None."""
        newest = self.newest(room)
        return newest if newest is not None and newest.on else None

    def rooms(self) -> list[str]:
        return list(self.decisions)

    def room_recorders(self, room: str) -> list[Recorder]:
        return sorted(self.recorders.get(room, {}).values(), key=lambda r: (r.node, r.worker))

    # ---- this member's calls ------------------------------------------------------------------

    def _stamp(self, room: str, wall: float) -> float:
        newest = self.newest(room)
        return wall if newest is None else max(wall, newest.stamp + STAMP_STEP)

    def start(self, room: str, app: str, peers: list[str] | None, wall: float, new_session: str) -> Decision:
        """A start taken by this member: joins the running recording (same session; the peers
        added, or every peer), or begins one in ``new_session``."""
        current = self.effective(room)
        if current is None:
            session, merged = new_session, None if peers is None else tuple(sorted(set(peers)))
        else:
            session, app = current.session, current.app
            both = None if peers is None or current.peers is None else set(current.peers) | set(peers)
            merged = None if both is None else tuple(sorted(both))
        return Decision(True, self._stamp(room, wall), self.member, app, session, merged)

    def stop(self, room: str, wall: float) -> tuple[Decision, Decision] | None:
        """A stop taken by this member: (the stop entry, the recording it ends), or None when
        the room is not being recorded."""
        current = self.effective(room)
        if current is None:
            return None
        stop = Decision(False, self._stamp(room, wall), self.member, current.app, current.session, current.peers)
        return stop, current

    def garbage(self, room: str) -> bool:
        """Whether this member's own entry of ``room`` should be deleted now: a newer entry
        supersedes it, or it is a stop and nothing is left for it to supersede."""
        entries = self.decisions.get(room, {})
        own = entries.get(self.member)
        if own is None:
            return False
        newest = max(entries.values(), key=Decision.order)
        if newest is not own:
            return True
        return not own.on and len(entries) == 1
