"""Node: one trackmesh process (standalone, gateway or media role).

It starts the workers, serves the HTTP API on the same event loop as worker 0, routes each
request to a worker (by room for new sessions, by the worker encoded in the conn id after),
and shuts down cleanly on SIGINT/SIGTERM: HTTP stops accepting, every endpoint is closed
(transports tell their clients), sockets close, exit code 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvicorn

from trackmesh import __version__
from trackmesh.config import NodeConfig
from trackmesh.core.ids import ConnIdCodec, InvalidConnId
from trackmesh.rpc import RpcError, WorkerHandle

from .handles import InProcessWorker, ProcessWorker
from .loop import loop_name
from .spread_routing import REPORT_INTERVAL, SpreadRouting
from .transports import install_all
from .worker import WorkerRuntime
from .worker_spread import SpreadLinks, spread_pipes, spreads

if TYPE_CHECKING:
    from trackmesh.connector.apps import App, AppRegistry

    from .connector import EmbeddedConnector
    from .moq_listener import MoqListener
    from .sip_listener import SipListener

log = logging.getLogger("trackmesh.node")


class _Server(uvicorn.Server):
    """uvicorn without its own signal capture: the node owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class StartupError(Exception):
    """The node cannot start; the message is one line naming the flag."""


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.workers: list[WorkerHandle] = []
        self.started_at = time.time()
        self.conn_ids = ConnIdCodec(config.secret)
        self.draining = False
        self.loop_name = "asyncio"
        self._stop = asyncio.Event()
        self._stop_reason = "stopped"
        self.on_started: Callable[[Node], None] | None = None
        # The embedded connector (standalone): event log and webhooks, runtime/connector.py.
        self.connector: EmbeddedConnector | None = None
        #: A cluster member without a connector: the zone connector's app list, as it published it
        #: (runtime/cluster_apps.py); None until one arrives (the single-tenant app only).
        self.cluster_apps: AppRegistry | None = None
        #: HTTP limit counters (timeouts, refusals; see trackmesh.http.serving), rendered by /metrics.
        self.http_counters: dict[str, int] = {}
        #: The SIP driver on --sip-port (docs/sip.md), None when off.
        self.sip: SipListener | None = None
        #: The Media over QUIC port (runtime/moq_listener.py), when --moq-port is not 0.
        self.moq: MoqListener | None = None
        #: ``--room-spread`` on a standalone node with several workers (runtime/worker_spread.py):
        #: worker 0's links to the others, and where new viewers go (runtime/spread_routing.py).
        self.spread_links: SpreadLinks | None = None
        self.spread_routing: SpreadRouting | None = None
        self._spread_reports: asyncio.Task[None] | None = None

    # ---- routing -------------------------------------------------------------------------

    @property
    def has_media(self) -> bool:
        return self.config.role in ("standalone", "media")

    @property
    def apps(self) -> AppRegistry | None:
        """The apps (tenants) this node knows: its connector's list, or (a cluster member without
        one) the zone connector's as published over the cluster; None: the single-tenant app only."""
        return self.connector.apps if self.connector is not None else self.cluster_apps

    def token_key_of(self, app: str) -> bytes | None:
        """The key that checks tokens of ``app`` (security.tokens.verify_for_app): the node's own for
        the single-tenant app, a tenant's from the node's app list; None if unknown here."""
        if app == "":
            return self.config.token_key
        apps = self.apps
        return apps.token_key_of(app, self.config.atm0s_compatible_tokens) if apps is not None else None

    async def apply_cluster_apps(self, apps: list[App]) -> None:
        """The zone connector's app list arrived or changed (runtime/cluster_apps.py): this node's
        HTTP layer takes it at once, and every media worker gets the apps' token keys."""
        from trackmesh.connector.apps import App as AppEntry
        from trackmesh.connector.apps import AppRegistry as Registry

        registry = self.cluster_apps
        if registry is None:
            registry = Registry(AppEntry("", self.config.secret, None, ""))
        registry.replace(apps)
        self.cluster_apps = registry
        keys = registry.token_keys(self.config.atm0s_compatible_tokens)
        for worker in self.workers:
            try:
                await worker.call("worker.app_token_keys", {"keys": keys})
            except Exception:
                log.exception("cannot hand the apps' token keys to a media worker")

    def worker_for_room(self, room: str) -> WorkerHandle:
        """All sessions of a room live on one worker, so its in-process registry and channels
        see the whole room (the mediasoup Router-per-worker model)."""
        if not self.workers:
            raise RpcError(503, f"no media node available in zone {self.config.zone}")
        digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
        return self.workers[int.from_bytes(digest, "big") % len(self.workers)]

    def worker_for_viewer(self, room: str) -> WorkerHandle:
        """A new viewer's worker: the room's; with ``--room-spread K`` and several workers, once the room
        has K sessions on the node, the worker with the fewest sessions (runtime/spread_routing.py):
        the workers' registries and hubs are then linked (runtime/worker_spread.py), so the viewer's
        worker imports the room's tracks, one copy per packet and worker with viewers."""
        home = self.worker_for_room(room)
        routing = self.spread_routing
        if routing is None or self.draining:
            return home
        return self.workers[routing.viewer(room, home.index)]

    def worker_for_conn(self, conn_id: str) -> WorkerHandle:
        try:
            parts = self.conn_ids.decode(conn_id)
        except InvalidConnId:
            raise RpcError(404, "unknown conn id") from None
        if parts.node_id != self.config.node_id or parts.worker >= len(self.workers):
            raise RpcError(404, "unknown conn id")
        return self.workers[parts.worker]

    async def stats(self, media: bool = False) -> list[dict[str, Any]]:
        out = []
        for worker in self.workers:
            try:
                out.append(await worker.call("worker.stats", {"media": media}))
            except RpcError as exc:
                out.append({"worker": worker.index, "error": exc.message})
        return out

    async def call_workers(self, method: str, params: dict[str, Any]) -> list[Any]:
        """``method`` on every worker, in order: each one's result, or the RpcError it answered."""
        out: list[Any] = []
        for worker in self.workers:
            try:
                out.append(await worker.call(method, params))
            except RpcError as exc:
                out.append(exc)
        return out

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._stop.set()

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    # ---- lifecycle -----------------------------------------------------------------------

    def _bind_http(self) -> socket.socket:
        host, port = self.config.http_host, self.config.http_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"--http-port: cannot listen on {host}:{port}: {exc.strerror}") from None
        sock.listen(512)
        sock.setblocking(False)
        return sock

    # ---- hooks for the cluster roles (runtime/cluster_node.py, gateway/) ----------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) for /api/node/health."""
        if self.draining:
            return False, "draining"
        if self.has_media and not self.workers:
            return False, "no media worker"
        return True, "ok"

    def link_metrics(self) -> dict[str, float]:
        """The link to the zone's connector (a cluster media node: runtime/connector_link.py)."""
        return {}

    def new_runtime(self, index: int) -> WorkerRuntime:
        """Worker 0's runtime (in process); a cluster media node passes the zenoh registry and hub, a
        standalone node spreading rooms over its workers the linked ones (runtime/worker_spread.py)."""
        if self.spread_links is not None:
            return self.spread_links.new_runtime(self.config)
        return WorkerRuntime(self.config, index)

    def moq_room_here(self, room: str) -> bool:
        """Whether the MoQ room bridge (runtime/moq_rooms.py, on the in-process worker 0) serves
        ``room`` through worker 0's own registry and channels. Standalone workers share none, so only
        worker 0's rooms; the others are reached over their worker's pipe (runtime/moq_workers.py).
        A cluster media node serves every room through worker 0's (runtime/cluster_node.py)."""
        return bool(self.workers) and self.worker_for_room(room) is self.workers[0]

    def moq_ingest_here(self, room: str) -> bool:
        """Whether a MoQ publisher into ``room`` joins it (runtime/moq_room_ingest.py, on worker 0)."""
        return self.moq_room_here(room)

    def moq_started(self, listener: MoqListener) -> None:
        """The MoQ listener is up (a cluster media node joins its relay to the cluster's here)."""

    def create_app(self) -> Any:
        from trackmesh.http.app import create_app

        return create_app(self)

    async def on_stop_requested(self) -> None:
        """Runs after SIGINT/SIGTERM while HTTP still serves (a media node drains here)."""

    async def after_stop(self) -> None:
        """Runs after the workers stopped (close cluster sessions here)."""

    async def _start_workers(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.has_media:
            return
        pipes = spread_pipes(self.config.workers) if spreads(self.config) else None
        if pipes is not None:
            self.spread_links = SpreadLinks(0, self.config.workers, pipes[0])
        runtime = self.new_runtime(0)
        try:
            install_all(runtime)
            runtime.start(loop)
        except RpcError as exc:
            raise StartupError(exc.message) from None
        if self.spread_links is not None:
            self.spread_links.attach(runtime, loop)
        self.workers.append(InProcessWorker(runtime))
        links = pipes or {}
        children = [ProcessWorker(self.config, i, links.get(i)) for i in range(1, self.config.workers)]
        try:
            await asyncio.gather(*(c.start() for c in children))
        except (RpcError, TimeoutError) as exc:
            for child in children:
                await child.stop("start failed", 2.0)
            runtime.shutdown("start failed")
            raise StartupError(f"--workers: a media worker failed to start: {exc}") from None
        self.workers.extend(children)
        if pipes is not None:
            self.spread_routing = SpreadRouting(self.config.room_spread, len(self.workers))
            self._spread_reports = asyncio.create_task(self._report_spread_rooms())

    async def _report_spread_rooms(self) -> None:
        """The workers' ``{room: sessions}`` for the spread routing, every REPORT_INTERVAL seconds."""
        routing = self.spread_routing
        assert routing is not None
        while not self.draining:
            try:
                answers = await self.call_workers("spread.rooms", {})
                routing.reported([a if isinstance(a, dict) else None for a in answers])
            except Exception:
                log.exception("cannot take the workers' room report (--room-spread)")
            await asyncio.sleep(REPORT_INTERVAL)

    async def _start_moq(self) -> None:
        if not self.config.moq_port or self.config.role not in ("standalone", "media"):
            return
        from .moq_listener import MoqListener

        listener = MoqListener(
            self.config.http_host,
            self.config.moq_port,
            cert_file=self.config.moq_cert or None,
            key_file=self.config.moq_key or None,
            anonymous=self.config.moq_anonymous,
            token_key=self.token_key_of,
            loopback_datagram_size=self.config.moq_loopback_datagram_size,
            pmtud=self.config.moq_pmtud,
            pmtud_max=self.config.moq_pmtud_max,
            alpns=self.config.moq_alpns,
        )
        problem = ""
        try:
            await listener.start()
        except OSError as exc:
            problem = f"--moq-port: cannot listen on UDP {self.config.http_host}:{self.config.moq_port}: {exc.strerror}"
        except ValueError as exc:
            problem = f"--moq-cert/--moq-key: cannot load them: {exc}"
        if problem:
            for worker in self.workers:
                await worker.stop("start failed", 2.0)
            if self.connector is not None:
                await self.connector.stop()
            raise StartupError(problem)
        self.moq = listener
        first = self.workers[0] if self.workers else None
        if isinstance(first, InProcessWorker):
            # Rooms as MoQ: the in-process worker's rooms on the relay (runtime/moq_rooms.py), and
            # MoQ publishers into them (runtime/moq_room_ingest.py).
            from .moq_room_ingest import MoqRoomIngest
            from .moq_rooms import MoqRooms

            bridges = None
            if self.config.role == "standalone" and len(self.workers) > 1:
                # Rooms of the other workers, over their pipes (runtime/moq_workers.py).
                from .moq_workers import WorkerBridges

                children = [w for w in self.workers if isinstance(w, ProcessWorker)]
                bridges = WorkerBridges(children, self.worker_for_room, first.runtime.now)
            listener.rooms = MoqRooms(
                first.runtime, listener.relay, self.moq_room_here, bridges.source if bridges else None,
                bridges.metrics if bridges else None,
            )  # fmt: skip
            listener.room_ingest = MoqRoomIngest(
                first.runtime, listener.relay, self.moq_ingest_here, bridges.host if bridges else None
            )
        self.moq_started(listener)
        if self.config.moq_anonymous:
            log.warning(
                "MoQ relay is ANONYMOUS (--moq-anonymous): anyone may publish and subscribe any namespace on UDP %s",
                listener.port,
            )

    async def _start_connector(self) -> None:
        # Imported here: only standalone and the connector role run it (and load SQLAlchemy).
        from .connector import EmbeddedConnector

        try:
            connector = EmbeddedConnector(self)
            await connector.start()
        except Exception as exc:
            for worker in self.workers:
                await worker.stop("start failed", 2.0)
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise StartupError(f"--connector-db: the connector cannot start: {first}") from None
        self.connector = connector

    async def _start_sip(self) -> None:
        cfg = self.config
        if not self.has_media or not cfg.sip_listen_port:
            return
        from .sip_listener import SipListener

        listener = SipListener(self, cfg.node_ip, cfg.sip_listen_port)
        try:
            await listener.start()
        except OSError as exc:
            if cfg.sip_port is None:  # the default port: a second node on this host runs without SIP
                log.warning("SIP is off: cannot listen on %s:%d (%s); pass --sip-port", cfg.node_ip,
                            cfg.sip_listen_port, exc.strerror)  # fmt: skip
                return
            for worker in self.workers:
                await worker.stop("start failed", 2.0)
            if self.connector is not None:
                await self.connector.stop()
            raise StartupError(f"--sip-port: cannot listen on {cfg.node_ip}:{cfg.sip_port}: {exc.strerror}") from None
        self.sip = listener

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.loop_name = loop_name(loop)
        http_sock = self._bind_http()
        try:
            await self._start_workers()
            if self.config.role in ("standalone", "connector"):
                await self._start_connector()
            await self._start_sip()
            await self._start_moq()
        except StartupError:
            http_sock.close()
            raise
        from trackmesh.http.serving import server_config

        server = _Server(server_config(self.create_app(), self.config, self.http_counters))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        serve = asyncio.create_task(server.serve(sockets=[http_sock]))
        await asyncio.sleep(0)
        log.info(
            "node started",
            extra={
                "fields": {
                    "role": self.config.role,
                    "node_id": self.config.node_id,
                    "http": f"{self.config.http_host}:{self.config.http_port}",
                    "workers": len(self.workers),
                    "udp_ports": ",".join(str(w.udp_port) for w in self.workers),
                    "moq": f"udp/{self.moq.port}" if self.moq is not None else "off",
                    "loop": self.loop_name,
                    "version": __version__,
                }
            },
        )
        if self.on_started is not None:
            self.on_started(self)
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({serve, stop}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if serve in done and not stop.done():
            code = 1
            log.error("HTTP server stopped unexpectedly")
        log.info("shutting down", extra={"fields": {"reason": self._stop_reason}})
        if not (serve in done and not stop.done()):
            try:
                await self.on_stop_requested()
            except Exception:
                log.exception("drain failed")
        self.draining = True
        if self.sip is not None:
            await self.sip.close()
        if self.moq is not None:
            self.moq.drain()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await serve
        stop.cancel()
        if self._spread_reports is not None:
            self._spread_reports.cancel()
        # Children first (in parallel), then the in-process worker.
        await asyncio.gather(*(w.stop("node stopping", self.config.shutdown_timeout) for w in self.workers[1:]))
        if self.moq is not None and self.moq.rooms is not None:
            self.moq.rooms.close(time.monotonic())
        if self.moq is not None and self.moq.room_ingest is not None:
            self.moq.room_ingest.close()
        if self.workers:
            await self.workers[0].stop("node stopping", self.config.shutdown_timeout)
        if self.spread_links is not None:
            self.spread_links.close()
        if self.connector is not None:
            await self.connector.stop()
        if self.moq is not None:
            self.moq.close()
        try:
            await self.after_stop()
        except Exception:
            log.exception("cleanup failed")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        log.info("node stopped")
        return code


def packet_path_build() -> str:
    """How the per-packet modules run: compiled by mypyc (``pip install .``) or interpreted (an
    editable install, TRACKMESH_PURE_PYTHON=1, or no C compiler at install time; see setup.py), and
    whether workers send with the native ``sendmmsg`` helper or ``sendto`` per datagram (udp_send.py)."""
    from trackmesh.transports.webrtc import media_out

    from . import udp_send

    build = "compiled (mypyc)" if (media_out.__file__ or "").endswith((".so", ".pyd")) else "pure Python"
    return f"{build}, {'sendmmsg' if udp_send.sendmmsg is not None else 'sendto'}"


def print_banner(node: Node) -> None:
    """What a new user needs: where the API is, the secret (when generated) and sample URLs."""
    cfg = node.config
    base = f"http://{cfg.http_host if cfg.http_host not in ('0.0.0.0', '::') else '127.0.0.1'}:{cfg.http_port}"
    what = f"{len(node.workers)} media worker(s)" if node.has_media else "no media: routes to media nodes"
    if cfg.role == "connector":
        what = f"the connector of zone {cfg.zone}: event log, webhooks, log API"
    if cfg.role == "console":
        what = "the operator's console of the cluster"
    lines = [
        f"trackmesh {__version__} {cfg.role} node is up ({what}, {node.loop_name}, packet path {packet_path_build()})",
        f"  HTTP API:      {base}  (OpenAPI docs at {base}/docs, works offline)",
        f"  health:        {base}/api/node/health",
        f"  metrics:       {base}/metrics",
    ]
    if cfg.role in ("standalone", "console"):
        lines.append(f"  console:       {base}/console  (log in with the app secret)")
    if node.has_media:
        lines += [
            f"  samples:               {base}/samples/index.html",
            f"  room (video + chat):   {base}/samples/room.html",
            f"  publish (WHIP) sample: {base}/samples/whip.html",
            f"  watch (WHEP) sample:   {base}/samples/whep.html",
        ]
        if cfg.rtmp_listen_port:
            host = cfg.node_ip if ":" not in cfg.node_ip else f"[{cfg.node_ip}]"
            url = f"rtmp://{host}:{cfg.rtmp_listen_port}/live"
            lines.append(f"  RTMP ingest (OBS):     {url}/<stream key from POST /token/rtmp>")
        if cfg.dev:
            lines.append("  --dev: the samples get demo tokens from /dev/token/<kind> (loopback clients only)")
    if node.moq is not None:
        # Which aioquic carries MoQ: scripts/build-fast-aioquic.sh compiles it (docs/moq.md "Speed").
        from .aioquic_build import describe

        lines.append(f"  MoQ relay:             UDP {node.moq.port} (moqt-16/20/21/22, WebTransport; {describe()})")
    if cfg.secret_generated:
        lines.append(f"  app secret (generated, shown once; pass --secret to choose one): {cfg.secret}")
    print("\n".join(lines), file=sys.stderr, flush=True)
