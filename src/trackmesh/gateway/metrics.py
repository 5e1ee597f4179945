"""Prometheus exposition of a gateway: its routing counters and what it knows of the cluster (built per scrape).

A gateway runs no media worker, so the node exposition (``trackmesh.http.metrics``) has nothing to say about it;
operators still need to see how many requests it routed, how many it had to refuse, and which media nodes it believes
are healthy, because that belief is what routing decisions are made from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trackmesh import __version__
from trackmesh.http.exposition import Exposition
from trackmesh.http.metrics import add_http_metrics

if TYPE_CHECKING:
    from .api import GatewayApi


def render_gateway_metrics(gw: GatewayApi, now: float) -> tuple[str, str]:
    exp = Exposition()
    exp.gauge("trackmesh_info", "Build and role of this node", 1, {"version": __version__, "role": "gateway"})
    exp.gauge("trackmesh_ready", "1 when the gateway routes new sessions (GET /api/node/health)",
              1 if gw.readiness()[0] else 0)
    for name, value in sorted(gw.counters.items()):
        exp.counter(f"trackmesh_gateway_{name}", f"Gateway counter {name}", value)
    add_http_metrics(exp, gw.http_counters)
    gw.directory.expire(now)
    for entry in gw.directory.nodes.values():
        key = {"zone": str(entry.zone), "node": str(entry.node)}
        exp.gauge("trackmesh_gateway_node_healthy", "1 when the media node may get new sessions",
                  1 if entry.healthy else 0, key)
        exp.gauge("trackmesh_gateway_node_sessions", "Sessions the media node last reported", entry.sessions, key)
        exp.gauge("trackmesh_gateway_node_capacity", "Session capacity the media node last reported", entry.capacity,
                  key)
        exp.gauge("trackmesh_gateway_node_cpu_ratio", "CPU the media node last reported (1.0 = one core)",
                  entry.cpu / 100.0, key)
        exp.gauge("trackmesh_gateway_node_report_age_seconds", "Seconds since the node's last load report",
                  max(0.0, now - entry.seen), key)
    for name, link_value in gw.link_metrics().items():  # route events to the zone's connector
        exp.gauge("trackmesh_connector_link", "Events to the zone's connector: pending (queued, spilled or "
                  "unacknowledged), batches sent, resent and acknowledged, events spilled to disk or dropped",
                  link_value, {"what": name})
    exp.gauge("trackmesh_gateway_zones_known", "Other zones with a live gateway summary",
              len({z["zone"] for z in gw.zones.summary(now)}))
    return exp.render()
