"""``trackmesh router``: the zenoh router of a zone, with a health and metrics HTTP API.

A router listens on ``tcp/<cluster-ip>:<cluster-port>`` for its zone's members (clients: media
workers, gateways started with ``--cluster-mode routers --seeds <the zone's routers>``) and dials
the other routers given in ``--seeds`` (of its zone and the other zones). It carries no media and
holds no state of its own: zenoh routes the samples, queries and liveliness of its clients
(cluster/topology.py says why this is a process of its own).

It declares the liveliness token ``tm/router/<zone>/<index>`` and refuses to start when that
token is already alive (a duplicated ``--node-id``), like media nodes do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from trackmesh.cluster.membership import endpoint, node_index
from trackmesh.cluster.topology import links_wanted, router_config
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.cluster.zenoh_session import ZenohNode, open_node
from trackmesh.config import NodeConfig
from trackmesh.runtime.cluster_node import PEER_WAIT
from trackmesh.runtime.node import Node, StartupError

log = logging.getLogger("trackmesh.router")

ROUTER_ROOT = "tm/router/"  # tm/router/<zone>/<router index>: liveliness token of a running router


class RouterNode(Node):
    """A zenoh session in router mode; ``has_media`` is False, so no worker starts."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.index = node_index(config)
        self.listen = endpoint(config.cluster_ip, config.cluster_port)
        self.cluster_config = router_config(config.secret, self.listen, config.seeds)
        self.zenoh: ZenohNode | None = None
        self._token: Any = None

    @property
    def has_media(self) -> bool:
        return False

    async def _start_workers(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.zenoh = zn = await loop.run_in_executor(None, open_node, self.cluster_config)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the router session: {exc}") from None
        try:
            await self._join(zn)
        except BaseException:
            await self.after_stop()
            raise

    async def _join(self, zn: ZenohNode) -> None:
        cfg = self.config
        wanted = links_wanted(self.cluster_config)
        deadline = time.monotonic() + PEER_WAIT
        while zn.links() < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if wanted and not zn.links():
            log.warning("no other router answers; starting anyway (zenoh keeps retrying)",
                        extra={"fields": {"seeds": ",".join(self.cluster_config.seeds)}})  # fmt: skip
        key = f"{ROUTER_ROOT}{cfg.zone}/{self.index}"
        session = zn.session
        replies = await asyncio.get_running_loop().run_in_executor(
            None, lambda: list(session.liveliness().get(key, timeout=1.0))
        )
        if any(r.ok is not None for r in replies):
            raise StartupError(
                f"--node-id: router {self.index} of zone {cfg.zone} is already running in the cluster "
                f"(liveliness {key} is alive); give this router another --node-id"
            )
        self._token = session.liveliness().declare_token(key)
        log.info("router joined the cluster", extra={"fields": {"zone": cfg.zone, "router": self.index,
                 "listen": self.listen, "routers": len(zn.routers())}})  # fmt: skip

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        zn = self.zenoh
        if zn is None:
            return False, "not started"
        if self.cluster_config.seeds and not zn.links():
            seeds = ",".join(self.cluster_config.seeds)
            return False, f"not connected to any other router ({seeds}); zenoh keeps retrying"
        return True, "ok"

    def info(self) -> dict[str, Any]:
        zn = self.zenoh
        return {
            "role": "router",
            "zone": self.config.zone,
            "router": self.index,
            "node_id": self.config.node_id,
            "listen": self.listen,
            "seeds": list(self.cluster_config.seeds),
            "zid": zn.zid if zn is not None else None,
            "routers": len(zn.routers()) if zn is not None else 0,
            "peers": len(zn.peers()) if zn is not None else 0,
            # The zone's members linked to this router (cluster/topology.py: members spread over
            # the zone's routers by a hash of their member key; the others fail over here).
            "clients": len(zn.clients()) if zn is not None else 0,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def create_app(self) -> Any:
        from .app import create_router_app

        return create_router_app(self)

    async def after_stop(self) -> None:
        if self._token is not None:
            undeclare(self._token)
            self._token = None
        zn, self.zenoh = self.zenoh, None
        if zn is not None:
            zn.close()
