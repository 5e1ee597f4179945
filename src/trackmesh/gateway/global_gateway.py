"""``trackmesh gateway --global``: a gateway above the zones that sends each client to its best zone.

It is a cluster member like a zone gateway (a zenoh session with the same settings: mesh peer, or a
client of its zone's routers with ``--cluster-mode routers``) that follows every zone's summary
(``tm/zone/<zone>/<gateway>``, dropped when stale or when the gateway's liveliness token goes),
and no media node directly. New sessions are proxied to the chosen zone's gateway
(gateway/zone_choice.py says which; ``--global-redirect``: a 307 there instead), follow-up calls on
a conn id to a gateway of the zone the conn id names (gateway/global_app.py).
Any number of global gateways can run: they share nothing beyond what zenoh tells each.

``--geoip-db`` (MaxMind format) locates clients by their address; a missing or corrupt database
stops the start with one line naming the flag. Without it, routing is by load alone.

Its own refusals (no zone took a new session: RouteBegin then RouteError) go to a zone's connector,
as a zone gateway's go to its own (zone 0 has none): the connector of the lowest zone whose
connector liveliness (``tm/conn/<zone>``) it sees first, over a
:class:`~trackmesh.runtime.connector_link.ConnectorLink` of its own (acks, resends, spill file
``<--data-dir>/connector-spill-global-gateway-<node id>.jsonl``). Refusals before any zone's
connector was seen are not reported (counted in ``unreported_refusals``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import zenoh

from trackmesh.cluster.membership import GATEWAY_ROOT, ZONE_ROOT, http_url, member_config, node_index
from trackmesh.cluster.topology import open_member
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.config import NodeConfig
from trackmesh.core.audit import RouteAudit
from trackmesh.core.ids import MAX_WORKER, ConnIdCodec, SessionIdGenerator
from trackmesh.runtime.connector_link import CONNECTOR_ROOT, ConnectorLink
from trackmesh.runtime.node import Node, StartupError

from .directory import ZoneDirectory
from .geo import GeoDb, GeoDbError

log = logging.getLogger("trackmesh.gateway")

GLOBAL_ZONE = -1  # the ZoneDirectory of a global gateway has no zone of its own


class GlobalGatewayNode(Node):
    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.index = node_index(config)
        self.url = http_url(config)
        self.zones = ZoneDirectory(GLOBAL_ZONE)
        self.codec = ConnIdCodec(config.secret)
        # Route events (gateway/route_report.py): the requests no zone took, to a zone's connector
        # (the first seen; zone 0 has none). None until one is seen: not reported.
        self.route_audit: RouteAudit | None = None
        self.link: ConnectorLink | None = None
        self._connector_zones: set[int] = set()
        self.route_ids = SessionIdGenerator(config.node_id, MAX_WORKER, secrets.randbits(24))
        self.geo: GeoDb | None = None
        self.zenoh: ZenohNode | None = None
        self.counters: dict[str, int] = {
            "routed_named": 0,
            "routed_rtt": 0,
            "routed_geo": 0,
            "routed_load": 0,
            "routed_conn": 0,
            "unknown_zone": 0,
            "bad_zone_rtt": 0,
            "no_zone": 0,
            "unknown_conn": 0,
            "zone_errors": 0,
            "unreported_refusals": 0,
        }
        self.redirect = config.global_redirect
        self.client: Any = None
        self._entities: list[Any] = []
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
        cfg = self.config
        if cfg.geoip_db:
            try:
                self.geo = GeoDb(cfg.geoip_db)
            except GeoDbError as exc:
                raise StartupError(str(exc)) from None
        loop = self._loop = asyncio.get_running_loop()
        mcfg = member_config(cfg, 0)
        try:
            self.zenoh = zn = await loop.run_in_executor(None, open_member, mcfg)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the cluster session: {exc}") from None
        import httpx

        # Never an environment proxy: requests go to cluster members only.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=2.0), trust_env=False)
        session = zn.session
        self._entities = [
            session.declare_subscriber(f"{ZONE_ROOT}*/*", self._on_zone),
            session.liveliness().declare_subscriber(f"{GATEWAY_ROOT}*/*", self._on_gateway_live),
            # The zones' connectors (their liveliness tm/conn/<zone>): where our refusals are reported.
            session.liveliness().declare_subscriber(f"{CONNECTOR_ROOT}*", self._on_connector_live, history=True),
        ]
        deadline = time.monotonic() + 1.5
        while mcfg.seeds and not zn.links() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        log.info("global gateway joined the cluster", extra={"fields": {"gateway": self.index,
                 "geoip_db": cfg.geoip_db or "-", "links": zn.links()}})  # fmt: skip

    def create_app(self) -> Any:
        from .global_app import create_global_app

        return create_global_app(self)

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

    def _on_connector_live(self, sample: zenoh.Sample) -> None:
        parts = str(sample.key_expr).split("/")
        if sample.kind == zenoh.SampleKind.PUT and len(parts) == 3 and parts[2].isdigit():
            zone = int(parts[2])
            self._post(lambda: self._connector_seen(zone))

    def _connector_seen(self, zone: int) -> None:
        """A zone's connector is alive: the first one takes this gateway's route events for good
        (its link resends while that connector restarts; the events wait at this node)."""
        self._connector_zones.add(zone)
        if self.link is not None or self.zenoh is None or zone <= 0:
            return
        try:
            link = ConnectorLink(self.zenoh.session, self.config.node_id, zone, self.config.data_dir,
                                 role="global-gateway")  # fmt: skip
        except OSError as exc:
            log.error("cannot keep the connector spill file: route events not reported",
                      extra={"fields": {"error": str(exc)}})  # fmt: skip
            return
        self.route_audit = link.new_source()
        link.start()
        self.link = link
        log.info("route events go to a zone's connector", extra={"fields": {"zone": zone}})

    def link_metrics(self) -> dict[str, float]:
        return self.link.metrics() if self.link is not None else {}

    async def after_stop(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            # Before the zenoh session closes: the last route events reach the connector (or the spill file).
            self.route_audit = None
            await link.stop()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        for entity in self._entities:
            undeclare(entity)
        self._entities = []
        zn, self.zenoh = self.zenoh, None
        if zn is not None:
            zn.close()
        if self.geo is not None:
            self.geo.close()
