"""The HookEvent catalogue: atm0s's JSON shape, round trips, and the parser on any input."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.connector import events as ev


def test_join_has_atm0s_shape() -> None:
    hook = ev.HookEvent(1, 1733500000000, ev.PeerEvent(123, ev.Join("r", "p")))
    assert json.loads(ev.to_json(hook)) == {
        "node": 1,
        "ts": 1733500000000,
        "event": {"Peer": {"session_id": 123, "event": {"Join": {"room": "r", "peer": "p"}}}},
    }


def test_enums_are_integers_and_room_events_are_tagged() -> None:
    hook = ev.HookEvent(2, 5, ev.PeerEvent(9, ev.Disconnected(1500, ev.DisconnectReason.TIMEOUT)))
    assert json.loads(ev.to_json(hook))["event"]["Peer"]["event"] == {
        "Disconnected": {"duration_ms": 1500, "reason": 1}
    }
    room = ev.HookEvent(2, 6, ev.RoomEvent("r", ev.Started()))
    assert json.loads(ev.to_json(room)) == {
        "node": 2, "ts": 6, "event": {"Room": {"room": "r", "event": {"Started": {}}}}
    }
    route = ev.HookEvent(2, 7, ev.PeerEvent(9, ev.RouteError(30, None, ev.RouteErrorType.POOL_EMPTY)))
    assert json.loads(ev.to_json(route))["event"]["Peer"]["event"] == {
        "RouteError": {"after_ms": 30, "dest_node": None, "error": 0}
    }


def test_recording_and_compose_events_are_tagged_like_atm0s() -> None:
    started = ev.HookEvent(3, 8, ev.RecordEvent("r", ev.RecordStarted("default/r/s1")))
    assert json.loads(ev.to_json(started)) == {
        "node": 3, "ts": 8, "event": {"Record": {"room": "r", "event": {"Started": {"path": "default/r/s1"}}}}
    }
    joined = ev.RecordEvent("r", ev.RecordPeerJoined("alice", "default/r/s1/alice"))
    assert json.loads(ev.to_json(ev.HookEvent(3, 9, joined)))["event"]["Record"]["event"] == {
        "PeerJoined": {"peer": "alice", "path": "default/r/s1/alice"}
    }
    done = ev.ComposeEvent("r", "job1", ev.ComposeCompleted("default/r/s1", "default/r/s1/composite.mp4", 62000))
    completed = {"path": "default/r/s1", "media_uri": "default/r/s1/composite.mp4", "duration_ms": 62000}
    assert json.loads(ev.to_json(ev.HookEvent(3, 10, done)))["event"] == {
        "Compose": {"room": "r", "job_id": "job1", "event": {"Completed": completed}}
    }
    names = [ev.SourceEvent("e", "", ev.HookEvent(3, 8, e)).name for e in (started.event, joined, done)]
    assert names == ["Record.Started", "Record.PeerJoined", "Compose.Completed"]
    assert ev.SourceEvent("e", "", ev.HookEvent(3, 8, joined)).session_id is None


_text = st.text(max_size=20)
_u32 = st.integers(0, (1 << 32) - 1)
_peer_bodies = st.one_of(
    st.builds(ev.RouteBegin, _text),
    st.builds(ev.RouteSuccess, _u32, _u32),
    st.builds(ev.RouteError, _u32, st.none() | _u32, st.sampled_from(ev.RouteErrorType)),
    st.builds(ev.Connecting, _text),
    st.builds(ev.Connected, _u32, _text),
    st.builds(ev.ConnectError, _u32, st.sampled_from(ev.ConnectErrorType)),
    st.builds(ev.Reconnect, _text),
    st.builds(ev.Reconnected, _u32, _text),
    st.builds(ev.Disconnected, _u32, st.sampled_from(ev.DisconnectReason)),
    st.builds(ev.Join, _text, _text),
    st.builds(ev.Leave, _text, _text),
    st.builds(ev.RemoteTrackStarted, _text, st.sampled_from(ev.Kind)),
    st.builds(ev.RemoteTrackEnded, _text, st.sampled_from(ev.Kind)),
    st.builds(ev.LocalTrack, _text, st.sampled_from(ev.Kind)),
    st.builds(ev.LocalTrackAttach, _text, _text, _text),
    st.builds(ev.LocalTrackDetach, _text, _text, _text),
    st.builds(ev.RemoteTrackMuted, _text, st.booleans()),
    st.builds(ev.LocalTrackLayer, _text, _u32, _u32),
)
_room_bodies = st.one_of(
    st.builds(ev.Started),
    st.builds(ev.Stopped),
    st.builds(ev.PeerJoined, _text),
    st.builds(ev.PeerLeaved, _text),
    st.builds(ev.AllPeersLeaved),
)
_record_bodies = st.one_of(st.builds(ev.RecordStarted, _text), st.builds(ev.RecordPeerJoined, _text, _text))
_compose_bodies = st.one_of(
    st.builds(ev.ComposeStarted, _text),
    st.builds(ev.ComposeFailed, _text, _text),
    st.builds(ev.ComposeCompleted, _text, _text, _u32),
)
hooks = st.builds(
    ev.HookEvent,
    _u32,
    st.integers(0, (1 << 64) - 1),
    st.one_of(
        st.builds(ev.PeerEvent, st.integers(0, (1 << 64) - 1), _peer_bodies),
        st.builds(ev.RoomEvent, _text, _room_bodies),
        st.builds(ev.RecordEvent, _text, _record_bodies),
        st.builds(ev.ComposeEvent, _text, _text, _compose_bodies),
    ),
)


@given(hooks)
def test_every_event_round_trips(hook: ev.HookEvent) -> None:
    assert ev.from_json(ev.to_json(hook)) == hook
    source = ev.SourceEvent("evt_1", "app", hook)
    assert ev.source_from_json(ev.source_to_json(source)) == source


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_parser_rejects_any_json_with_event_error_only(obj: object) -> None:
    with contextlib.suppress(ev.EventError):
        ev.from_dict(obj)


@given(hooks, st.data())
def test_parser_on_mutated_events(hook: ev.HookEvent, data: st.DataObject) -> None:
    """A valid body with one field replaced by any JSON value parses or raises EventError."""
    obj = ev.to_dict(hook)
    inner = next(iter(obj["event"].values()))
    variant = next(iter(inner["event"].values()))
    target = data.draw(st.sampled_from([obj, inner, variant]))
    if target:
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(_json)
    with contextlib.suppress(ev.EventError):
        ev.from_dict(obj)


@given(st.binary(max_size=200))
def test_source_parser_on_bytes(data: bytes) -> None:
    with contextlib.suppress(ev.EventError):
        ev.source_from_json(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"node": 1, "ts": 1, "event": {"Peer": {"session_id": -1, "event": {"Join": {"room": "r", "peer": "p"}}}}},
         "session_id"),
        ({"node": 1, "ts": 1, "event": {"Peer": {"session_id": 1, "event": {"Nope": {}}}}}, "unknown variant"),
        ({"node": 1, "ts": 1, "event": {"Peer": {"session_id": 1, "event": {"Join": {"room": 1, "peer": "p"}}}}},
         "Join.room"),
        ({"node": 1, "ts": 1, "event": {"Room": {"room": "r", "event": {"Started": {}}, "x": 1}, "Peer": {}}},
         "exactly one"),
        ({"node": 1, "ts": 1, "event": {"Peer": {"session_id": 1, "event": {
            "Disconnected": {"duration_ms": 1, "reason": 99}}}}}, "DisconnectReason"),
    ],
)
def test_bad_bodies_name_the_field(body: object, message: str) -> None:
    with pytest.raises(ev.EventError, match=message):
        ev.from_dict(body)


def test_ids_are_unique_per_boot() -> None:
    a, b = ev.EventIdSource(1, 7), ev.EventIdSource(1, 8)
    ids = {a.next() for _ in range(1000)} | {b.next() for _ in range(1000)}
    assert len(ids) == 2000
    assert all(i.startswith("evt_1_") for i in ids)
