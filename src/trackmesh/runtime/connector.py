"""The connector inside a standalone node (the driver of trackmesh.connector's service): the
service, the app list and the workers' event sources.

Worker 0 runs on the node's loop, so its :class:`~trackmesh.connector.source.EventSource` hands batches to the
service directly; a batch leaves the source's queue only when the service has committed it.
Media workers in child processes (``--workers`` > 1) send their events over the worker pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from trackmesh.config import NodeConfig
from trackmesh.connector.apps import App, AppRegistry, sync_forever
from trackmesh.connector.events import EventError, source_from_json
from trackmesh.connector.outbox import RetryPolicy
from trackmesh.connector.service import AppHooks, ConnectorService
from trackmesh.connector.signing import derived_secret
from trackmesh.connector.source import EventSource
from trackmesh.core.audit import RouteFailure
from trackmesh.core.ids import MAX_WORKER, SessionIdGenerator

T = TypeVar("T")


class ConnectorHost(Protocol):
    """What the connector needs of its node (runtime/node.py's Node): the config and the workers
    (in-process ones have a ``runtime``; child-process ones an ``on_events`` hook)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def workers(self) -> Sequence[Any]: ...

log = logging.getLogger("trackmesh.connector")


class EmbeddedConnector:
    def __init__(self, node: ConnectorHost) -> None:
        cfg = node.config
        self.node = node
        root = App("", cfg.secret, cfg.hook_url, cfg.hook_secret or derived_secret(cfg.secret, ""))
        self.apps = AppRegistry(root)
        if cfg.apps:
            self.apps.load_file(cfg.apps)
        self.service = ConnectorService(
            cfg.connector_db,
            cfg.node_id,
            self._hooks_of,
            RetryPolicy(retry_for=cfg.hook_retry_for),
            destroy_after=cfg.destroy_room_after,
            hook_body=cfg.hook_body,
        )
        self.sources: list[EventSource] = []
        # The gateway part of a standalone node (its HTTP layer places requests on workers): a
        # RouteError has no worker session, so it gets an id of its own, from a worker index no
        # media worker has (--workers is at most 64).
        self.gateway = EventSource(cfg.node_id, secrets.randbits(48), time.time() - time.monotonic())
        self._gateway_ids = SessionIdGenerator(cfg.node_id, MAX_WORKER, secrets.randbits(24))
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        #: More metrics (the connector role's link counters, runtime/connector_node.py).
        self.extra_metrics: Callable[[], dict[str, float]] | None = None
        #: Told when the app list changed (the connector role publishes it to its zone: cluster_apps.py).
        self.on_apps_changed: list[Callable[[], None]] = []

    def _hooks_of(self, app_id: str) -> AppHooks | None:
        app = self.apps.get(app_id)
        return AppHooks(app.hook_url, app.hook_secret) if app is not None else None

    async def start(self) -> None:
        await self.service.start()
        # Sessions this node's previous run left open (kill -9, crash): closed now, before any new one.
        ing = self.service.ingestor
        assert ing is not None
        orphans = await self.service.run_db(
            functools.partial(ing.orphans, self.node.config.node_id, int(time.time() * 1000)))
        if orphans:
            await self.service.submit(orphans)
            log.warning("closed sessions left open by this node's previous run",
                        extra={"fields": {"events": len(orphans)}})
        wall_offset = time.time() - time.monotonic()
        self.gateway.on_ready = self._wake.set
        self.sources.append(self.gateway)
        for worker in self.node.workers:
            runtime = getattr(worker, "runtime", None)
            source = EventSource(self.node.config.node_id, secrets.randbits(48), wall_offset)
            if runtime is None:
                # A child process: its own EventSource makes the events, the worker pipe brings
                # them here (runtime/handles.py), this one only queues them.
                worker.on_events = functools.partial(self._relayed, source)
                source.on_ready = self._wake.set
                self.sources.append(source)
                continue
            source.on_ready = self._wake.set
            runtime.core.audit = source
            self.sources.append(source)
        self._tasks.append(asyncio.create_task(self._pump(), name="connector-pump"))
        # The media worker froze what was alive when it started (runtime/worker.py), before the
        # connector was imported: SQLAlchemy, httpx and the engine came later and stayed in the
        # collector's reach, so every full collection scanned them again - a 40-100 ms pause on
        # this loop (worker 0's media loop too) that freed nothing and delayed webhooks in flight
        # (docs/benchmarks.md, connector latency). Freeze again now that they exist.
        gc.collect()
        gc.freeze()
        await self._hand_app_token_keys()
        if self.node.config.multi_tenancy_sync:
            self._tasks.append(asyncio.create_task(
                sync_forever(self.apps, self.node.config.multi_tenancy_sync, self._apps_changed),
                name="multi-tenancy-sync"))

    def _apps_changed(self) -> None:
        self.service.reload_keys()
        for callback in self.on_apps_changed:
            callback()
        task = asyncio.create_task(self._hand_app_token_keys(), name="app-token-keys")
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _hand_app_token_keys(self) -> None:
        """Every media worker checks SDK join tokens itself (runtime/sdk_worker.py): it gets the
        apps' token keys (never their secrets), now and whenever the app list changes."""
        keys = self.apps.token_keys(self.node.config.atm0s_compatible_tokens)
        for worker in self.node.workers:
            try:
                await worker.call("worker.app_token_keys", {"keys": keys})
            except Exception:
                log.exception("cannot hand the apps' token keys to a media worker",
                              extra={"fields": {"worker": getattr(worker, "index", "?")}})

    def route_failed(self, now: float, remote_ip: str, app: str, started: float, status: int, message: str) -> None:
        """RouteBegin then RouteError for a request no worker took (http/requests.py ``route``): 504 a
        worker that did not answer (Timeout), a full node (PoolEmpty), else MediaError."""
        if status == 504:
            error, dest = RouteFailure.TIMEOUT, self.node.config.node_id
        elif "full" in message:
            error, dest = RouteFailure.POOL_EMPTY, None
        else:
            error, dest = RouteFailure.MEDIA_ERROR, self.node.config.node_id
        self.gateway.route_failed(now, self._gateway_ids.next(), remote_ip, app, started, error, dest)

    def _relayed(self, source: EventSource, batch: list[bytes]) -> None:
        for data in batch:
            try:
                source.push(source_from_json(data))
            except EventError:
                log.error("connector: a worker sent a malformed event; dropped")

    async def _pump(self) -> None:
        while True:
            self._wake.clear()
            for source in self.sources:
                while batch := source.take():
                    try:
                        await self.service.submit(batch)
                    except Exception:
                        source.give_back(batch)
                        log.exception("connector: cannot store events; retrying in 1 s")
                        await asyncio.sleep(1.0)
                        break
                    source.ack(batch)
            if self._stopping:
                return
            await self._wake.wait()

    async def stop(self) -> None:
        """After the workers stopped: their last events (Leave, Disconnected) are stored first."""
        self._stopping = True
        self._wake.set()
        for task in self._tasks[1:]:
            task.cancel()
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tasks[0], 10.0)
        await self.service.stop()

    async def read_log(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` on a connection to the event log, in the service's database thread (http.api.ConnectorApi)."""

        def run() -> T:
            with self.service.engine.connect() as c:
                return fn(c)

        return await self.service.run_db(run)

    def metrics(self) -> dict[str, float]:
        out = self.service.metrics()
        out["source_queued"] = float(sum(s.queued for s in self.sources))
        out["source_dropped"] = float(sum(s.dropped for s in self.sources))
        out["source_emitted"] = float(sum(s.emitted for s in self.sources))
        if self.extra_metrics is not None:
            out.update(self.extra_metrics())
        return out
