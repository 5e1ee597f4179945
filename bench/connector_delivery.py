"""Connector benchmark: 10,000 events through a webhook receiver that fails 30 % of requests.

    .venv/bin/python bench/connector_delivery.py [--events 10000] [--rooms 100] [--fail 0.3]

Runs the real connector service (SQLite file in a temp dir, WAL) and a real HTTP receiver on
127.0.0.1 that verifies every delivery with the ``standardwebhooks`` package and answers 500 to
a random ``--fail`` share of requests. Reports: all delivered or not, per-room order kept or not,
duplicates (same id re-delivered after a lost answer), events per second sustained, and with a
healthy receiver (``--fail 0``) the delivery latency p50/p99 from the event's time at the source
to its acceptance, split in source -> outbox row (hand-over and ingest) and outbox row ->
acceptance (waiting behind the room's earlier webhooks, and the POST). Also the CPU cost of
recording one event at the media node (``EventSource.emit``). Default retry policy (1 s, x4,
+-20 %), as shipped.

``--receiver process`` runs the receiver in a process of its own (as a real one is), so its
threads neither share the connector's GIL nor count in its CPU; ``thread`` (the default, as the
first figures were taken) keeps it in this process. ``--no-freeze`` skips the ``gc.freeze()``
the standalone node does once its connector has started.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import random
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select
from tests.connector.receiver import HookReceiver, Received

from trackmesh.connector.schema import outbox
from trackmesh.connector.service import AppHooks, ConnectorService
from trackmesh.connector.signing import derived_secret
from trackmesh.connector.source import EventSource
from trackmesh.core.ids import SessionId
from trackmesh.core.model import TrackKind

SECRET = derived_secret("bench-app-secret")


def one_session(source: EventSource, session: int, rooms: int) -> None:
    """A session joining a room, publishing, leaving: 10 events."""
    now = time.monotonic()
    sid = SessionId(session)
    if True:
        room = f"room{session % rooms}"
        source.connecting(now, sid, "127.0.0.1")
        source.joined(now, sid, room, f"peer{session}")
        source.connected(now, sid, "")
        source.track_started(now, sid, "audio_main", TrackKind.AUDIO)
        source.track_started(now, sid, "video_main", TrackKind.VIDEO)
        source.local_track(now, sid, "audio_0", TrackKind.AUDIO)
        source.track_ended(now, sid, "audio_main", TrackKind.AUDIO)
        source.track_ended(now, sid, "video_main", TrackKind.VIDEO)
        source.left(now, sid, room, f"peer{session}")
        source.disconnected(now, sid, "deleted by the client")


def traffic(n_events: int, rooms: int, source: EventSource) -> None:
    session = 0
    while source.emitted < n_events:
        session += 1
        one_session(source, session, rooms)


def emit_cost(n: int = 100_000) -> float:
    source = EventSource(1, 7, time.time() - time.monotonic(), max_queued=n + 10)
    t0 = time.process_time()
    for i in range(n // 2):
        source.joined(1.0, SessionId(i), "room", "peer")
        source.left(1.0, SessionId(i), "room", "peer")
    return (time.process_time() - t0) / n * 1e6


def _receiver_process(conn: Connection, fail: float, seed: int) -> None:
    """``--receiver process``: the receiver in a process of its own, as a real one is; it sends
    its URL, then on request what it received."""
    rng = random.Random(seed)
    rx = HookReceiver(SECRET, answer=lambda n, msg_id: 500 if rng.random() < fail else 200).start()
    conn.send(rx.url)
    conn.recv()
    with rx.lock:
        conn.send((list(rx.requests), rx.unverified))
    rx.stop()


class _RemoteReceiver:
    """The parts of HookReceiver the benchmark reads, from a receiver in another process."""

    def __init__(self, fail: float, seed: int) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_receiver_process, args=(child, fail, seed), daemon=True)
        self._proc.start()
        self.url: str = self._conn.recv()
        self.requests: list[Received] = []
        self.unverified = 0

    def collect(self) -> None:
        self._conn.send("done")
        self.requests, self.unverified = self._conn.recv()
        self._proc.join(5)

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def stop(self) -> None:
        pass


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    rx: HookReceiver | _RemoteReceiver
    if args.receiver == "process":
        rx = _RemoteReceiver(args.fail, args.seed)
    else:
        rx = HookReceiver(SECRET, answer=lambda n, msg_id: 500 if rng.random() < args.fail else 200).start()
    tmp = tempfile.mkdtemp(prefix="trackmesh-bench-")
    svc = ConnectorService(f"sqlite:///{tmp}/c.db", 1, lambda app: AppHooks(rx.url, SECRET), destroy_after=3600)
    await svc.start()
    if args.freeze:
        # As the standalone node does once its connector has started (runtime/connector.py).
        gc.collect()
        gc.freeze()
    source = EventSource(1, 7, time.time() - time.monotonic(), max_queued=args.events + 100)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    if args.rate > 0:
        # Paced: a session (10 events) every 10/rate s, handed over every 10 ms like the embedded pump.
        session = 0
        while source.emitted < args.events:
            due = t0 + session * 10.0 / args.rate
            while time.monotonic() >= due and source.emitted < args.events:
                session += 1
                one_session(source, session, args.rooms)
                due = t0 + session * 10.0 / args.rate
            while batch := source.take(512):
                await svc.submit(batch)
            await asyncio.sleep(0.01)
    else:
        traffic(args.events, args.rooms, source)
        while batch := source.take(512):
            await svc.submit(batch)
    stored_s = time.monotonic() - t0
    while svc.outbox.queued:
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    if isinstance(rx, _RemoteReceiver):
        rx.collect()
    # Order per key: first acceptance of each id in queue order.
    with svc.engine.connect() as conn:
        rows = list(conn.execute(select(outbox.c.msg_id, outbox.c.order_key, outbox.c.created_at)
                                 .order_by(outbox.c.id)))
    queued = [(r.msg_id, r.order_key) for r in rows]
    stored_at = {r.msg_id: r.created_at for r in rows}
    first: list[str] = []
    seen: set[str] = set()
    latencies: list[float] = []
    accepted = rx.accepted()
    for r in accepted:
        if r.msg_id not in seen:
            seen.add(r.msg_id)
            first.append(r.msg_id)
    import json

    # The latency split in two: source -> outbox row committed (the hand-over and the ingest),
    # and outbox row -> accepted by the receiver (waiting behind the room's earlier webhooks,
    # and the POST itself).
    to_outbox: list[float] = []
    to_receiver: list[float] = []
    for r in accepted:
        ts = json.loads(r.body)["ts"] / 1000.0
        latencies.append(r.at - ts)
        to_outbox.append(stored_at[r.msg_id] - ts)
        to_receiver.append(r.at - stored_at[r.msg_id])
    key_of = dict(queued)
    total = len(queued)
    order_ok = all(
        [m for m in first if key_of[m] == key] == [m for m, k in queued if k == key] for key in set(key_of.values())
    )
    latencies.sort()
    to_outbox.sort()
    to_receiver.sort()
    await svc.stop()
    rx.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "events_from_source": args.events,
        "webhooks_queued": total,
        "delivered": len(seen),
        "all_delivered": seen == set(key_of),
        "per_room_order_kept": order_ok,
        "requests": len(rx.requests),
        "failed_requests": len(rx.requests) - len(accepted),
        "duplicates": len(accepted) - len(seen),
        "unverified": rx.unverified,
        "ingest_s": round(stored_s, 2),
        "elapsed_s": round(elapsed, 1),
        "webhooks_per_s": round(total / elapsed, 1),
        "connector_cpu_s": round(cpu, 1),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "latency_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "source_to_outbox_p50_p99_ms": _p50_p99(to_outbox),
        "outbox_to_receiver_p50_p99_ms": _p50_p99(to_receiver),
    }


def _p50_p99(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return round(1000 * values[len(values) // 2], 1), round(1000 * values[int(len(values) * 0.99)], 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--rooms", type=int, default=100)
    p.add_argument("--fail", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--receiver", choices=("process", "thread"), default="thread",
                   help="the receiver in threads of this process (default, as the first figures: its CPU and GIL "
                        "shares count against the connector) or in its own process, as a real one is")
    p.add_argument("--no-freeze", dest="freeze", action="store_false",
                   help="do not gc.freeze() after start (the node before this was fixed)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second from the source (0 = all at once)")
    args = p.parse_args()
    print(f"emit cost at the media node: {emit_cost():.2f} us CPU per event")
    for key, value in asyncio.run(run(args)).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
