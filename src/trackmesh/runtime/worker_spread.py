"""The links between a standalone node's workers when a room spreads over them
(``trackmesh standalone --workers N --room-spread K``, docs/cluster.md "One room on every core").

Every pair of workers shares one duplex pipe (:func:`spread_pipes`, made by the node before it starts
its children, each child getting its ends). :class:`SpreadLinks` drives one worker's ends: it makes
the worker's registry and hub (cluster/worker_mesh.py, sans-IO), carries their items to the other
workers in batches (runtime/pipe_batch.py: one pipe message per loop turn and peer; media packets
dropped and counted while a peer is behind), hands what arrives to the mesh with ``now`` and
flushes the worker after each batch (remote media produces outgoing packets like local input).
A peer whose pipe closes is lost: its entries and channels go.

Why pipes and not the zenoh hub of a media node: a standalone node has no cluster session to put
them on, and a pipe costs one write and one read per batch (bench/worker_hop_cpu.py, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import socket
from multiprocessing.connection import Connection
from typing import Any

from trackmesh.cluster.worker_mesh import WorkerMesh
from trackmesh.config import NodeConfig

from .pipe_batch import PipeBatch, writable
from .worker import WorkerRuntime
from .worker_cluster import room_sessions

__all__ = ["SpreadLinks", "spread_pipes", "spreads"]

log = logging.getLogger("trackmesh.worker")

#: Send buffer of each link (capped by net.core.wmem_max): room for bursts (key frames) to a busy peer.
LINK_BUFFER = 4 * 1024 * 1024
READ_BATCHES = 64  # pipe messages taken from one peer per wake-up


def spreads(config: NodeConfig) -> bool:
    """Whether a standalone node links its workers for spread rooms."""
    return config.role == "standalone" and config.room_spread > 0 and config.workers > 1


def spread_pipes(workers: int) -> dict[int, dict[int, Connection]]:
    """One duplex pipe per pair of workers: ``pipes[i][j]`` is worker i's end towards worker j."""
    ctx = multiprocessing.get_context("spawn")
    pipes: dict[int, dict[int, Connection]] = {i: {} for i in range(workers)}
    for i in range(workers):
        for j in range(i + 1, workers):
            a, b = ctx.Pipe(duplex=True)
            pipes[i][j], pipes[j][i] = a, b
    return pipes


class SpreadLinks:
    """One worker's links to the node's other workers, and its registry and hub across them."""

    def __init__(self, index: int, workers: int, conns: dict[int, Connection]) -> None:
        self.index = index
        self.conns = dict(conns)
        self.mesh = WorkerMesh(index, workers, self._send)
        self.batches = {
            peer: PipeBatch(functools.partial(self._write, peer), functools.partial(self._writable, peer))
            for peer in self.conns
        }
        self.lost: set[int] = set()
        self.batches_in = 0
        self.errors = 0
        self._runtime: WorkerRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for conn in self.conns.values():
            sock = socket.socket(fileno=conn.fileno())  # the pipe's Unix socket, borrowed
            try:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LINK_BUFFER)
            finally:
                sock.detach()

    def new_runtime(self, config: NodeConfig) -> WorkerRuntime:
        """The worker's runtime on the mesh's registry and hub (the mixer unbounded, as standalone's)."""
        return WorkerRuntime(config, self.index, self.mesh.registry, self.mesh.hub, mixer_bound=False)

    def attach(self, runtime: WorkerRuntime, loop: asyncio.AbstractEventLoop) -> None:
        self._runtime = runtime
        self._loop = loop
        for peer, conn in self.conns.items():
            loop.add_reader(conn.fileno(), self._on_readable, peer)
        runtime.register_rpc("spread.rooms", lambda now, params: room_sessions(runtime.core))
        runtime.stats_sections["spread"] = self.stats

    def stats(self) -> dict[str, Any]:
        batches = self.batches.values()
        return {
            **self.mesh.stats(),
            "link_messages_out": sum(b.messages for b in batches),
            "link_messages_in": self.batches_in,
            "packets_dropped": sum(b.dropped for b in batches),
            "peers_lost": len(self.lost),
            "errors": self.errors,
        }

    def close(self) -> None:
        for peer, conn in list(self.conns.items()):
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):
                conn.close()
            del self.conns[peer]

    # -- the mesh's output -----------------------------------------------------------------------

    def _send(self, peer: int, item: tuple[Any, ...]) -> None:
        batch = self.batches.get(peer)
        if batch is not None and peer not in self.lost:
            batch.add(item)

    def _write(self, peer: int, items: list[tuple[Any, ...]]) -> None:
        conn = self.conns.get(peer)
        if conn is not None:
            conn.send(items)

    def _writable(self, peer: int) -> bool:
        conn = self.conns.get(peer)
        return conn is None or peer in self.lost or writable(conn.fileno())

    # -- input -----------------------------------------------------------------------------------

    def _on_readable(self, peer: int) -> None:
        runtime = self._runtime
        conn = self.conns.get(peer)
        if runtime is None or conn is None:
            return
        now = runtime.now()
        try:
            for _ in range(READ_BATCHES):  # then the other inputs get their turn; the rest stays readable
                if not conn.poll():
                    break
                items = conn.recv()
                self.batches_in += 1
                try:
                    self.mesh.on_items(now, peer, items)
                except Exception:
                    self.errors += 1  # a core bug must not take the worker down; logged a few times
                    if self.errors <= 10:
                        log.exception("spread link batch failed", extra={"fields": {"peer": peer}})
        except (EOFError, OSError):
            self._peer_lost(peer, now)
        runtime.flush(now)

    def _peer_lost(self, peer: int, now: float) -> None:
        if peer in self.lost:
            return
        self.lost.add(peer)
        conn = self.conns.get(peer)
        if conn is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(conn.fileno())
        self.mesh.peer_lost(now, peer)
        log.info("spread link to a worker closed", extra={"fields": {"worker": self.index, "peer": peer}})

