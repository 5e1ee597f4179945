"""Cluster membership conventions shared by media nodes and gateways: key roots, node index,
member endpoints and the zenoh settings of each worker (no I/O here)."""

from __future__ import annotations

from trackmesh.config import NodeConfig

from .topology import router_client_config
from .zenoh_session import ClusterConfig

__all__ = [
    "GATEWAY_ROOT", "LOAD_ROOT", "NODE_ROOT", "REPORT_INTERVAL", "ZONE_ROOT", "endpoint", "http_url",
    "member_config", "member_key", "node_index",
]

LOAD_ROOT = "tm/load/"  # tm/load/<zone>/<node index>: JSON load report of a media node, every second
NODE_ROOT = "tm/node/"  # tm/node/<zone>/<node index>: liveliness token of a running media node
ZONE_ROOT = "tm/zone/"  # tm/zone/<zone>/<gateway index>: JSON zone summary of a gateway, every second
GATEWAY_ROOT = "tm/gw/"  # tm/gw/<zone>/<gateway index>: liveliness token of a running gateway
REPORT_INTERVAL = 1.0


def node_index(config: NodeConfig) -> int:
    """The node's index in its zone (``--node-id``); ``config.node_id`` is ``zone << 8 | index``."""
    return config.node_id & 0xFF


def endpoint(ip: str, port: int) -> str:
    return f"tcp/[{ip}]:{port}" if ":" in ip else f"tcp/{ip}:{port}"


def http_url(config: NodeConfig) -> str:
    """Where other members reach this node's HTTP API."""
    host = config.http_host
    if host in ("0.0.0.0", "::"):
        host = config.node_ip if config.role == "media" else config.cluster_ip
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.http_port}"


def member_key(config: NodeConfig, worker: int = 0) -> str:
    """What picks a routed member's preferred router (cluster/topology.py ``preferred_order``):
    unique per member of a zone, stable across restarts."""
    role = "global" if config.global_gateway else config.role
    return f"{role}/{config.zone}/{node_index(config)}/{worker}"


def member_config(config: NodeConfig, worker: int = 0) -> ClusterConfig:
    """The zenoh settings of worker ``worker`` (gateways use worker 0): a full-mesh peer, or with
    ``--cluster-mode routers`` a client of the zone's routers (``cluster/topology.py``)."""
    if config.cluster_mode == "routers":
        return router_client_config(config.secret, config.seeds, member_key(config, worker))
    port = config.cluster_port + worker if config.cluster_port else 0
    listen = endpoint(config.cluster_ip, port)
    seeds = list(config.seeds)
    if config.cluster_port:
        seeds += [endpoint(config.cluster_ip, config.cluster_port + j) for j in range(worker)]
    seeds = [s for s in dict.fromkeys(seeds) if s != listen]
    return ClusterConfig(config.secret, listen=[listen], seeds=seeds)
