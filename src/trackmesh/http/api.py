"""``NodeApi``: what the node's HTTP routers need from the node that serves them.

The runtime's ``Node`` (``runtime/node.py``) satisfies it and composes the app
(``Node.create_app``); the routers only ever see this Protocol, so ``http/`` never imports
``runtime/``: the composition root imports its parts, not the other way round.
"""

from __future__ import annotations

from typing import Any, Protocol

from trackmesh.config import NodeConfig
from trackmesh.rpc import WorkerHandle

__all__ = ["NodeApi"]


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
    def http_counters(self) -> dict[str, int]:
        """The HTTP server's limit counters (trackmesh.http.serving)."""
        ...

    def worker_for_room(self, room: str) -> WorkerHandle:
        """The worker that holds (or will hold) every session of ``room``; RpcError(503) without workers."""
        ...

    def worker_for_conn(self, conn_id: str) -> WorkerHandle:
        """The worker that owns ``conn_id``; RpcError(404) for a conn id of another node or a forged one."""
        ...

    def readiness(self) -> tuple[bool, str]:
        """(ready for new sessions, reason)."""
        ...

    async def stats(self) -> list[dict[str, Any]]:
        """One stats dict per worker (``{"worker": i, "error": ...}`` for one that did not answer)."""
        ...
