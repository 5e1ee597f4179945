"""``trackmesh connector``: the zone's connector as a cluster member (docs/connector.md, "Cluster").

It joins the cluster like any member (zenoh peer or router client, scouting off, links
authenticated with the cluster secret), owns the event log (``--connector-db``), delivers the
webhooks and serves the log API, exactly as standalone's embedded connector does
(:class:`~trackmesh.runtime.connector.EmbeddedConnector`, which it runs without workers).

- Events: the zone's nodes put batches on ``tm/conn/<zone>/in/<node id>``
  (runtime/connector_link.py). Batches are stored one at a time, in arrival order (a node sends
  its next batch only after the ack of the previous one, so a node's events are stored in the
  order they happened); the ack goes to ``tm/conn/<zone>/ack/<node id>`` after the commit.
  Duplicates (resends after a lost ack, after a restart of this process) are skipped by event id.
- Node failure: it follows the media nodes' liveliness (``tm/node/<zone>/*``). When a node's is
  gone, the sessions of that node the log still has open are closed (RemoteTrackEnded, Leave,
  Disconnected with reason NodeFailure, and the room events they cause). At start it does the
  same for every node with open sessions whose liveliness is not there. A node that restarts
  sends a marker first, and what its previous run left open is closed then.
- Liveliness ``tm/conn/<zone>``: one connector per zone; a second one refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

import zenoh

from trackmesh.cluster.membership import NODE_ROOT, http_url, member_config, node_index
from trackmesh.cluster.topology import links_wanted, open_member
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.config import NodeConfig
from trackmesh.connector.events import EventError, SourceEvent
from trackmesh.connector.relay import NodeRestarted, WireBatch, decode_batch, encode_ack

from .cluster_apps import AppListPublisher
from .cluster_node import PEER_WAIT
from .connector_link import CONNECTOR_ROOT, ack_key, live_key
from .console_query import STATUS_ROOT, CpuMeter, StatusReporter, status_report
from .node import Node, StartupError

log = logging.getLogger("trackmesh.connector")

SWEEP_AFTER = 3.0  # at start, how long the cluster may take to show every live node before the sweep


class ConnectorNode(Node):
    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.zenoh: ZenohNode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entities: list[Any] = []
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._queued: set[tuple[int, int, int]] = set()  # (node, boot, seq) waiting in the inbox
        self._tasks: list[asyncio.Task[None]] = []
        self.status: StatusReporter | None = None
        self.apps_publisher: AppListPublisher | None = None
        self.counters = {"link_batches": 0, "link_malformed": 0, "link_bad_items": 0, "nodes_failed": 0,
                         "sessions_closed_for_nodes": 0}  # fmt: skip

    @property
    def has_media(self) -> bool:
        return False

    # ---- start ----------------------------------------------------------------------------

    async def _start_workers(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        cfg = self.config
        mcfg = member_config(cfg, 0)
        try:
            self.zenoh = zn = await loop.run_in_executor(None, open_member, mcfg)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the cluster session: {exc}") from None
        try:
            deadline = time.monotonic() + PEER_WAIT
            wanted = links_wanted(mcfg)
            while zn.links() < wanted and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if mcfg.seeds and not zn.links():
                log.warning("no cluster seed answers; starting anyway (zenoh keeps retrying)",
                            extra={"fields": {"seeds": ",".join(mcfg.seeds)}})  # fmt: skip
            key = live_key(cfg.zone)
            session = zn.session
            replies = await loop.run_in_executor(None, lambda: list(session.liveliness().get(key, timeout=1.0)))
            if any(r.ok is not None for r in replies):
                raise StartupError(f"--zone: zone {cfg.zone} already has a connector (liveliness {key} is alive)")
        except BaseException:
            await self.after_stop()
            raise

    async def _start_connector(self) -> None:
        try:
            await super()._start_connector()
        except StartupError:
            await self.after_stop()  # the cluster session opened by _start_workers
            raise
        zn = self.zenoh
        assert zn is not None and self.connector is not None
        zone = self.config.zone
        session = zn.session
        # Multi-tenancy in a cluster: the zone's members take their app list from here (cluster_apps.py);
        # answering before our liveliness appears, which members take as the cue to ask.
        try:
            self.apps_publisher = AppListPublisher(session, zone, self.config.secret, self.connector.apps)
        except Exception as exc:
            await self.connector.stop()
            await self.after_stop()
            raise StartupError(f"--cluster-port: cannot publish the app list to the zone: {exc}") from None
        self.apps_publisher.publish()
        self.connector.on_apps_changed.append(self.apps_publisher.publish)
        try:
            self._entities = [
                session.declare_subscriber(f"{CONNECTOR_ROOT}{zone}/in/*", self._on_batch),
                session.liveliness().declare_subscriber(f"{NODE_ROOT}{zone}/*", self._on_node_live),
                session.liveliness().declare_token(live_key(zone)),
            ]
        except Exception as exc:
            await self.connector.stop()
            await self.after_stop()
            raise StartupError(f"--cluster-port: cannot subscribe to the zone's events: {exc}") from None
        self.connector.extra_metrics = self.link_metrics
        self._cpu = CpuMeter()
        self.status = StatusReporter(session, f"{STATUS_ROOT}connector/{zone}/{node_index(self.config)}",
                                     self.status_report)  # read by the console role (runtime/console_query.py)
        self._tasks = [asyncio.create_task(self._consume(), name="connector-inbox"),
                       asyncio.create_task(self._sweep(), name="connector-sweep")]  # fmt: skip
        log.info("connector joined the cluster", extra={"fields": {"zone": zone, "links": zn.links()}})

    # ---- zenoh callbacks (zenoh threads) ----------------------------------------------------

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _on_batch(self, sample: zenoh.Sample) -> None:
        self._post(self._enqueue_batch, sample.payload.to_bytes())

    def _on_node_live(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            return
        idx = str(sample.key_expr).rpartition("/")[2]
        if idx.isdigit() and int(idx) < 256:
            # When it was lost: sessions the log opened later are a new run's (a quick restart).
            gone = ((self.config.zone << 8) | int(idx), int(time.time() * 1000))
            self._post(self._inbox.put_nowait, ("gone", gone))

    # ---- the inbox: one item at a time, in arrival order --------------------------------------

    def _enqueue_batch(self, data: bytes) -> None:
        try:
            batch = decode_batch(data)
        except EventError as exc:
            self.counters["link_malformed"] += 1
            if self.counters["link_malformed"] <= 10:
                log.error("connector: malformed batch dropped", extra={"fields": {"error": str(exc)}})
            return
        key = (batch.node, batch.boot, batch.seq)
        if key in self._queued:
            return  # a resend of a batch still waiting here
        self._queued.add(key)
        self._inbox.put_nowait(("batch", batch))

    async def _consume(self) -> None:
        while True:
            kind, item = await self._inbox.get()
            while True:
                try:
                    if kind == "batch":
                        await self._store(item)
                    else:
                        node, lost_ms = item
                        await self.close_node(node, "its liveliness is gone", lost_ms, opened_before_ms=lost_ms)
                    break
                except Exception:
                    # The database refuses (PostgreSQL restarting, say): no ack, the node resends.
                    log.exception("connector: cannot store events; retrying in 1 s")
                    await asyncio.sleep(1.0)

    async def _store(self, batch: WireBatch) -> None:
        connector = self.connector
        assert connector is not None
        self.counters["link_batches"] += 1
        self.counters["link_bad_items"] += batch.bad
        if batch.bad:
            log.error("connector: malformed events in a batch dropped", extra={"fields": {
                "node": batch.node, "bad": batch.bad}})
        events: list[SourceEvent] = []
        for item in batch.items:
            if isinstance(item, NodeRestarted):
                if events:
                    await connector.service.submit(events)
                    events = []
                await self.close_node(item.node, "it restarted", item.ts)
            else:
                events.append(item)
        if events:
            await connector.service.submit(events)
        self._queued.discard((batch.node, batch.boot, batch.seq))
        zn = self.zenoh
        if zn is not None and not zn.session.is_closed():
            zn.session.put(ack_key(self.config.zone, batch.node), encode_ack(batch.boot, batch.seq))

    async def close_node(
        self, node: int, why: str, ts_ms: int | None = None, opened_before_ms: int | None = None
    ) -> int:
        """Close the sessions of ``node`` the log still has open (NodeFailure), those it opened
        before ``opened_before_ms`` if given. Returns how many events that took."""
        connector = self.connector
        assert connector is not None
        ing = connector.service.ingestor
        assert ing is not None
        ts = ts_ms if ts_ms is not None else int(time.time() * 1000)
        orphans = await connector.service.run_db(functools.partial(ing.orphans, node, ts, opened_before_ms))
        if not orphans:
            return 0
        await connector.service.submit(orphans)
        sessions = sum(1 for e in orphans if e.name == "Disconnected")
        self.counters["nodes_failed"] += 1
        self.counters["sessions_closed_for_nodes"] += sessions
        log.warning("closed the sessions of a node: " + why, extra={"fields": {
            "node": node, "sessions": sessions, "events": len(orphans)}})
        return len(orphans)

    async def _sweep(self) -> None:
        """At start: nodes of this zone with open sessions in the log and no liveliness (they died
        while no connector ran) get their sessions closed."""
        await asyncio.sleep(SWEEP_AFTER)
        zn, connector = self.zenoh, self.connector
        if zn is None or connector is None or connector.service.ingestor is None:
            return
        zone = self.config.zone
        session = zn.session
        try:
            replies = await asyncio.get_running_loop().run_in_executor(
                None, lambda: list(session.liveliness().get(f"{NODE_ROOT}{zone}/*", timeout=2.0)))
            alive = {(zone << 8) | int(str(r.ok.key_expr).rpartition("/")[2]) for r in replies if r.ok is not None}
            open_nodes = await connector.service.run_db(connector.service.ingestor.open_nodes)
        except Exception:
            log.exception("connector: start-up sweep of failed nodes failed")
            return
        swept_at = int(time.time() * 1000)
        for node in sorted(open_nodes - alive):
            if node >> 8 == zone:
                self._inbox.put_nowait(("gone", (node, swept_at)))

    # ---- HTTP, stop ---------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        zn = self.zenoh
        if zn is None or self.connector is None:
            return False, "not started"
        if zn.config.seeds and not zn.links():
            return False, f"not connected to any cluster seed ({','.join(zn.config.seeds)}); zenoh keeps retrying"
        return True, "ok"

    def link_metrics(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.counters.items()}, "link_inbox": float(self._inbox.qsize())}

    async def on_stop_requested(self) -> None:
        # Stop taking batches (the nodes keep them and resend to the next run) before the database closes.
        for entity in self._entities[:2]:
            undeclare(entity)
        del self._entities[:2]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status_report(self) -> dict[str, Any]:
        ready, reason = self.readiness()
        return status_report("connector", self.config.zone, node_index(self.config), http_url(self.config), ready,
                             reason, self._cpu.percent(), inbox=self._inbox.qsize(),
                             batches=self.counters["link_batches"])  # fmt: skip

    async def after_stop(self) -> None:
        status, self.status = self.status, None
        if status is not None:
            await status.close()
        publisher, self.apps_publisher = self.apps_publisher, None
        if publisher is not None:
            publisher.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for entity in self._entities:
            undeclare(entity)
        self._entities = []
        zn, self.zenoh = self.zenoh, None
        if zn is not None:
            zn.close()
