"""How the node's HTTP layer reaches its workers: directly in process, or over a pipe.

Worker 0 runs in the node's own event loop; workers 1..N-1 are child processes, each with its
own loop, UDP port and timer. A call is ``(request id, method, params)`` pickled over a
``multiprocessing`` pipe; the answer is ``(request id, ok, result or (status, message))``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from trackmesh.config import NodeConfig
from trackmesh.logs import setup_logging
from trackmesh.rpc import RpcError

from .loop import new_event_loop
from .transports import install_all
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.node")

START_TIMEOUT = 30.0
CALL_TIMEOUT = 10.0


class InProcessWorker:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.index = runtime.index
        self.udp_port = runtime.udp_port

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return self.runtime.call(method, params)

    async def stop(self, reason: str, timeout: float) -> None:
        self.runtime.shutdown(reason)


class ProcessWorker:
    def __init__(self, config: NodeConfig, index: int, links: dict[int, Connection] | None = None) -> None:
        """``links``: the child's ends of its pipes to the node's other workers (``--room-spread`` on a
        standalone node, runtime/worker_spread.py); closed here once the child has them."""
        self.index = index
        self.udp_port = 0
        self._config = config
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._child_conn: Connection | None = child
        self._links = links
        self._proc = ctx.Process(
            target=worker_process_main,
            args=(config, index, child, links),
            name=f"trackmesh-worker-{index}",
            daemon=True,
        )
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead = False
        # Connector events the child reports (standalone): JSON SourceEvents, see runtime/connector.py.
        self.on_events: Callable[[list[bytes]], None] | None = None
        # MoQ room bridge messages from the child (request id -2; runtime/moq_workers.py).
        self.on_moq: Callable[[Any], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready = loop.create_future()
        self._proc.start()
        assert self._child_conn is not None
        self._child_conn.close()
        self._child_conn = None
        for link in (self._links or {}).values():
            link.close()  # the child's ends: its copies are in the child now
        self._links = None
        loop.add_reader(self._conn.fileno(), self._on_readable)
        info = await asyncio.wait_for(self._ready, START_TIMEOUT)
        self.udp_port = int(info["udp_port"])

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                req_id, ok, result = self._conn.recv()
                if req_id == -1:
                    if self.on_events is not None:
                        self.on_events(result)
                    continue
                if req_id == -2:
                    if self.on_moq is not None:
                        self.on_moq(result)
                    continue
                if req_id == 0:
                    if self._ready is not None and not self._ready.done():
                        if ok:
                            self._ready.set_result(result)
                        else:
                            self._ready.set_exception(RpcError(500, str(result)))
                    continue
                fut = self._pending.pop(req_id, None)
                if fut is None or fut.done():
                    continue
                if ok:
                    fut.set_result(result)
                else:
                    fut.set_exception(RpcError(*result))
        except (EOFError, OSError):
            self._on_dead()

    def _on_dead(self) -> None:
        if self._dead:
            return
        self._dead = True
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._conn.fileno())
        err = RpcError(503, f"media worker {self.index} is not running")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(err)

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        if self._dead:
            raise RpcError(503, f"media worker {self.index} is not running")
        assert self._loop is not None
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[req_id] = fut
        self._conn.send((req_id, method, params))
        try:
            return await asyncio.wait_for(fut, CALL_TIMEOUT)
        except TimeoutError:
            self._pending.pop(req_id, None)
            raise RpcError(504, f"media worker {self.index} did not answer {method!r}") from None

    def writable(self) -> bool:
        """Whether the pipe takes a message without blocking (a dead worker's: anything, dropped)."""
        if self._dead:
            return True
        import select

        return bool(select.select([], [self._conn.fileno()], [], 0)[1])

    def push(self, method: str, params: dict[str, Any]) -> None:
        """A call the child runs without answering (request id -2: MoQ room bridge batches)."""
        if not self._dead:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send((-2, method, params))

    async def stop(self, reason: str, timeout: float) -> None:
        if not self._dead:
            with contextlib.suppress(RpcError, OSError):
                await asyncio.wait_for(self.call("worker.shutdown", {"reason": reason}), timeout)
        await asyncio.get_running_loop().run_in_executor(None, self._proc.join, timeout)
        if self._proc.is_alive():
            log.warning("worker did not stop in time; killing it", extra={"fields": {"worker": self.index}})
            self._proc.kill()
            await asyncio.get_running_loop().run_in_executor(None, self._proc.join, 5.0)
        self._on_dead()


def worker_process_main(
    config: NodeConfig, index: int, conn: Connection, links: dict[int, Connection] | None = None
) -> None:
    """Entry point of a worker child process (``links``: see :class:`ProcessWorker`)."""
    # Ctrl-C reaches the whole process group; the node decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(config.log_level, config.log_format)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve_worker(config, index, conn, links))
    finally:
        loop.close()


def _connector_relay(
    config: NodeConfig, runtime: WorkerRuntime, conn: Connection, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """A child worker's connector events go to the node over the worker pipe (request id -1);
    the node's embedded connector stores them (runtime/connector.py)."""
    import secrets
    import time

    from trackmesh.connector.events import source_to_json
    from trackmesh.connector.source import EventSource

    source = EventSource(config.node_id, secrets.randbits(48), time.time() - time.monotonic())
    runtime.core.audit = source
    scheduled = False

    def flush() -> None:
        nonlocal scheduled
        scheduled = False
        while batch := source.take():
            with contextlib.suppress(OSError, ValueError):
                conn.send((-1, True, [source_to_json(e) for e in batch]))

    def on_ready() -> None:
        nonlocal scheduled
        if not scheduled:
            scheduled = True
            loop.call_soon(flush)

    source.on_ready = on_ready
    return flush


async def _serve_worker(
    config: NodeConfig, index: int, conn: Connection, links: dict[int, Connection] | None = None
) -> None:
    loop = asyncio.get_running_loop()
    cluster = None
    spread = None
    if links:
        # A standalone node spreading rooms over its workers: the registry and hub are linked to the
        # other workers' (runtime/worker_spread.py).
        from .worker_spread import SpreadLinks

        spread = SpreadLinks(index, config.workers, links)
    if config.role == "media":
        # A cluster media worker is a cluster member of its own: its own zenoh session, registry
        # and channel hub, so rooms span workers and nodes.
        from .worker_cluster import WorkerCluster

        try:
            cluster = await loop.run_in_executor(None, WorkerCluster, config, index, loop)
        except Exception as exc:
            conn.send((0, False, f"cannot join the cluster: {exc}"))
            return
    if spread is not None:
        runtime = spread.new_runtime(config)
    else:
        runtime = WorkerRuntime(config, index, *((cluster.registry, cluster.hub) if cluster is not None else ()))
    try:
        install_all(runtime)
    except RpcError as exc:
        conn.send((0, False, exc.message))
        if cluster is not None:
            cluster.close()
        return
    if cluster is not None:
        cluster.attach(runtime)
    if config.role == "standalone" and config.moq_port:
        # The node's MoQ room bridges reach this worker's rooms over the pipe (runtime/moq_workers.py).
        from .moq_workers import WorkerMoqAgent

        WorkerMoqAgent(runtime, conn)
    # Standalone: the node's embedded connector stores them; media: the node's link sends them on.
    relay = _connector_relay(config, runtime, conn, loop) if config.role in ("standalone", "media") else None
    try:
        runtime.start(loop)
    except RpcError as exc:
        conn.send((0, False, exc.message))
        if cluster is not None:
            cluster.close()
        return
    done: asyncio.Future[str] = loop.create_future()

    def finish(reason: str) -> None:
        if not done.done():
            runtime.shutdown(reason)
            if relay is not None:
                relay()  # the sessions' last events (Leave, Disconnected) before the reply
            done.set_result(reason)

    def on_readable() -> None:
        try:
            while conn.poll():
                req_id, method, params = conn.recv()
                if method == "worker.shutdown":
                    finish(str(params.get("reason", "node stopping")))
                    conn.send((req_id, True, None))
                    continue
                if req_id < 0:  # a push: no answer (runtime/moq_workers.py)
                    with contextlib.suppress(RpcError):
                        runtime.call(method, params)
                    continue
                try:
                    conn.send((req_id, True, runtime.call(method, params)))
                except RpcError as exc:
                    conn.send((req_id, False, (exc.status, exc.message)))
                except Exception:
                    log.exception("worker call failed", extra={"fields": {"method": method}})
                    conn.send((req_id, False, (500, "internal error in media worker")))
        except (EOFError, OSError):
            finish("node process gone")

    loop.add_reader(conn.fileno(), on_readable)
    if spread is not None:
        spread.attach(runtime, loop)
    loop.add_signal_handler(signal.SIGTERM, finish, "SIGTERM")
    conn.send((0, True, {"udp_port": runtime.udp_port}))
    await done
    loop.remove_reader(conn.fileno())
    if spread is not None:
        spread.close()
    if cluster is not None:
        cluster.close()
