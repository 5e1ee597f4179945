"""WorkerRuntime: the asyncio driver of one media worker.

It owns the worker's UDP socket (one port shared by all its peers), the sans-IO
:class:`~trackmesh.core.worker.MediaWorker`, the worker's single timer and its outbox.
Reception drains the socket with ``recvfrom_into`` into one preallocated buffer until it would
block (the default asyncio datagram path costs ~30 us a packet on this machine: anchors A3.2),
hands each datagram to the registered transport, then flushes: core events, outbox, timer. The
outbox leaves in one ``sendmmsg`` per 64 datagrams when the native helper is built (udp_send.py),
else with one ``sendto`` each.

Transports plug in through :meth:`register_rpc` (control calls from the HTTP layer),
:attr:`datagram_handler` (UDP input), :meth:`listen` (core events of an endpoint),
:meth:`on_shutdown` (the worker stops) and :meth:`on_drain` (the node drains).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.config import NodeConfig
from trackmesh.core.channel import ChannelHub
from trackmesh.core.ids import SessionId
from trackmesh.core.registry import Registry
from trackmesh.core.worker import MediaWorker
from trackmesh.rpc import RpcError

from .loop import LoopLag
from .media_metrics import MediaMetrics
from .room_metrics import RoomMetrics
from .scheduler import Scheduler, Timed
from .udp_send import BATCH, SendBatch, sendmmsg

log = logging.getLogger("trackmesh.worker")

Address = tuple[str, int]
RECV_BATCH = 256
RECV_BUFFER = 2048


class _CoreTimer:
    """Adapts the MediaWorker to the scheduler."""

    __slots__ = ("core",)

    def __init__(self, core: MediaWorker) -> None:
        self.core = core

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def handle_timeout(self, now: float) -> None:
        self.core.handle_timeout(now)


class WorkerRuntime:
    def __init__(
        self,
        config: NodeConfig,
        index: int,
        registry: Registry | None = None,
        hub: ChannelHub | None = None,
        mixer_bound: bool | None = None,
    ) -> None:
        """``registry``/``hub`` default to the in-process ones (standalone); a cluster node
        passes the distributed implementations (trackmesh.cluster.zenoh_*), which also turns on
        the mixer's bounded mode (``mixer_bound``, default: whether a hub is passed; a standalone
        node spreading rooms over its workers passes its own, runtime/worker_spread.py, unbounded)."""
        self.config = config
        self.index = index
        self.core = MediaWorker(
            config.node_id,
            index,
            config.secret,
            registry if registry is not None else LocalRegistry(),
            hub if hub is not None else LocalChannelHub(),
            session_start=secrets.randbits(24),
            # A cluster node: remote audio reaches the mixer only for the top N+1 (core.mixer).
            mixer_bound=hub is not None if mixer_bound is None else mixer_bound,
        )
        self.scheduler = Scheduler()
        self.outbox: deque[tuple[bytes, Address]] = deque()
        self.datagram_handler: Callable[[float, bytes, Address], None] | None = None
        # Per-worker singletons shared by transports (e.g. the WebRTC port), keyed by class.
        self.services: dict[type, object] = {}
        # More sections of stats() by name (e.g. "spread": runtime/worker_spread.py).
        self.stats_sections: dict[str, Callable[[], Any]] = {}
        if config.metrics_room_labels:  # opt-in per-room series (runtime/room_metrics.py)
            MediaMetrics.of(self).rooms = RoomMetrics(config.metrics_room_labels)
        self.counters: dict[str, int] = {
            "udp_rx": 0,
            "udp_tx": 0,
            "udp_tx_errors": 0,
            # The native send path (udp_send.py): datagrams sendmmsg took, its calls, and datagrams it
            # left to sendto (refused by the kernel, e.g. a full buffer, or an address it cannot encode).
            "udp_tx_sendmmsg": 0,
            "udp_tx_sendmmsg_batches": 0,
            "udp_tx_fallbacks": 0,
            "udp_rx_unhandled": 0,
            "core_events_unclaimed": 0,
            "handler_errors": 0,
        }
        self._rpc: dict[str, Callable[[float, dict[str, Any]], Any]] = {}
        self._listeners: dict[SessionId, Callable[[float], None]] = {}
        self._core_timer = _CoreTimer(self.core)
        self._shutdown_hooks: list[Callable[[float], None]] = []
        self._drain_hooks: list[Callable[[float, str, int], int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        # The socket's fd and udp_send.sendmmsg once started (None: not built, or a test's socket).
        self._tx_fd = -1
        self._send_batch: SendBatch | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.loop_lag = LoopLag()
        self._buf = bytearray(RECV_BUFFER)
        self.udp_port = 0
        self.register_rpc("worker.stats", lambda now, params: self.stats(media=bool(params.get("media"))))
        # Token keys by app id (multi-tenancy, security/tokens.py): the node's own app until the
        # node's connector hands over its app list ("worker.app_token_keys").
        self.app_token_keys: dict[str, bytes] = {"": config.token_key}
        self.register_rpc("worker.app_token_keys", self._set_app_token_keys)

    def _set_app_token_keys(self, now: float, params: dict[str, Any]) -> int:
        keys = {str(app): bytes(key) for app, key in dict(params["keys"]).items()}
        keys[""] = self.config.token_key  # the single-tenant app is always the node's own
        self.app_token_keys = keys
        return len(keys)

    def token_key_of(self, app: str) -> bytes | None:
        """The key that checks tokens of ``app`` (security.tokens.verify_for_app), None if unknown."""
        return self.app_token_keys.get(app)

    # ---- wiring for transports ---------------------------------------------------------

    def register_rpc(self, method: str, handler: Callable[[float, dict[str, Any]], Any]) -> None:
        self._rpc[method] = handler

    def listen(self, session: SessionId, on_events: Callable[[float], None]) -> None:
        """Route the core events of endpoint ``session`` to ``on_events(now)``."""
        self._listeners[session] = on_events

    def unlisten(self, session: SessionId) -> None:
        self._listeners.pop(session, None)

    def on_shutdown(self, hook: Callable[[float], None]) -> None:
        self._shutdown_hooks.append(hook)

    def on_drain(self, hook: Callable[[float, str, int], int]) -> None:
        """``hook(now, reason, remain_seconds)`` tells a transport's clients to go away (the node drains)
        and returns how many it told; see :meth:`drain`."""
        self._drain_hooks.append(hook)

    def drain(self, now: float, reason: str, remain_seconds: int) -> int:
        """The node drains: every transport tells its clients that can be told to move (the SDK's
        ``goaway``); returns how many were told. Sessions stay open until their clients leave."""
        return sum(hook(now, reason, remain_seconds) for hook in self._drain_hooks)

    def track(self, item: Timed) -> None:
        """(Re)schedule a component's deadline after it handled an input."""
        self.scheduler.update(item)

    def track_at(self, item: Timed, deadline: float | None) -> None:
        """After an input that can only have brought ``item``'s deadline forward to ``deadline``
        (:meth:`Scheduler.update_at`): cheaper than :meth:`track` when the item has many timers."""
        self.scheduler.update_at(item, deadline)

    def untrack(self, item: Timed) -> None:
        self.scheduler.remove(item)

    # ---- lifecycle -----------------------------------------------------------------------

    def now(self) -> float:
        # Not loop.time(): uvloop's is libuv's cached uv_now, in 1 ms steps. Arrival times in
        # transport-cc feedback need 250 us resolution (draft-holmer s3.1.5), or the sender's
        # delay-based estimator reads the quantization as queueing and backs off. Same clock
        # (CLOCK_MONOTONIC) as loop.time(), so call_at() deadlines stay comparable.
        return time.monotonic()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        port = self.config.webrtc_port + self.index if self.config.webrtc_port else 0
        family = socket.AF_INET6 if ":" in self.config.node_ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.config.node_ip, port))
        except OSError as exc:
            sock.close()
            raise RpcError(500, f"--webrtc-port: cannot bind UDP {self.config.node_ip}:{port}: {exc}") from None
        sock.setblocking(False)
        # Bigger kernel buffers absorb bursts of key frames to many viewers.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        self._sock = sock
        self._tx_fd = sock.fileno()
        self._send_batch = sendmmsg
        self.udp_port = sock.getsockname()[1]
        loop.add_reader(sock.fileno(), self._on_readable)
        # Everything alive now (modules, FastAPI, certificates) lives as long as the process: move
        # it out of the collector's reach, so full collections only scan what sessions create.
        # Profiling a loaded worker showed 68-72 ms full-collection pauses that freed nothing.
        gc.collect()
        gc.freeze()
        udp = f"{self.config.node_ip}:{self.udp_port}"
        log.info("worker started", extra={"fields": {"worker": self.index, "udp": udp}})

    def shutdown(self, reason: str) -> None:
        """Close every endpoint (clients are told by their transports), flush, close the port."""
        now = self.now()
        for hook in self._shutdown_hooks:
            try:
                hook(now)
            except Exception:
                log.exception("shutdown hook failed")
        self.core.shutdown(now, reason)
        self.flush(now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self._send_batch = None
            self._tx_fd = -1
        log.info("worker stopped", extra={"fields": {"worker": self.index, "reason": reason}})

    # ---- inputs --------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one control call (from the HTTP layer) and flush its consequences."""
        handler = self._rpc.get(method)
        if handler is None:
            raise RpcError(404, f"unknown worker call {method!r}")
        now = self.now()
        try:
            return handler(now, params)
        finally:
            self.flush(now)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        buf = self._buf
        view = memoryview(buf)
        handler = self.datagram_handler
        outbox = self.outbox
        now = self.now()
        received = 0
        for _ in range(RECV_BATCH):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # e.g. ICMP port unreachable reported on a later recv: not this packet's fault.
                continue
            received += 1
            if handler is None:
                continue
            try:
                handler(now, bytes(view[:n]), (addr[0], addr[1]))
            except Exception:
                # A transport bug must never take the worker down with it; count and log once.
                self.counters["handler_errors"] += 1
                if self.counters["handler_errors"] <= 10:
                    log.exception("datagram handler failed")
            if outbox:
                # Send each datagram's copies before handling the next one: holding them until the
                # whole batch is handled would make every viewer wait for the fan-out of every packet
                # that queued behind (a paced key frame arriving while we work), not just its own.
                self._send_outbox()
        self.counters["udp_rx"] += received
        if handler is None:
            self.counters["udp_rx_unhandled"] += received
        self.flush(now)

    def _on_timer(self) -> None:
        due = self._timer_at
        self._timer = None
        self._timer_at = None
        now = self.now()
        if due is not None:
            self.loop_lag.record(now, now - due)
        self.scheduler.update(self._core_timer)
        try:
            self.scheduler.run_due(now)
        except Exception:
            self.counters["handler_errors"] += 1
            log.exception("timer handler failed")
        self.flush(now)

    # ---- outputs -------------------------------------------------------------------------

    def flush(self, now: float) -> None:
        """Drain core events to their transports, send the outbox, re-arm the timer."""
        core = self.core
        for _ in range(1000):
            ready = core.take_ready()
            if not ready:
                break
            for endpoint in ready:
                listener = self._listeners.get(endpoint.session)
                if listener is not None:
                    listener(now)
                else:
                    while endpoint.poll_event() is not None:
                        self.counters["core_events_unclaimed"] += 1
        self._send_outbox()
        self.scheduler.update(self._core_timer)
        self._arm_timer()

    def _send_outbox(self) -> None:
        outbox = self.outbox
        if not outbox:
            return
        sock = self._sock
        if sock is None:
            outbox.clear()
            return
        counters = self.counters
        total = len(outbox)
        start = 0
        # Iterate, then clear once: cheaper per datagram than popleft (one per forwarded copy).
        try:
            send_batch = self._send_batch
            if send_batch is not None:
                # One sendmmsg per BATCH datagrams (udp_send.py). It stops before the first datagram the
                # kernel refuses or it cannot encode; that one and the rest go through sendto below, in
                # order, so each error is reported and counted as before.
                fd = self._tx_fd
                batches = 0
                while start < total:
                    took = send_batch(fd, outbox, start)
                    batches += 1
                    start += took
                    if took < BATCH:
                        break
                counters["udp_tx_sendmmsg"] += start
                counters["udp_tx_sendmmsg_batches"] += batches
                if start == total:
                    counters["udp_tx"] += total
                    return
                counters["udp_tx_fallbacks"] += total - start
            errors = 0
            sendto = sock.sendto
            for data, addr in outbox if not start else itertools.islice(outbox, start, None):
                try:
                    sendto(data, addr)
                except OSError:
                    # BlockingIOError: the kernel buffer is full; drop like a congested link
                    # would (NACK/PLI recover). Other errors (e.g. unreachable) likewise.
                    errors += 1
            counters["udp_tx"] += total - errors
            counters["udp_tx_errors"] += errors
        finally:
            outbox.clear()

    def _arm_timer(self) -> None:
        deadline = self.scheduler.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def stats(self, media: bool = False) -> dict[str, Any]:
        """The worker's counters; with ``media``, also its media totals by transport (O(sessions), and it
        samples the viewers' reports: only ``/metrics`` asks, not the load reports)."""
        out = {
            "worker": self.index,
            "udp_port": self.udp_port,
            "endpoints": len(self.core.endpoints),
            "rooms": len(self.core.rooms.rooms),
            "counters": dict(self.counters),
            "loop_lag": self.loop_lag.stats(self.now()),
        }
        for name, section in self.stats_sections.items():
            out[name] = section()
        if media:
            out["media"] = MediaMetrics.of(self).snapshot()
        return out
