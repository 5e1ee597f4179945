"""``trackmesh gateway``: a zone gateway process.

It is a cluster member (one zenoh session, same settings as a media worker: peer mode, no
scouting, usrpwd from the secret) that carries no media. It listens to the load reports of its
zone's media nodes (``tm/load/<zone>/*``) and to their liveliness (``tm/node/<zone>/*``: a node
whose process dies is dropped at once, a silent one after 5 s), publishes a summary of its zone
every second on ``tm/zone/<zone>/<gateway>`` and reads the other gateways' summaries, and serves
the routing HTTP API of :mod:`trackmesh.gateway.app`.

Its route events (gateway/route_report.py: RouteBegin, RouteSuccess, RouteError) go to the zone's
connector by the media nodes' path: an event source on a :class:`ConnectorLink` of its own (acked,
resent, spilled to ``<--data-dir>/connector-spill-gateway-<node id>.jsonl``; docs/connector.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import zenoh

from trackmesh.cluster.membership import (
    GATEWAY_ROOT,
    LOAD_ROOT,
    NODE_ROOT,
    REPORT_INTERVAL,
    ZONE_ROOT,
    http_url,
    member_config,
    node_index,
)
from trackmesh.cluster.topology import open_member
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.config import NodeConfig
from trackmesh.core.audit import RouteAudit
from trackmesh.core.ids import MAX_WORKER, ConnIdCodec, SessionIdGenerator
from trackmesh.runtime.connector_link import ConnectorLink
from trackmesh.runtime.console_query import STATUS_ROOT, CpuMeter, StatusReporter, status_report
from trackmesh.runtime.node import Node, StartupError

from .directory import BadReport, NodeDirectory, ZoneDirectory, parse_report
from .rtmp_splice import RtmpSplice
from .sip_proxy import SipProxyDriver

log = logging.getLogger("trackmesh.gateway")


class GatewayNode(Node):
    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.index = node_index(config)
        self.url = http_url(config)
        self.directory = NodeDirectory(config.zone)
        self.zones = ZoneDirectory(config.zone)
        self.codec = ConnIdCodec(config.secret)
        # Route events (gateway/route_report.py): an EventSource on the link to the zone's connector
        # once the cluster session is open; failures get ids of the gateway's own.
        self.route_audit: RouteAudit | None = None
        self.link: ConnectorLink | None = None
        self.route_ids = SessionIdGenerator(config.node_id, MAX_WORKER, secrets.randbits(24))
        self.zenoh: ZenohNode | None = None
        self.client: Any = None
        self.counters: dict[str, int] = {
            "routed": 0,
            "routed_other_zone": 0,
            "no_capacity": 0,
            "unknown_conn": 0,
            "node_errors": 0,
            "bad_reports": 0,
            "sip_binding_misses": 0,  # POST /sip/invite/client asked a node without the binding (404)
        }
        self._entities: list[Any] = []
        #: ``--rtmp-port``: encoders' connections spliced to the zone's media nodes (rtmp_splice.py).
        self.rtmp: RtmpSplice | None = None
        #: ``--sip-port``: the stateless SIP proxy to the zone's media nodes (sip_proxy.py).
        self.sip_proxy: SipProxyDriver | None = None
        self._task: asyncio.Task[None] | None = None
        self.status: StatusReporter | None = None  # for the console role (runtime/console_query.py)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def has_media(self) -> bool:
        return False

    def now(self) -> float:
        return time.monotonic()

    def _post(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    async def _start_workers(self) -> None:
        import httpx

        loop = self._loop = asyncio.get_running_loop()
        cfg = self.config
        mcfg = member_config(cfg, 0)
        try:
            self.zenoh = zn = await loop.run_in_executor(None, open_member, mcfg)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the cluster session: {exc}") from None
        session = zn.session
        zone = cfg.zone
        self._entities = [
            session.declare_subscriber(f"{LOAD_ROOT}{zone}/*", self._on_load),
            session.liveliness().declare_subscriber(f"{NODE_ROOT}{zone}/*", self._on_node_live, history=True),
            session.declare_subscriber(f"{ZONE_ROOT}*/*", self._on_zone),
            session.liveliness().declare_subscriber(f"{GATEWAY_ROOT}*/*", self._on_gateway_live),
            session.liveliness().declare_token(f"{GATEWAY_ROOT}{zone}/{self.index}"),
        ]
        try:
            link = ConnectorLink(session, cfg.node_id, zone, cfg.data_dir, role="gateway")
        except OSError as exc:
            zn.close()
            self.zenoh = None
            raise StartupError(f"--data-dir: cannot keep the connector spill file: {exc}") from None
        self.route_audit = link.new_source()
        link.start()
        self.link = link
        # Never an environment proxy: requests go to cluster members only.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=2.0), trust_env=False)
        self._task = asyncio.create_task(self._summary_loop())
        self._cpu = CpuMeter()
        self.status = StatusReporter(session, f"{STATUS_ROOT}gateway/{zone}/{self.index}", self.status_report)
        deadline = time.monotonic() + 1.5
        while mcfg.seeds and not zn.links() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if mcfg.seeds and not zn.links():
            log.warning("no cluster seed answers; starting anyway (zenoh keeps retrying)",
                        extra={"fields": {"seeds": ",".join(mcfg.seeds)}})  # fmt: skip
        log.info("gateway joined the cluster", extra={"fields": {"zone": zone, "gateway": self.index,
                 "listen": ",".join(mcfg.listen), "links": zn.links()}})  # fmt: skip
        if cfg.rtmp_port:
            splice = RtmpSplice(self.directory, self.now, self.counters)
            try:
                await splice.start(cfg.http_host, cfg.rtmp_port)
            except OSError as exc:
                where = f"{cfg.http_host}:{cfg.rtmp_port}"
                raise StartupError(f"--rtmp-port: cannot listen on {where}: {exc.strerror}") from None
            self.rtmp = splice
            log.info("rtmp splice listening", extra={"fields": {"rtmp": f"{cfg.http_host}:{cfg.rtmp_port}"}})
        if cfg.sip_port:
            await self._start_sip_proxy(cfg.http_host, cfg.sip_port)

    async def _start_sip_proxy(self, host: str, port: int) -> None:
        # The proxy writes its address in Via and Record-Route: callers and media nodes must reach it there.
        if host in ("0.0.0.0", "::", ""):
            raise StartupError(f"--sip-port on a gateway needs a specific --http-host (not {host!r}): the proxy "
                               "names that address in Via and Record-Route")  # fmt: skip
        proxy = SipProxyDriver(self.directory, self.now, self.counters)
        try:
            await proxy.start(host, port)
        except OSError as exc:
            raise StartupError(f"--sip-port: cannot listen on UDP {host}:{port}: {exc.strerror}") from None
        self.sip_proxy = proxy
        log.info("sip proxy listening", extra={"fields": {"sip": f"{host}:{proxy.port}"}})

    def create_app(self) -> Any:
        from .app import create_gateway_app

        return create_gateway_app(self)

    def cluster_peers(self) -> int:
        return self.zenoh.links() if self.zenoh is not None else 0  # peers in a mesh, routers as a client

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        zn = self.zenoh
        if zn is None:
            return False, "not started"
        if zn.config.seeds and not zn.links():
            return False, f"not connected to any cluster seed ({','.join(zn.config.seeds)}); zenoh keeps retrying"
        return True, "ok"

    # ---- zenoh callbacks (zenoh threads) -----------------------------------------------------

    def _on_load(self, sample: zenoh.Sample) -> None:
        key = str(sample.key_expr)
        if sample.kind != zenoh.SampleKind.PUT:
            idx = key.rpartition("/")[2]
            if idx.isdigit():
                self._post(lambda: self.directory.remove(int(idx)))
            return
        data = sample.payload.to_bytes()
        self._post(lambda: self._apply_load(data))

    def _apply_load(self, data: bytes) -> None:
        try:
            entry = parse_report(data, self.now())
        except BadReport:
            self.counters["bad_reports"] += 1
            return
        known = entry.node in self.directory.nodes
        self.directory.update(entry)
        if not known and entry.node in self.directory.nodes:
            fields = {"zone": entry.zone, "node": entry.node, "http": entry.http}
            log.info("media node joined", extra={"fields": fields})

    def _on_node_live(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            return
        idx = str(sample.key_expr).rpartition("/")[2]
        if idx.isdigit():
            self._post(lambda: self._node_gone(int(idx)))

    def _node_gone(self, idx: int) -> None:
        if idx in self.directory.nodes:
            log.info("media node left", extra={"fields": {"zone": self.config.zone, "node": idx}})
        self.directory.remove(idx)

    def _on_zone(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            data = sample.payload.to_bytes()
            self._post(lambda: self.zones.update(data, self.now()))

    def _on_gateway_live(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            return
        parts = str(sample.key_expr).split("/")
        if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            zone, gw = int(parts[2]), int(parts[3])
            self._post(lambda: self.zones.remove(zone, gw))

    # ---- zone summary --------------------------------------------------------------------------

    def zone_summary(self) -> dict[str, Any]:
        now = self.now()
        healthy = self.directory.candidates(now)
        return {
            "zone": self.config.zone,
            "gateway": self.index,
            "url": self.url,
            "nodes": len(healthy),
            "free": self.directory.free(now),
            "score": round(healthy[0].score, 4) if healthy else 1.0,
            "location": self.config.location,  # for global gateways (gateway/global_gateway.py)
        }

    async def _summary_loop(self) -> None:
        while True:
            zn = self.zenoh
            if zn is not None and not zn.session.is_closed():
                try:
                    key = f"{ZONE_ROOT}{self.config.zone}/{self.index}"
                    zn.session.put(key, json.dumps(self.zone_summary()))
                except Exception:
                    log.exception("zone summary failed")
            await asyncio.sleep(REPORT_INTERVAL)

    # ---- stop ----------------------------------------------------------------------------------

    def link_metrics(self) -> dict[str, float]:
        return self.link.metrics() if self.link is not None else {}

    def status_report(self) -> dict[str, Any]:
        ready, reason = self.readiness()
        now = self.now()
        return status_report("gateway", self.config.zone, self.index, self.url, ready, reason, self._cpu.percent(),
                             nodes=len(self.directory.candidates(now)), free=self.directory.free(now),
                             routed=self.counters["routed"], no_capacity=self.counters["no_capacity"])  # fmt: skip

    async def after_stop(self) -> None:
        status, self.status = self.status, None
        if status is not None:
            await status.close()
        if self.link is not None:
            # Before the zenoh session closes: the last route events reach the connector (or the spill file).
            self.route_audit = None
            await self.link.stop()
            self.link = None
        if self.rtmp is not None:
            await self.rtmp.close()
            self.rtmp = None
        if self.sip_proxy is not None:
            self.sip_proxy.close()
            self.sip_proxy = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        for entity in self._entities:
            undeclare(entity)
        self._entities = []
        zn, self.zenoh = self.zenoh, None
        if zn is not None:
            zn.close()
