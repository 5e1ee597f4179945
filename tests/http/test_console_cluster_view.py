"""The console role's plain-data parts: the cluster view (members' reports, ages, stale and gone) and
the media nodes' console query parser. Bad input is counted and ignored, never raised."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from trackmesh.http.console.cluster_view import FORGET_AFTER, STALE_AFTER, ClusterView
from trackmesh.rpc import RpcError
from trackmesh.runtime.console_query import encode_results, parse_query


def report(zone: int, node: int, **extra: object) -> bytes:
    return json.dumps({"zone": zone, "node": node, "http": f"http://127.0.0.1:{3000 + node}", "cpu": 1.5,
                       "mem_mb": 80.0, "ready": True, "reason": "ok", **extra}).encode()  # fmt: skip


def test_zones_group_members_with_their_age_and_state() -> None:
    view = ClusterView()
    view.report("media", report(1, 2, sessions=3, capacity=10), 100.0)
    view.report("gateway", report(1, 1, routed=7), 100.0)
    view.report("connector", report(1, 4, inbox=0), 100.0)
    view.report("media", report(2, 2, sessions=0, capacity=5), 100.0)
    zones = view.zones(101.0)
    assert [z["zone"] for z in zones] == [1, 2]
    media = zones[0]["media"][0]
    assert (media["node"], media["sessions"], media["capacity"], media["age_s"]) == (2, 3, 10, 1.0)
    assert media["state"] == "up" and media["cpu"] == 1.5 and media["mem_mb"] == 80.0
    assert zones[0]["gateway"][0]["routed"] == 7 and zones[0]["connector"][0]["node"] == 4
    assert view.http_of("connector", 101.0) == [(1, "http://127.0.0.1:3004")]
    # Silent: stale (still listed, with its age); liveliness gone: gone; long silent: forgotten.
    assert view.zones(100.0 + STALE_AFTER + 1)[0]["media"][0]["state"] == "stale"
    assert view.http_of("connector", 100.0 + STALE_AFTER + 1) == []
    view.gone("gateway", 1, 1, 102.0)
    assert view.zones(102.0)[0]["gateway"][0]["state"] == "gone"
    view.removed("connector", 1, 4)
    assert view.zones(102.0)[0]["connector"] == []
    assert view.zones(100.0 + FORGET_AFTER + 1) == []


def test_reports_keep_known_fields_only_and_names_stay_data() -> None:
    view = ClusterView()
    view.report("media", report(1, 2, reason="<img src=x onerror=alert(1)>", secret="x", sessions=10**15), 0.0)
    node = view.zones(0.0)[0]["media"][0]
    assert node["reason"] == "<img src=x onerror=alert(1)>" and "secret" not in node and node["sessions"] is None


@given(st.binary(max_size=200) | st.builds(lambda o: json.dumps(o).encode(), st.dictionaries(
    st.sampled_from(["zone", "node", "http", "cpu", "x"]), st.one_of(st.integers(), st.text(max_size=5), st.none(),
                                                                     st.floats(allow_nan=False)))))  # fmt: skip
@example(b'{"zone": Infinity, "node": 1}')  # int(inf) raises OverflowError
@example(b'{"zone": 1e400, "node": -Infinity}')
def test_any_report_is_taken_or_counted_never_raised(data: bytes) -> None:
    view = ClusterView()
    view.report("media", data, 0.0)
    zones = view.zones(0.0)
    assert len(zones) + view.bad_reports == 1
    for z in zones:
        assert 0 <= z["zone"] < 1 << 24 and all(0 <= n["node"] < 256 for n in z["media"])


def test_deeply_nested_input_is_refused() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    view = ClusterView()
    view.report("media", deep, 0.0)
    assert view.bad_reports == 1
    try:
        parse_query(b'{"op": "rooms", "app": ' + b"[" * 2000 + b"]" * 2000 + b"}")
    except ValueError:
        pass
    else:
        raise AssertionError("accepted")


def test_unknown_roles_are_counted() -> None:
    view = ClusterView()
    view.report("router", report(1, 1), 0.0)
    assert view.bad_reports == 1 and view.zones(0.0) == []


def test_console_queries_parse_to_worker_calls() -> None:
    assert parse_query(b'{"op": "rooms", "app": ""}') == ("console.rooms", {"app": ""})
    assert parse_query(b'{"op": "kick", "app": "a", "session": 12}') == ("console.kick", {"app": "a", "session": "12"})
    assert parse_query(b'{"op": "end_room", "app": "a", "room": "r", "x": 1}') == (
        "console.end_room", {"app": "a", "room": "r"})
    assert parse_query(b'{"op": "mute", "app": "a", "session": "3", "track": "cam"}') == (
        "console.mute", {"app": "a", "session": "3", "track": "cam"})
    assert parse_query(b'{"op": "unmute", "app": "a", "session": "3", "track": "cam"}')[0] == "console.unmute"
    # Recording a room: the room's worker on the node (runtime/console_query.py), never "peers" from a query.
    assert parse_query(b'{"op": "record_start", "app": "a", "room": "r", "peers": ["x"]}') == (
        "record.start", {"app": "a", "room": "r"})
    assert parse_query(b'{"op": "record_stop", "app": "", "room": "r"}') == ("record.stop", {"app": "", "room": "r"})
    results = json.loads(encode_results([[{"session": "1"}], RpcError(504, "late")]))
    assert results == [{"ok": [{"session": "1"}]}, {"error": "late", "status": 504}]


@given(st.binary(max_size=5000))
def test_any_console_query_parses_or_raises_value_error(data: bytes) -> None:
    try:
        method, params = parse_query(data)
    except (ValueError, UnicodeDecodeError):
        return
    assert method in ("console.rooms", "console.kick", "console.end_room", "console.mute", "console.unmute",
                      "record.start", "record.stop", "node.recordings", "node.recording_chunk")
    assert set(params) <= {"app", "apps", "session", "room", "track", "path", "offset"}
    assert all(isinstance(v, str) for v in params.values())
