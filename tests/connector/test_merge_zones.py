"""docs/connector.md's recipe for merging several zones' logs, run as written on two real zone logs
(SQLite): nothing lost, nothing twice, rooms and peers remapped by name."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from trackmesh.connector import events as ev
from trackmesh.connector import storage
from trackmesh.connector.ingest import Ingestor
from trackmesh.core.ids import SessionId, SessionIdGenerator

DOC = Path(__file__).resolve().parents[2] / "docs" / "connector.md"
T0 = 1_800_000_000.0


def zone_log(path: Path, zone: int, room: str) -> list[SessionId]:
    engine = storage.open_engine(f"sqlite:///{path}")
    storage.migrate(engine)
    ing = Ingestor(engine, node=zone << 8 | 9, destroy_after=60.0, hook_url_of=lambda app: None)
    ing.restore()
    node = zone << 8 | 2
    sessions = [SessionIdGenerator(node_id=node, worker=0).next() for _ in range(2)]
    batch: list[ev.SourceEvent] = []
    for i, sid in enumerate(sessions):
        bodies: tuple[ev.PeerEventBody, ...] = (
            ev.Connecting("127.0.0.1"), ev.Join(room, f"p{i}"), ev.RemoteTrackStarted("audio", ev.Kind.AUDIO),
            ev.Leave(room, f"p{i}"), ev.Disconnected(10, ev.DisconnectReason.USER_ACTION),
        )  # fmt: skip
        for j, body in enumerate(bodies):
            hook = ev.HookEvent(node, int(T0 * 1000) + j, ev.PeerEvent(sid, body))
            batch.append(ev.SourceEvent(f"evt_{node:x}_1_{i}{j}", "", hook))
    ing.ingest(batch, T0)
    engine.dispose()
    return sessions


def test_the_documented_merge_of_two_zones_keeps_every_row_once(tmp_path: Path) -> None:
    s1 = zone_log(tmp_path / "merged.db", 1, "shared-room")
    s2 = zone_log(tmp_path / "zone-2.db", 2, "shared-room")
    text = DOC.read_text()
    sql = re.search(r"```sql\n(.*?)```", text[text.index("## Several connectors"):], re.S)
    assert sql is not None
    db = sqlite3.connect(tmp_path / "merged.db")
    try:
        script = sql.group(1).replace("ATTACH 'zone-2.db'", f"ATTACH '{tmp_path / 'zone-2.db'}'")
        db.executescript(script)
        assert {r[0] for r in db.execute("SELECT id FROM sessions")} == set(s1 + s2)
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT source_id) FROM events").fetchone() == (20, 20)
        # The room had sessions in both zones: a row per zone.
        assert db.execute("SELECT app, room FROM rooms ORDER BY id").fetchall() == [("", "shared-room")] * 2
        # Every session's room membership survives, pointing at the merged room and peer rows.
        rows = db.execute("""SELECT ps.session, r.room, p.peer FROM peer_sessions ps
                             JOIN rooms r ON r.id = ps.room JOIN peers p ON p.id = ps.peer""").fetchall()
        assert sorted(rows) == sorted([(s, "shared-room", f"p{i}") for i, s in enumerate(s1)]
                                      + [(s, "shared-room", f"p{i}") for i, s in enumerate(s2)])
    finally:
        db.close()
