"""The zone's app list over the cluster (multi-tenancy in a cluster, docs/connector.md).

- The zone's connector (:class:`AppListPublisher`) answers queries on ``tm/apps/<zone>`` with its
  sealed app list (connector/app_list.py) and puts it there at start and whenever the list
  changes (``--multi-tenancy-sync``).
- Media nodes (:class:`AppListFollower`) subscribe to that key, ask for it at start, when the
  zone connector's liveliness appears (a connector that starts after them: its put may precede
  our subscription's reaching it) and every ``REFRESH_S`` (a put missed while the link was down),
  and keep the newest list by its ``issued`` time. Each change is handed to ``on_change`` on the
  node's loop: the node's :class:`~trackmesh.connector.apps.AppRegistry` is replaced and its
  workers get the apps' token keys, so a tenant's token verifies on every member and its rooms
  are that app's (registry.room_key).
- A zone without a connector keeps the single-tenant app only. A connector that leaves does not
  take the list with it: members keep the last one they had (tokens already handed out stay
  valid), and a restarted connector's list replaces it.

zenoh callbacks run on zenoh threads: they only decode and post to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import zenoh

from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.config import NodeConfig
from trackmesh.connector.app_list import AppListError, open_app_list, seal_app_list
from trackmesh.connector.apps import App, AppRegistry

from .connector_link import live_key

log = logging.getLogger("trackmesh.connector")

APPS_ROOT = "tm/apps/"  # tm/apps/<zone>: the zone connector's sealed app list
REFRESH_S = 30.0
QUERY_TIMEOUT_S = 2.0
ASK_NEW_CONNECTOR = 5  # queries (1 s apart) to a connector that just appeared, until it answers


def apps_key(zone: int) -> str:
    return f"{APPS_ROOT}{zone}"


class AppListPublisher:
    """The connector's side: the sealed list on ``tm/apps/<zone>``, by query and by put."""

    def __init__(self, session: zenoh.Session, zone: int, secret: str, apps: AppRegistry) -> None:
        self.key = apps_key(zone)
        self._session = session
        self._secret = secret
        self._apps = apps
        self._sealed = b""
        self.reseal()
        self._queryable = session.declare_queryable(self.key, self._on_query)

    def _tenants(self) -> list[App]:
        return [a for a in self._apps.all() if a.app_id != ""]  # the root app is each node's own --secret

    def reseal(self) -> None:
        self._sealed = seal_app_list(self._secret, self.key, self._tenants(), int(time.time() * 1000))

    def publish(self) -> None:
        """The list changed (or the connector just started): every member hears it now."""
        self.reseal()
        try:
            self._session.put(self.key, self._sealed)
        except Exception:
            log.exception("cannot publish the app list to the cluster")

    def _on_query(self, query: zenoh.Query) -> None:  # a zenoh thread
        try:
            query.reply(self.key, self._sealed)
        except Exception:
            log.exception("cannot answer an app list query")
        finally:
            with contextlib.suppress(Exception):
                query.drop()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        undeclare(self._queryable)


class AppListFollower:
    """A member's side: the newest sealed list of its zone, into ``on_change(apps)`` on the loop."""

    def __init__(
        self,
        session: zenoh.Session,
        zone: int,
        secret: str,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[list[App]], Any],
    ) -> None:
        self.key = apps_key(zone)
        self._session = session
        self._secret = secret
        self._loop = loop
        self._on_change = on_change
        self.issued = -1  # the issued time of the list in use (-1: none yet)
        self.counters = {"app_lists": 0, "app_list_rejected": 0}
        self._subscriber = session.declare_subscriber(self.key, self._on_sample)
        self._live = session.liveliness().declare_subscriber(live_key(zone), self._on_connector_live)
        self._task: asyncio.Task[None] | None = None
        self._asks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever(), name="app-list-refresh")

    async def query_once(self) -> None:
        session, key = self._session, self.key
        try:
            replies = await self._loop.run_in_executor(
                None, lambda: list(session.get(key, timeout=QUERY_TIMEOUT_S)))  # fmt: skip
        except Exception as exc:
            log.warning("app list query failed", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return
        for reply in replies:
            if reply.ok is not None:
                self._offer(reply.ok.payload.to_bytes())

    async def _refresh_forever(self) -> None:
        while True:
            await self.query_once()
            await asyncio.sleep(REFRESH_S)

    def _on_connector_live(self, sample: zenoh.Sample) -> None:  # a zenoh thread
        if sample.kind == zenoh.SampleKind.PUT:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._ask_new_connector)

    def _ask_new_connector(self) -> None:
        task = asyncio.create_task(self._ask_until_answered(), name="app-list-new-connector")
        self._asks.add(task)
        task.add_done_callback(self._asks.discard)

    async def _ask_until_answered(self) -> None:
        """A connector just appeared: ask until it has answered with a list (its queryable may
        reach us a moment after its liveliness)."""
        before = self.issued
        for _ in range(ASK_NEW_CONNECTOR):
            await self.query_once()
            if self.issued != before:
                return
            await asyncio.sleep(1.0)

    def _on_sample(self, sample: zenoh.Sample) -> None:  # a zenoh thread
        data = sample.payload.to_bytes()
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._offer, data)

    def _offer(self, data: bytes) -> None:
        try:
            issued, apps = open_app_list(self._secret, self.key, data)
        except AppListError as exc:
            self.counters["app_list_rejected"] += 1
            log.error("app list from the cluster refused, keeping the previous one",
                      extra={"fields": {"error": str(exc)}})  # fmt: skip
            return
        if issued <= self.issued:
            return  # the one in use is as new (a query's answer and a put crossed)
        self.issued = issued
        self.counters["app_lists"] += 1
        log.info("app list from the zone's connector", extra={"fields": {"apps": len(apps)}})
        self._on_change(apps)

    def close(self) -> None:
        undeclare(self._subscriber)
        undeclare(self._live)
        if self._task is not None:
            self._task.cancel()
        for task in self._asks:
            task.cancel()


class AppListTaker(Protocol):
    """A member that takes the zone's app list (runtime/node.py's Node)."""

    @property
    def config(self) -> NodeConfig: ...

    async def apply_cluster_apps(self, apps: list[App]) -> None: ...


async def follow_zone_apps(node: AppListTaker, session: zenoh.Session) -> AppListFollower:
    """Follow the zone connector's app list on ``node``: asked once now (so a tenant's token
    verifies as soon as the node is ready, when the connector is up), then kept current."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_change(apps: list[App]) -> None:
        task = asyncio.create_task(node.apply_cluster_apps(apps), name="cluster-apps")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    cfg = node.config
    follower = AppListFollower(session, cfg.zone, cfg.secret, loop, on_change)
    await follower.query_once()
    await asyncio.gather(*tasks)
    follower.start()
    return follower
