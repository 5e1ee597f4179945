"""The connector's event catalogue: atm0s 0.2 ``HookEvent`` as typed records, and its JSON.

Every record is one variant of atm0s's protobuf oneofs (``proto/cluster/connector.proto`` in
atm0s 0.2). atm0s posts the serde form of its prost types, so the JSON is externally tagged:
``{"node": 1, "ts": 1733500000000, "event": {"Peer": {"session_id": 123, "event": {"Join":
{"room": "r", "peer": "p"}}}}}``. Protobuf enums are integers there (prost keeps them as
``i32``), and so they are here: a receiver written for atm0s parses our bodies unchanged.

What atm0s does not have travels beside the body, never inside it: the event id (unique at the
source, the ``webhook-id`` of every delivery) and the app (multi-tenancy) are fields of
:class:`SourceEvent`, not of the JSON.

Track-level events users asked atm0s for (#341: mute/unmute, layer changes) are extra variants
with names atm0s never used, so an atm0s receiver that does not know them ignores or rejects
just those.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, fields
from typing import Any, ClassVar


class EventError(ValueError):
    """A body or record that is not a valid HookEvent; the message says what is wrong."""


class Kind(enum.IntEnum):
    """``shared.Kind`` of atm0s."""

    AUDIO = 0
    VIDEO = 1


class RouteErrorType(enum.IntEnum):
    POOL_EMPTY = 0
    TIMEOUT = 1
    GATEWAY_ERROR = 2
    MEDIA_ERROR = 3


class ConnectErrorType(enum.IntEnum):
    INVALID_SDP = 0
    TIMEOUT = 1


class DisconnectReason(enum.IntEnum):
    USER_ACTION = 0
    TIMEOUT = 1
    NODE_SHUTDOWN = 2
    KICK_BY_API = 3
    # Ours: the connector closes the sessions of a node whose liveliness is gone.
    NODE_FAILURE = 4


# ---- peer events (media nodes and gateways) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteBegin:
    TAG: ClassVar[str] = "RouteBegin"
    remote_ip: str


@dataclass(frozen=True, slots=True)
class RouteSuccess:
    TAG: ClassVar[str] = "RouteSuccess"
    after_ms: int
    dest_node: int


@dataclass(frozen=True, slots=True)
class RouteError:
    TAG: ClassVar[str] = "RouteError"
    after_ms: int
    dest_node: int | None
    error: RouteErrorType


@dataclass(frozen=True, slots=True)
class Connecting:
    TAG: ClassVar[str] = "Connecting"
    remote_ip: str


@dataclass(frozen=True, slots=True)
class Connected:
    TAG: ClassVar[str] = "Connected"
    after_ms: int
    remote_ip: str


@dataclass(frozen=True, slots=True)
class ConnectError:
    TAG: ClassVar[str] = "ConnectError"
    after_ms: int
    error: ConnectErrorType


@dataclass(frozen=True, slots=True)
class Reconnect:
    TAG: ClassVar[str] = "Reconnect"
    remote_ip: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    TAG: ClassVar[str] = "Reconnected"
    after_ms: int
    remote_ip: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    TAG: ClassVar[str] = "Disconnected"
    duration_ms: int
    reason: DisconnectReason


@dataclass(frozen=True, slots=True)
class Join:
    TAG: ClassVar[str] = "Join"
    room: str
    peer: str


@dataclass(frozen=True, slots=True)
class Leave:
    TAG: ClassVar[str] = "Leave"
    room: str
    peer: str


@dataclass(frozen=True, slots=True)
class RemoteTrackStarted:
    TAG: ClassVar[str] = "RemoteTrackStarted"
    track: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class RemoteTrackEnded:
    TAG: ClassVar[str] = "RemoteTrackEnded"
    track: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class LocalTrack:
    TAG: ClassVar[str] = "LocalTrack"
    # atm0s numbers local tracks; ours are the client's names ("audio_0"), so a string.
    track: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class LocalTrackAttach:
    TAG: ClassVar[str] = "LocalTrackAttach"
    track: str
    remote_peer: str
    remote_track: str


@dataclass(frozen=True, slots=True)
class LocalTrackDetach:
    TAG: ClassVar[str] = "LocalTrackDetach"
    track: str
    remote_peer: str
    remote_track: str


@dataclass(frozen=True, slots=True)
class RemoteTrackMuted:
    """Ours (atm0s #341): a published track was muted (``muted``) or unmuted."""

    TAG: ClassVar[str] = "RemoteTrackMuted"
    track: str
    muted: bool


@dataclass(frozen=True, slots=True)
class LocalTrackLayer:
    """Ours (atm0s #341): the simulcast/SVC layer a subscriber receives changed."""

    TAG: ClassVar[str] = "LocalTrackLayer"
    track: str
    spatial: int
    temporal: int


PeerEventBody = (
    RouteBegin
    | RouteSuccess
    | RouteError
    | Connecting
    | Connected
    | ConnectError
    | Reconnect
    | Reconnected
    | Disconnected
    | Join
    | Leave
    | RemoteTrackStarted
    | RemoteTrackEnded
    | LocalTrack
    | LocalTrackAttach
    | LocalTrackDetach
    | RemoteTrackMuted
    | LocalTrackLayer
)


@dataclass(frozen=True, slots=True)
class PeerEvent:
    session_id: int
    event: PeerEventBody


# ---- room events (derived by the connector, rooms.py) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    TAG: ClassVar[str] = "Started"


@dataclass(frozen=True, slots=True)
class Stopped:
    TAG: ClassVar[str] = "Stopped"


@dataclass(frozen=True, slots=True)
class PeerJoined:
    TAG: ClassVar[str] = "PeerJoined"
    peer: str


@dataclass(frozen=True, slots=True)
class PeerLeaved:
    TAG: ClassVar[str] = "PeerLeaved"
    peer: str


@dataclass(frozen=True, slots=True)
class AllPeersLeaved:
    TAG: ClassVar[str] = "AllPeersLeaved"


RoomEventBody = Started | Stopped | PeerJoined | PeerLeaved | AllPeersLeaved


@dataclass(frozen=True, slots=True)
class RoomEvent:
    room: str
    event: RoomEventBody


# ---- recording events (the media node that records, runtime/recording.py) --------------------
# atm0s's ``RecordEvent``: ``Started {path}`` the first time a room records (per recording
# session here), ``PeerJoined {peer, path}`` the first time one of a peer's tracks is recorded in
# it. ``path``: the folder under --record-dir (and under the S3 prefix), as /api/record/list shows
# it. As for room events, the app travels beside the body (SourceEvent.app), not inside it.


@dataclass(frozen=True, slots=True)
class RecordStarted:
    TAG: ClassVar[str] = "Started"
    path: str


@dataclass(frozen=True, slots=True)
class RecordPeerJoined:
    TAG: ClassVar[str] = "PeerJoined"
    peer: str
    path: str


RecordEventBody = RecordStarted | RecordPeerJoined


@dataclass(frozen=True, slots=True)
class RecordEvent:
    room: str
    event: RecordEventBody


# ---- compose events (a node's compose job, recording/jobs.py) ---------------------------------
# atm0s's ``ComposeEvent``: Started, Failed {error}, Completed. Ours name the job and the session
# folder it composes; Completed carries the output (``media_uri``: its path under --record-dir)
# and ``duration_ms``, as atm0s's compose summary does.


@dataclass(frozen=True, slots=True)
class ComposeStarted:
    TAG: ClassVar[str] = "Started"
    path: str


@dataclass(frozen=True, slots=True)
class ComposeFailed:
    TAG: ClassVar[str] = "Failed"
    path: str
    error: str


@dataclass(frozen=True, slots=True)
class ComposeCompleted:
    TAG: ClassVar[str] = "Completed"
    path: str
    media_uri: str
    duration_ms: int


ComposeEventBody = ComposeStarted | ComposeFailed | ComposeCompleted


@dataclass(frozen=True, slots=True)
class ComposeEvent:
    room: str
    job_id: str
    event: ComposeEventBody


@dataclass(frozen=True, slots=True)
class HookEvent:
    """atm0s's envelope: the emitting node, its wall clock in ms, and the event."""

    node: int
    ts: int
    event: PeerEvent | RoomEvent | RecordEvent | ComposeEvent


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """A HookEvent with what travels beside it: its id, unique at the source (and the
    ``webhook-id`` of every delivery of it), and the app it belongs to ("" = the single-tenant
    default app)."""

    id: str
    app: str
    hook: HookEvent

    @property
    def session_id(self) -> int | None:
        return self.hook.event.session_id if isinstance(self.hook.event, PeerEvent) else None

    @property
    def name(self) -> str:
        """The variant's tag (``Join``, ``Started``...): the ``event`` column of the log;
        ``Record.Started``, ``Compose.Completed``... for recording and compose events."""
        event = self.hook.event
        if isinstance(event, RecordEvent):
            return "Record." + event.event.TAG
        if isinstance(event, ComposeEvent):
            return "Compose." + event.event.TAG
        return event.event.TAG


_PEER_TYPES: dict[str, type[Any]] = {
    t.TAG: t
    for t in (
        RouteBegin,
        RouteSuccess,
        RouteError,
        Connecting,
        Connected,
        ConnectError,
        Reconnect,
        Reconnected,
        Disconnected,
        Join,
        Leave,
        RemoteTrackStarted,
        RemoteTrackEnded,
        LocalTrack,
        LocalTrackAttach,
        LocalTrackDetach,
        RemoteTrackMuted,
        LocalTrackLayer,
    )
}
_ROOM_TYPES: dict[str, type[Any]] = {t.TAG: t for t in (Started, Stopped, PeerJoined, PeerLeaved, AllPeersLeaved)}
_RECORD_TYPES: dict[str, type[Any]] = {t.TAG: t for t in (RecordStarted, RecordPeerJoined)}
_COMPOSE_TYPES: dict[str, type[Any]] = {t.TAG: t for t in (ComposeStarted, ComposeFailed, ComposeCompleted)}
_ENUMS: dict[str, type[enum.IntEnum]] = {}
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def _variant_dict(body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(body):
        value = getattr(body, f.name)
        out[f.name] = int(value) if isinstance(value, enum.IntEnum) else value
    return out


def to_dict(hook: HookEvent) -> dict[str, Any]:
    ev = hook.event
    inner: dict[str, Any]
    if isinstance(ev, PeerEvent):
        inner = {"Peer": {"session_id": ev.session_id, "event": {ev.event.TAG: _variant_dict(ev.event)}}}
    elif isinstance(ev, RoomEvent):
        inner = {"Room": {"room": ev.room, "event": {ev.event.TAG: _variant_dict(ev.event)}}}
    elif isinstance(ev, RecordEvent):
        inner = {"Record": {"room": ev.room, "event": {ev.event.TAG: _variant_dict(ev.event)}}}
    else:
        inner = {"Compose": {"room": ev.room, "job_id": ev.job_id, "event": {ev.event.TAG: _variant_dict(ev.event)}}}
    return {"node": hook.node, "ts": hook.ts, "event": inner}


def to_json(hook: HookEvent) -> bytes:
    """The webhook body: compact JSON, keys in declaration order (the bytes are stored once and
    posted unchanged on every retry, so their exact form only has to be stable per event)."""
    return json.dumps(to_dict(hook), separators=(",", ":"), ensure_ascii=False).encode()


def _uint(value: Any, what: str, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise EventError(f"{what}: expected an integer 0..{high}, got {value!r}")
    return value


def _one_key(obj: Any, what: str) -> tuple[str, Any]:
    if not isinstance(obj, dict) or len(obj) != 1:
        raise EventError(f"{what}: expected an object with exactly one variant key")
    ((key, value),) = obj.items()
    return key, value


def _variant(types: dict[str, type[Any]], obj: Any, what: str) -> Any:
    tag, payload = _one_key(obj, what)
    cls = types.get(tag)
    if cls is None:
        raise EventError(f"{what}: unknown variant {tag!r}")
    if not isinstance(payload, dict):
        raise EventError(f"{what}.{tag}: expected an object")
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        hint = str(f.type)
        value = payload.get(f.name)
        where = f"{what}.{tag}.{f.name}"
        if hint == "str":
            if not isinstance(value, str):
                raise EventError(f"{where}: expected a string")
        elif hint == "bool":
            if not isinstance(value, bool):
                raise EventError(f"{where}: expected a boolean")
        elif hint == "int":
            value = _uint(value, where, _U32)
        elif hint == "int | None":
            value = None if value is None else _uint(value, where, _U32)
        else:
            enum_type = _enum_types()[hint]
            try:
                value = enum_type(_uint(value, where, _U32))
            except ValueError:
                raise EventError(f"{where}: {value!r} is not a {hint}") from None
        kwargs[f.name] = value
    return cls(**kwargs)


def _enum_types() -> dict[str, type[enum.IntEnum]]:
    if not _ENUMS:
        for t in (Kind, RouteErrorType, ConnectErrorType, DisconnectReason):
            _ENUMS[t.__name__] = t
    return _ENUMS


def from_dict(obj: Any) -> HookEvent:
    """Parse atm0s's JSON form; raises EventError on anything else."""
    if not isinstance(obj, dict):
        raise EventError("expected a JSON object")
    node = _uint(obj.get("node"), "node", _U32)
    ts = _uint(obj.get("ts"), "ts", _U64)
    tag, payload = _one_key(obj.get("event"), "event")
    if not isinstance(payload, dict):
        raise EventError(f"event.{tag}: expected an object")
    event: PeerEvent | RoomEvent | RecordEvent | ComposeEvent
    if tag == "Peer":
        session = _uint(payload.get("session_id"), "event.Peer.session_id", _U64)
        event = PeerEvent(session, _variant(_PEER_TYPES, payload.get("event"), "event.Peer.event"))
    elif tag == "Room":
        room = payload.get("room")
        if not isinstance(room, str):
            raise EventError("event.Room.room: expected a string")
        event = RoomEvent(room, _variant(_ROOM_TYPES, payload.get("event"), "event.Room.event"))
    elif tag == "Record":
        room = payload.get("room")
        if not isinstance(room, str):
            raise EventError("event.Record.room: expected a string")
        event = RecordEvent(room, _variant(_RECORD_TYPES, payload.get("event"), "event.Record.event"))
    elif tag == "Compose":
        room, job = payload.get("room"), payload.get("job_id")
        if not isinstance(room, str):
            raise EventError("event.Compose.room: expected a string")
        if not isinstance(job, str):
            raise EventError("event.Compose.job_id: expected a string")
        event = ComposeEvent(room, job, _variant(_COMPOSE_TYPES, payload.get("event"), "event.Compose.event"))
    else:
        raise EventError(f"event: unknown variant {tag!r}")
    return HookEvent(node, ts, event)


def from_json(data: bytes | str) -> HookEvent:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    return from_dict(obj)


def meta_json(hook: HookEvent) -> str:
    """The ``meta`` column of atm0s's event table: the variant's fields as JSON."""
    return json.dumps(_variant_dict(hook.event.event), separators=(",", ":"), ensure_ascii=False)


# ---- source envelope (node -> connector, at least once) ---------------------------------------


def source_to_json(event: SourceEvent) -> bytes:
    return json.dumps(
        {"id": event.id, "app": event.app, "hook": to_dict(event.hook)}, separators=(",", ":"), ensure_ascii=False
    ).encode()


def source_from_json(data: bytes | str) -> SourceEvent:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError("expected a JSON object")
    ev_id, app = obj.get("id"), obj.get("app")
    if not isinstance(ev_id, str) or not 0 < len(ev_id) <= 128:
        raise EventError("id: expected a string of 1..128 characters")
    if not isinstance(app, str) or len(app) > 128:
        raise EventError("app: expected a string of at most 128 characters")
    return SourceEvent(ev_id, app, from_dict(obj.get("hook")))


class EventIdSource:
    """Ids unique at the source: ``evt_<node>_<boot>_<seq>``. ``boot`` is random per process
    start (the driver draws it), so a restarted node never repeats an id of its previous run."""

    __slots__ = ("_prefix", "_seq")

    def __init__(self, node: int, boot: int) -> None:
        self._prefix = f"evt_{node:x}_{boot:012x}_"
        self._seq = 0

    def next(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq:x}"
