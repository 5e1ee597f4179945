"""The event log in SQL (SQLite and PostgreSQL): migrations, ingest, dedupe, restore, queries."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import column, func, insert, inspect, select, table

from trackmesh.connector import events as ev
from trackmesh.connector import storage
from trackmesh.connector.ingest import Ingestor
from trackmesh.connector.schema import U64, events, outbox, peer_sessions, peers, rooms, sessions

T0 = 1_800_000_000.0
S1 = (1 << 64) - 5  # session ids use all 64 bits


def peer(source: str, session: int, body: ev.PeerEventBody, app: str = "") -> ev.SourceEvent:
    return ev.SourceEvent(source, app, ev.HookEvent(1, 1_800_000_000_000, ev.PeerEvent(session, body)))


def make(url: str, hook: str | None = "http://127.0.0.1:9/hook", destroy_after: float = 120.0) -> Ingestor:
    engine = storage.open_engine(url)
    storage.migrate(engine)
    ing = Ingestor(engine, node=1, destroy_after=destroy_after, hook_url_of=lambda app: hook)
    ing.restore()
    return ing


def bodies(ing: Ingestor) -> list[dict[str, Any]]:
    with ing.engine.connect() as conn:
        return [json.loads(r.body) for r in conn.execute(select(outbox.c.body).order_by(outbox.c.id))]


def test_migrations_create_every_table_on_an_empty_database(db_url: str) -> None:
    engine = storage.open_engine(db_url)
    storage.migrate(engine)
    storage.migrate(engine)  # idempotent
    names = set(inspect(engine).get_table_names())
    assert {"rooms", "peers", "sessions", "peer_sessions", "events", "outbox", "alembic_version"} <= names


def test_migrations_upgrade_a_populated_atm0s_schema(db_url: str) -> None:
    engine = storage.open_engine(db_url)
    storage.migrate(engine, "0001")
    with engine.begin() as conn:
        rid = conn.execute(insert(rooms).values(app="", room="old", created_at=1, record=False)
                           .returning(rooms.c.id)).one().id
        conn.execute(insert(sessions).values(id=S1, app="", created_at=1))
        # The 0001 events table has no source_id/app columns yet: name only its own.
        old_events = table("events", column("node"), column("node_ts"), column("session", U64()),
                           column("created_at"), column("event"), column("meta"))
        conn.execute(insert(old_events).values(node=1, node_ts=1, session=S1, created_at=1, event="Join", meta="{}"))
    storage.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(select(rooms.c.room).where(rooms.c.id == rid)).scalar_one() == "old"
        row = conn.execute(select(events)).one()
        assert row.session == S1 and row.app == "" and row.source_id is None
    ing = Ingestor(engine, 1, 120.0, lambda app: None)
    ing.restore()
    assert ing.ingest([peer("e1", 7, ev.Join("old", "p"))], T0).stored == 1


def test_join_leave_fills_the_atm0s_tables_and_derives_room_events(db_url: str) -> None:
    ing = make(db_url)
    batch = [
        peer("e1", S1, ev.Connecting("127.0.0.1")),
        peer("e2", S1, ev.Connected(30, "127.0.0.1")),
        peer("e3", S1, ev.Join("r", "alice")),
        peer("e4", S1, ev.RemoteTrackStarted("audio_main", ev.Kind.AUDIO)),
    ]
    r = ing.ingest(batch, T0)
    assert (r.stored, r.duplicates) == (4, 0)
    bye = ev.Disconnected(5000, ev.DisconnectReason.USER_ACTION)
    r = ing.ingest([peer("e5", S1, ev.Leave("r", "alice")), peer("e6", S1, bye)], T0 + 5)
    assert r.stored == 2
    tags = [next(iter(next(iter(b["event"].values()))["event"])) for b in bodies(ing)]
    assert tags == ["Connecting", "Connected", "Join", "Started", "PeerJoined", "RemoteTrackStarted", "Leave",
                    "PeerLeaved", "AllPeersLeaved", "Disconnected"]
    with ing.engine.connect() as conn:
        s = conn.execute(select(sessions)).one()
        assert (s.id, s.ip, s.joined_at, s.leaved_at) == (S1, "127.0.0.1", int(T0 * 1000), int((T0 + 5) * 1000))
        ps = conn.execute(select(peer_sessions)).one()
        assert ps.session == S1 and ps.leaved_at == int((T0 + 5) * 1000)
        assert conn.execute(select(peers.c.peer)).scalar_one() == "alice"
        room = conn.execute(select(rooms)).one()
        assert room.last_peer_leaved_at == int((T0 + 5) * 1000) and room.destroyed_at is None
        keys = [k for (k,) in conn.execute(select(outbox.c.order_key).order_by(outbox.c.id))]
    assert keys[:2] == [json.dumps(["session", "", str(S1)])] * 2
    assert set(keys[2:]) == {json.dumps(["room", "", "r"])}
    # Stopped after destroy_after of emptiness, once.
    assert ing.tick(T0 + 100).deliveries == []
    stop = ing.tick(T0 + 125)
    assert [json.loads(d.body)["event"]["Room"]["event"] for d in stop.deliveries] == [{"Stopped": {}}]
    assert ing.tick(T0 + 500).deliveries == []
    with ing.engine.connect() as conn:
        assert conn.execute(select(rooms.c.destroyed_at)).scalar_one() == int((T0 + 125) * 1000)


def test_recording_and_compose_events_are_logged_and_posted_in_the_rooms_order(db_url: str) -> None:
    ing = make(db_url)

    def node_event(source: str, event: ev.RecordEvent | ev.ComposeEvent) -> ev.SourceEvent:
        return ev.SourceEvent(source, "acme", ev.HookEvent(1, 1_800_000_000_000, event))

    batch = [
        peer("e1", S1, ev.Join("r", "alice"), app="acme"),
        node_event("e2", ev.RecordEvent("r", ev.RecordStarted("acme/r/s1"))),
        node_event("e3", ev.RecordEvent("r", ev.RecordPeerJoined("alice", "acme/r/s1/alice"))),
        node_event("e4", ev.ComposeEvent("r", "j1", ev.ComposeStarted("acme/r/s1"))),
        node_event("e5", ev.ComposeEvent("r", "j1", ev.ComposeFailed("acme/r/s1", "no recorded files"))),
    ]
    r = ing.ingest(batch, T0)
    assert (r.stored, r.rejected) == (5, 0)
    posted = [next(iter(b["event"])) + "." + next(iter(next(iter(b["event"].values()))["event"]))
              for b in bodies(ing)]  # fmt: skip
    assert posted == ["Peer.Join", "Room.Started", "Room.PeerJoined", "Record.Started", "Record.PeerJoined",
                      "Compose.Started", "Compose.Failed"]  # fmt: skip
    with ing.engine.connect() as conn:
        assert conn.execute(select(rooms.c.record)).scalar_one() is True
        keys = {k for (k,) in conn.execute(select(outbox.c.order_key))}
    assert keys == {json.dumps(["room", "acme", "r"])}
    with ing.engine.connect() as conn:
        logged = storage.list_events(conn, "acme", 0, None, None, storage.Page(0, 100))
    assert [(e["event"], json.loads(e["meta"])) for e in logged] == [
        ("Record.Started", {"path": "acme/r/s1"}),
        ("Record.PeerJoined", {"peer": "alice", "path": "acme/r/s1/alice"}),
        ("Compose.Started", {"path": "acme/r/s1"}),
        ("Compose.Failed", {"path": "acme/r/s1", "error": "no recorded files"}),
    ]
    assert ing.ingest(batch, T0 + 1).duplicates == 5


def test_with_protobuf_bodies_recording_events_are_logged_not_posted(db_url: str) -> None:
    """hook.proto has no Record/Compose layout: such events are in the log, and the room's other
    events are still posted (in protobuf)."""
    engine = storage.open_engine(db_url)
    storage.migrate(engine)
    ing = Ingestor(engine, 1, 120.0, lambda app: "http://127.0.0.1:9/hook", hook_body="protobuf")
    ing.restore()
    started = ev.SourceEvent("e2", "", ev.HookEvent(1, 5, ev.RecordEvent("r", ev.RecordStarted("default/r/s1"))))
    r = ing.ingest([peer("e1", S1, ev.Join("r", "alice")), started], T0)
    assert r.stored == 2 and [d.id for d in r.deliveries] == ["e1", "e1.1", "e1.2"]
    with engine.connect() as conn:
        assert [e["event"] for e in storage.list_events(conn, "", 0, None, None, storage.Page(0, 10))] == [
            "Record.Started"
        ]


def test_duplicates_are_stored_once(db_url: str) -> None:
    ing = make(db_url)
    join = peer("dup-1", 5, ev.Join("r", "p"))
    assert ing.ingest([join], T0).stored == 1
    r = ing.ingest([join, join], T0 + 1)
    assert (r.stored, r.duplicates, r.deliveries) == (0, 2, [])
    with ing.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 1


def test_restart_restores_live_rooms(db_url: str) -> None:
    ing = make(db_url, destroy_after=60.0)
    ing.ingest([peer("a", 1, ev.Join("r", "p")), peer("b", 2, ev.Join("r", "q")), peer("c", 1, ev.Leave("r", "p"))],
               T0)
    again = Ingestor(ing.engine, 1, 60.0, lambda app: "http://127.0.0.1:9/hook")
    again.restore()
    assert again.tracker.members("", "r") == {("q", 2)}
    r = again.ingest([peer("d", 2, ev.Leave("r", "q"))], T0 + 10)
    assert [next(iter(json.loads(d.body)["event"]["Room"]["event"])) for d in r.deliveries[1:]] == [
        "PeerLeaved", "AllPeersLeaved"]
    third = Ingestor(ing.engine, 1, 60.0, lambda app: None)
    third.restore()
    assert third.next_deadline() == T0 + 70


def test_log_queries_are_per_app(db_url: str) -> None:
    ing = make(db_url)
    ing.ingest([peer("a1", 1, ev.Join("r1", "p"), app="a"), peer("b1", 2, ev.Join("r2", "q"), app="b")], T0)
    page = storage.Page(0, 10)
    with ing.engine.connect() as conn:
        assert [r["room"] for r in storage.list_rooms(conn, "a", page)] == ["r1"]
        assert [r["room"] for r in storage.list_rooms(conn, "b", page)] == ["r2"]
        got = storage.list_peers(conn, "a", None, page)
        assert [(p["peer"], [s["session"] for s in p["sessions"]]) for p in got] == [("p", ["1"])]
        assert [s["id"] for s in storage.list_sessions(conn, "b", page)] == ["2"]
        assert [e["event"] for e in storage.list_events(conn, "a", 1, None, None, page)] == ["Join"]
        assert storage.list_events(conn, "a", 2, None, None, page) == []
        assert storage.list_events(conn, "a", None, int(T0 * 1000) + 1, None, page) == []


def test_orphaned_sessions_of_a_restarted_node_are_closed_once(db_url: str) -> None:
    from trackmesh.core.ids import SessionIdGenerator

    mine = SessionIdGenerator(node_id=7, worker=0).next()
    other = SessionIdGenerator(node_id=8, worker=0).next()
    ing = make(db_url)
    ing.ingest([peer("a", mine, ev.Join("r", "p")), peer("b", other, ev.Join("r", "q"))], T0)
    closing = ing.orphans(7, int((T0 + 60) * 1000))
    assert [e.name for e in closing] == ["Leave", "Disconnected"]
    gone = closing[1].hook.event
    assert isinstance(gone, ev.PeerEvent) and gone.session_id == mine
    assert gone.event == ev.Disconnected(60_000, ev.DisconnectReason.NODE_FAILURE)
    r = ing.ingest(closing, T0 + 60)
    assert r.stored == 2
    assert ing.tracker.members("", "r") == {("q", other)}
    assert ing.orphans(7, int((T0 + 61) * 1000)) == []
    assert ing.ingest(closing, T0 + 61).duplicates == 2


def test_orphans_end_the_tracks_still_published_then_leave_then_disconnect(db_url: str) -> None:
    from trackmesh.core.ids import SessionIdGenerator

    mine = SessionIdGenerator(node_id=7, worker=1).next()
    ing = make(db_url)
    ing.ingest([peer("j", mine, ev.Join("r", "p")),
                peer("a", mine, ev.RemoteTrackStarted("audio", ev.Kind.AUDIO)),
                peer("v", mine, ev.RemoteTrackStarted("video", ev.Kind.VIDEO)),
                peer("s", mine, ev.RemoteTrackStarted("screen", ev.Kind.VIDEO)),
                peer("e", mine, ev.RemoteTrackEnded("screen", ev.Kind.VIDEO))], T0)  # fmt: skip
    assert ing.open_nodes() == {7}
    closing = ing.orphans(7, int((T0 + 5) * 1000))
    bodies = [e.hook.event.event for e in closing if isinstance(e.hook.event, ev.PeerEvent)]
    assert bodies == [ev.RemoteTrackEnded("audio", ev.Kind.AUDIO), ev.RemoteTrackEnded("video", ev.Kind.VIDEO),
                      ev.Leave("r", "p"), ev.Disconnected(5_000, ev.DisconnectReason.NODE_FAILURE)]  # fmt: skip
    assert ing.ingest(closing, T0 + 5).stored == 4
    assert ing.open_nodes() == set()


def test_orphans_of_a_lost_node_spare_sessions_its_new_run_opened_since(db_url: str) -> None:
    from trackmesh.core.ids import SessionIdGenerator

    ids = SessionIdGenerator(node_id=7, worker=0)
    old, new = ids.next(), ids.next()
    ing = make(db_url)
    ing.ingest([peer("o", old, ev.Join("r", "p"))], T0)
    ing.ingest([peer("n", new, ev.Join("r", "q"))], T0 + 10)  # the new run, reporting before the loss is handled
    closing = ing.orphans(7, int((T0 + 5) * 1000), opened_before_ms=int((T0 + 5) * 1000))
    assert {e.session_id for e in closing} == {old}
    assert [e.name for e in closing] == ["Leave", "Disconnected"]
