"""The registry seam: a key-value store with prefix watches, holding who is in which room.

Endpoints never talk to one another. They publish their peer and track info as registry
entries and watch their room's prefix. The in-process implementation
(:mod:`trackmesh.cluster.local`) backs ``trackmesh standalone``; the distributed one backs a
cluster, behind the same Protocol, so a local and a remote peer take the same path.

Key layout (names are percent-encoded, so ``/`` inside a name cannot break it)::

    r/<room>/p/<peer>/<session>            -> PeerInfo as JSON
    r/<room>/t/<peer>/<track>/<session>    -> TrackInfo as JSON

The session id is part of every key: two sessions of the same (room, peer) own separate
entries and never overwrite or delete each other's.

Rooms are per app (multi-tenancy, docs/connector.md): the ``<room>`` of those keys, of every track
channel and of the recording decisions is the room's *key*, :func:`room_key` of (app, room name).
The single-tenant app ``""`` keys a room by its name alone, so a node without tenants writes and
reads exactly what it did before apps existed; a tenant's room key is ``<app> US <room>`` (US,
the ASCII unit separator 0x1F, is in no valid room name or app id: both must be printable), so
two apps' rooms of the same name never meet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote

from .ids import SessionId
from .model import PeerInfo, TrackInfo, TrackKind


class RegistryWatcher(Protocol):
    """Told every change under a watched prefix, with ``now``: the time of the call that made
    the change (``put``, ``delete``, ``watch``) or, for a change that arrives later from another
    node, the time the driver delivers it at (the clock the worker's ``now`` comes from)."""

    def on_registry_put(self, now: float, key: str, value: bytes) -> None: ...

    def on_registry_delete(self, now: float, key: str) -> None: ...


class Registry(Protocol):
    """Key-value store with prefix watches.

    ``watch`` replays the entries already under ``prefix`` as puts (synchronously or later),
    then reports every change. Watchers must only record what they are told: they may be
    called from inside ``put`` and ``delete``, with the ``now`` given to that call.
    """

    def put(self, now: float, key: str, value: bytes) -> None: ...

    def delete(self, now: float, key: str) -> None: ...

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None: ...

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None: ...


#: Between the app id and the room name in a tenant's room key (not printable: in no name).
APP_SEPARATOR = "\x1f"


def room_key(app: str, room: str) -> str:
    """The room's identity in the media core: its name for the single-tenant app, else app-scoped."""
    return f"{app}{APP_SEPARATOR}{room}" if app else room


def split_room_key(key: str) -> tuple[str, str]:
    """(app, room name) of a room key (:func:`room_key`'s inverse)."""
    app, sep, room = key.partition(APP_SEPARATOR)
    return (app, room) if sep else ("", key)


def _enc(name: str) -> str:
    return quote(name, safe="")


def room_prefix(room: str) -> str:
    return f"r/{_enc(room)}/"


def peer_key(room: str, peer: str, session: SessionId) -> str:
    return f"r/{_enc(room)}/p/{_enc(peer)}/{session}"


def track_key(room: str, peer: str, track: str, session: SessionId) -> str:
    return f"r/{_enc(room)}/t/{_enc(peer)}/{_enc(track)}/{session}"


@dataclass(frozen=True, slots=True)
class EntryKey:
    """A parsed registry key: a peer entry when ``track`` is None, else a track entry."""

    room: str
    peer: str
    track: str | None
    session: SessionId


class BadEntry(ValueError):
    """A registry key or value that does not follow the layout (dropped and counted)."""


def parse_key(key: str) -> EntryKey:
    parts = key.split("/")
    if len(parts) == 5 and parts[0] == "r" and parts[2] == "p":
        peer, track, session_s = unquote(parts[3]), None, parts[4]
    elif len(parts) == 6 and parts[0] == "r" and parts[2] == "t":
        peer, track, session_s = unquote(parts[3]), unquote(parts[4]), parts[5]
    else:
        raise BadEntry(f"unknown registry key {key!r}")
    if not session_s.isdigit():
        raise BadEntry(f"bad session in registry key {key!r}")
    return EntryKey(unquote(parts[1]), peer, track, SessionId(int(session_s)))


def encode_peer(info: PeerInfo) -> bytes:
    return json.dumps({"metadata": info.metadata, "extra_data": info.extra_data}).encode()


def encode_track(info: TrackInfo) -> bytes:
    return json.dumps({"kind": info.kind.value, "metadata": info.metadata, "screen": info.screen}).encode()


def _object(value: bytes) -> dict[str, object]:
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadEntry("registry value is not JSON") from exc
    if not isinstance(obj, dict):
        raise BadEntry("registry value is not a JSON object")
    return obj


def _opt_str(obj: dict[str, object], name: str) -> str | None:
    value = obj.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadEntry(f"registry field {name!r} must be a string or null")


def decode_peer(key: EntryKey, value: bytes) -> PeerInfo:
    obj = _object(value)
    return PeerInfo(key.peer, _opt_str(obj, "metadata"), _opt_str(obj, "extra_data"))


def decode_track(key: EntryKey, value: bytes) -> TrackInfo:
    assert key.track is not None  # callers dispatch on key.track first
    obj = _object(value)
    try:
        kind = TrackKind(obj.get("kind"))
    except ValueError as exc:
        raise BadEntry("registry track entry has an unknown kind") from exc
    return TrackInfo(key.peer, key.track, kind, _opt_str(obj, "metadata"), obj.get("screen") is True)
