"""``NodeApi``: what the node's HTTP routers need from the node that serves them.

The runtime's ``Node`` (``runtime/node.py``) satisfies it and composes the app
(``Node.create_app``); the routers only ever see this Protocol, so ``http/`` never imports
``runtime/``: the composition root imports its parts, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection

from trackmesh.config import NodeConfig
from trackmesh.connector.apps import AppRegistry
from trackmesh.rpc import WorkerHandle

__all__ = ["ConnectorApi", "NodeApi"]

T = TypeVar("T")


class ConnectorApi(Protocol):
    """What the connector's routes (connector_http.py), the token route and /metrics need of the
    node's embedded connector (docs/connector.md)."""

    @property
    def apps(self) -> AppRegistry:
        """The apps (tenants) and their secrets; the single-tenant app is ``""``."""
        ...

    async def read_log(self, fn: Callable[[Connection], T]) -> T:
        """``fn`` run on a connection to the event log, off the event loop."""
        ...

    def metrics(self) -> dict[str, float]: ...

    def route_failed(self, now: float, remote_ip: str, app: str, started: float, status: int, message: str) -> None:
        """A create/connect request could not be placed on a media worker (``status`` 5xx): RouteError."""
        ...


class NodeApi(Protocol):
    @property
    def config(self) -> NodeConfig: ...

    @property
    def draining(self) -> bool: ...

    @property
    def loop_name(self) -> str: ...

    @property
    def started_at(self) -> float: ...

    @property
    def connector(self) -> ConnectorApi | None:
        """The embedded connector (standalone), or None."""
        ...

    @property
    def apps(self) -> AppRegistry | None:
        """The apps (tenants) this node knows: its connector's, or a cluster member's copy of the
        zone connector's list; None: the single-tenant app only."""
        ...

    def link_metrics(self) -> dict[str, float]:
        """A cluster node's link to its zone's connector (pending, sent, resent, spilled, dropped); {} without one."""
        ...

    @property
    def http_counters(self) -> dict[str, int]:
        """The HTTP server's limit counters (trackmesh.http.serving)."""
        ...

    def worker_for_room(self, room: str) -> WorkerHandle:
        """The worker that holds (or will hold) every session of ``room``; RpcError(503) without workers."""
        ...

    def worker_for_viewer(self, room: str) -> WorkerHandle:
        """The worker a new viewer (WHEP) of ``room`` joins: the room's, or with ``--room-spread`` (a media
        node, or a standalone node with several workers), once the room is big enough, the least busy
        worker (docs/cluster.md)."""
        ...

    def worker_for_conn(self, conn_id: str) -> WorkerHandle:
        """The worker that owns ``conn_id``; RpcError(404) for a conn id of another node or a forged one."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready for new sessions, reason)."""
        ...

    async def call_workers(self, method: str, params: dict[str, Any]) -> list[Any]:
        """``method`` on every worker: each one's result, or the ``RpcError`` it answered (the console)."""
        ...

    async def stats(self, media: bool = False) -> list[dict[str, Any]]:
        """One stats dict per worker (``{"worker": i, "error": ...}`` for one that did not answer); with
        ``media``, also its media totals (for /metrics: O(sessions))."""
        ...
