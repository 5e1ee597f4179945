"""One worker's cluster membership (:class:`WorkerCluster`): its own zenoh session, registry and
channel hub, in the node's process (worker 0) or a worker child process (runtime/handles.py).

zenoh runs its callbacks on its own threads; :class:`Poster` hands them to the worker's loop in
batches and flushes the worker after each batch (remote media and registry changes produce
outgoing packets and events just like local input).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from trackmesh.cluster.membership import member_config
from trackmesh.cluster.topology import open_member
from trackmesh.cluster.zenoh_channels import ZenohChannelHub
from trackmesh.cluster.zenoh_registry import ZenohRegistry
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.config import NodeConfig
from trackmesh.core.worker import MediaWorker

from .worker import WorkerRuntime

__all__ = ["Poster", "WorkerCluster", "mixer_imports", "room_sessions"]

log = logging.getLogger("trackmesh.cluster")


class Poster:
    """``post`` for the zenoh registry and hub: runs the closures on ``loop`` in batches, then ``after()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._queue: list[Callable[[], None]] = []
        self._armed = False
        self.after: Callable[[], None] | None = None
        self.errors = 0

    def __call__(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self._queue.append(fn)
            if self._armed:
                return
            self._armed = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            batch, self._queue = self._queue, []
            self._armed = False
        for fn in batch:
            try:
                fn()
            except Exception:
                self.errors += 1
                if self.errors <= 10:
                    log.exception("cluster callback failed")
        if self.after is not None:
            self.after()


def room_sessions(core: MediaWorker) -> dict[str, int]:
    """``{room: endpoints}`` of this worker (the node's RoomAffinity and ``--room-spread`` count them)."""
    return {name: len(view.endpoints) for name, view in core.rooms.rooms.items()}


def mixer_imports(core: MediaWorker) -> dict[str, int]:
    """The bounded mixer's remote audio sources imported, per room that has any (core/mixer/, docs/mixer.md)."""
    imports: dict[str, int] = {}
    for name, view in core.rooms.rooms.items():
        n = view.stage.imported if view.stage is not None else 0
        if n:
            imports[name] = n
    return imports


class WorkerCluster:
    """One worker's cluster membership: zenoh session, registry and channel hub."""

    def __init__(self, config: NodeConfig, index: int, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.index = index
        self.member_config = member_config(config, index)
        self.node: ZenohNode = open_member(self.member_config)  # a client retries until a router answers
        self.poster = Poster(loop)
        # Both stamp what zenoh delivers with the clock WorkerRuntime.now() reads, so the core sees
        # one time line for local input, remote media and remote registry changes.
        self.registry = ZenohRegistry(self.node.session, self.poster, time.monotonic)
        self.hub = ZenohChannelHub(
            self.node.session, self.poster, time.monotonic, media_version=config.cluster_media_version
        )
        self._closed = False

    def attach(self, runtime: WorkerRuntime) -> None:
        self.poster.after = lambda: runtime.flush(runtime.now())
        runtime.register_rpc("cluster.stats", lambda now, params: self.stats(runtime))
        runtime.register_rpc("cluster.rooms", lambda now, params: room_sessions(runtime.core))
        runtime.register_rpc("cluster.goaway", lambda now, params: self.goaway(runtime, now, params))

    def goaway(self, runtime: WorkerRuntime, now: float, params: dict[str, Any]) -> dict[str, int]:
        """Tell every client of this worker that can be told (SDK ``goaway``) that the node goes away (drain)."""
        reason = str(params.get("reason", "node draining"))
        return {"told": runtime.drain(now, reason, int(params.get("remain", 0)))}

    def stats(self, runtime: WorkerRuntime | None = None) -> dict[str, Any]:
        hub, reg = self.hub, self.registry
        imports = mixer_imports(runtime.core) if runtime is not None else {}
        return {
            "mixer_imports": imports,
            "mixer_imports_total": sum(imports.values()),
            "member": reg.member,
            "listen": list(self.member_config.listen),
            "peers": len(self.node.peers()),
            "routers": len(self.node.routers()),
            # With zone routers: the router this worker is linked to (its zid) and the one it prefers
            # (cluster/topology.py preferred_order); they differ while the preferred one is down.
            "router": next(iter(self.node.routers()), None),
            "router_preferred": self.member_config.seeds[0] if self.member_config.mode == "client" else None,
            **hub.stats(),
            "hop": hub.hop_stats(),
            "registry_members_lost": reg.members_lost,
            "registry_remote_members": len(reg.remote_members()),
            "callback_errors": self.poster.errors,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.hub.close()
        self.registry.close()
        self.node.close()
