"""A cluster node's side of the connector: its workers' events to the zone's connector over zenoh.

The driver of :class:`~trackmesh.connector.relay.ReliableSender` (docs/connector.md, "Cluster"):

- every worker has an :class:`~trackmesh.connector.source.EventSource` (worker 0 in process; a
  child worker's events come over the worker pipe, as in standalone); the link moves their events
  into one sender per node, so the connector sees a node's events in the order they happened;
- a batch is put on ``tm/conn/<zone>/in/<node id>``; the connector commits it, then puts the ack
  on ``tm/conn/<zone>/ack/<node id>``; without an ack the batch is sent again every second (the
  connector may be restarting: nothing is lost, it deduplicates by event id);
- memory is bounded: past ``MAX_MEMORY`` events the queue spills to
  ``<data dir>/connector-spill-<node id>.jsonl``; at stop, what is not acknowledged is written
  there too, and the next run on the same data dir sends it first. The disk is used only once the
  zone is known to have a connector (its liveliness was seen in this run, or the previous run
  left events): a zone that runs without one keeps at most ``MAX_MEMORY`` events, in memory;
- at start the link queues a :class:`~trackmesh.connector.relay.NodeRestarted` marker (after
  what the previous run left): the connector closes the sessions that run left open.

Off the media path: the workers' sources never wait on zenoh, the link runs on the node's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

import zenoh

from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.connector.events import EventError, source_from_json
from trackmesh.connector.relay import (
    NodeRestarted,
    ReliableSender,
    SpillFile,
    decode_ack,
    encode_batch,
)
from trackmesh.connector.source import EventSource

log = logging.getLogger("trackmesh.connector")

CONNECTOR_ROOT = "tm/conn/"  # tm/conn/<zone>: liveliness of the zone's connector; /in/<node>, /ack/<node>
MAX_MEMORY = 10_000
MAX_SPILL_BYTES = 256 * 1024 * 1024
RESEND_AFTER = 1.0
STOP_FLUSH = 3.0  # at stop, how long to wait for the connector to acknowledge the last events


def in_key(zone: int, node: int) -> str:
    return f"{CONNECTOR_ROOT}{zone}/in/{node}"


def ack_key(zone: int, node: int) -> str:
    return f"{CONNECTOR_ROOT}{zone}/ack/{node}"


def live_key(zone: int) -> str:
    return f"{CONNECTOR_ROOT}{zone}"


class ConnectorLink:
    """One per cluster node (media or gateway), on the node's loop.

    A zone gateway has one too (``role="gateway"``), for its route events: its own spill file, and
    no restart marker (it opens no session a restart could leave open, and a media node may have
    the same node id: the marker would close that node's sessions)."""

    def __init__(self, session: zenoh.Session, node_id: int, zone: int, data_dir: str, role: str = "media") -> None:
        self.session = session
        self.node_id = node_id
        self.zone = zone
        self.boot = secrets.randbits(48)
        os.makedirs(data_dir, exist_ok=True)
        name = f"connector-spill-{node_id}.jsonl" if role == "media" else f"connector-spill-{role}-{node_id}.jsonl"
        self.spill = SpillFile(os.path.join(data_dir, name), MAX_SPILL_BYTES)
        left = self.spill.count
        # No disk until the zone is known to have a connector (see the module docstring).
        self.sender = ReliableSender(MAX_MEMORY, self.spill if left else None, RESEND_AFTER, window=1)
        if role == "media":
            self.sender.push(NodeRestarted(node_id, int(time.time() * 1000)))
        if left:
            log.info("sending the events the previous run left", extra={"fields": {"events": left}})
        self.sources: list[EventSource] = []
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._entities: list[Any] = []
        self._drop_logged = 0
        self.malformed = 0
        self.connector_alive = False  # the zone's connector's liveliness token is there

    def attach(self, workers: Sequence[Any]) -> None:
        """An event source per worker: in process, the worker's audit; a child process, its pipe."""
        wall_offset = time.time() - time.monotonic()
        for worker in workers:
            source = EventSource(self.node_id, secrets.randbits(48), wall_offset)
            source.on_ready = self._wake.set
            runtime = getattr(worker, "runtime", None)
            if runtime is None:
                worker.on_events = functools.partial(self._relayed, source)
            else:
                runtime.core.audit = source
            self.sources.append(source)

    def add_source(self, source: EventSource) -> None:
        source.on_ready = self._wake.set
        self.sources.append(source)

    def new_source(self) -> EventSource:
        """A source of this node's own (a zone gateway's route events: it is a ``RouteAudit``)."""
        source = EventSource(self.node_id, secrets.randbits(48), time.time() - time.monotonic())
        self.add_source(source)
        return source

    def _relayed(self, source: EventSource, batch: list[bytes]) -> None:
        for data in batch:
            try:
                source.push(source_from_json(data))
            except EventError:
                self.malformed += 1
                log.error("connector: a worker sent a malformed event; dropped")

    def start(self) -> None:
        self._entities = [
            self.session.declare_subscriber(ack_key(self.zone, self.node_id), self._on_ack),
            self.session.liveliness().declare_subscriber(live_key(self.zone), self._on_connector_live, history=True),
        ]
        self._task = asyncio.create_task(self._run(), name="connector-link")

    def _on_connector_live(self, sample: zenoh.Sample) -> None:  # a zenoh thread
        alive = sample.kind == zenoh.SampleKind.PUT
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._connector_seen, alive)

    def _connector_seen(self, alive: bool) -> None:
        if alive and not self.connector_alive:
            fields = {"zone": self.zone, "pending": self.sender.pending}
            log.info("the zone's connector is up", extra={"fields": fields})
        if alive:
            self.sender.spill = self.spill
        self.connector_alive = alive

    def _on_ack(self, sample: zenoh.Sample) -> None:  # a zenoh thread
        data = sample.payload.to_bytes()
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._ack, data)

    def _ack(self, data: bytes) -> None:
        try:
            boot, seq = decode_ack(data)
        except EventError:
            self.malformed += 1
            return
        if boot == self.boot:
            self.sender.handle_ack(seq)
            self._wake.set()

    def _collect(self) -> None:
        for source in self.sources:
            while batch := source.take():
                for event in batch:
                    self.sender.push(event)
                source.ack(batch)  # the sender (memory or spill file) owns them now
        if self.sender.dropped > self._drop_logged:
            log.error("events for the zone's connector dropped: queue full (memory, spill file or disk)",
                      extra={"fields": {"dropped": self.sender.dropped, "spill": self.spill.path}})
            self._drop_logged = self.sender.dropped

    def _transmit(self) -> None:
        now = time.monotonic()
        while (batch := self.sender.poll_transmit(now)) is not None:
            if self.session.is_closed():
                return
            try:
                self.session.put(in_key(self.zone, self.node_id), encode_batch(self.node_id, self.boot, batch))
            except Exception:
                log.exception("connector: cannot send events (resent in 1 s)")

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self._collect()
            self._transmit()
            deadline = self.sender.next_deadline()
            delay = RESEND_AFTER if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def stop(self) -> None:
        """After the workers stopped: their last events (Leave, Disconnected) go to the connector
        (up to ``STOP_FLUSH`` seconds, when it is up); what it has not acknowledged then stays in
        the spill file."""
        self._collect()
        self._wake.set()
        deadline = time.monotonic() + STOP_FLUSH
        while self.sender.pending and self.connector_alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for entity in self._entities:
            undeclare(entity)
        self._entities = []
        left = self.sender.pending
        if left and self.sender.spill is None:
            log.info("no connector was seen in this zone: the events not sent are dropped",
                        extra={"fields": {"events": left}})
        elif left:
            if self.sender.persist():
                log.warning("connector did not acknowledge every event; kept for the next run",
                            extra={"fields": {"events": left, "spill": self.spill.path}})
            else:
                log.error("connector did not acknowledge every event and the spill file refused them: lost",
                          extra={"fields": {"events": left, "spill": self.spill.path}})

    def metrics(self) -> dict[str, float]:
        s = self.sender
        return {
            "link_pending": float(s.pending),
            "link_batches_sent": float(s.sent),
            "link_batches_resent": float(s.resent),
            "link_batches_acked": float(s.acked),
            "link_spilled": float(s.spilled),
            "link_dropped": float(s.dropped + sum(src.dropped for src in self.sources)),
            "source_emitted": float(sum(src.emitted for src in self.sources)),
        }
