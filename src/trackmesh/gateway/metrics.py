"""Prometheus exposition of a gateway: its routing counters and what it knows of the cluster (built per scrape).

A gateway runs no media worker, so the node exposition (``trackmesh.http.metrics``) has nothing to say about it;
operators still need to see how many requests it routed, how many it had to refuse, and which media nodes it believes
are healthy, because that belief is what routing decisions are made from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trackmesh import __version__

if TYPE_CHECKING:
    from .api import GatewayApi


def render_gateway_metrics(gw: GatewayApi, now: float) -> tuple[str, str]:
    registry = CollectorRegistry()
    Gauge("trackmesh_info", "Build and role of this node", ["version", "role"], registry=registry).labels(
        __version__, "gateway"
    ).set(1)
    for name, value in sorted(gw.counters.items()):
        Gauge(f"trackmesh_gateway_{name}_total", f"Gateway counter {name}", registry=registry).set(value)
    for name, value in sorted(gw.http_counters.items()):  # the HTTP limits (trackmesh.http.serving)
        Gauge(f"trackmesh_{name}_total", f"HTTP limit counter {name}", registry=registry).set(value)
    gw.directory.expire(now)
    labels = ["zone", "node"]
    healthy = Gauge("trackmesh_gateway_node_healthy", "1 when the media node may get new sessions", labels,
                    registry=registry)  # fmt: skip
    sessions = Gauge("trackmesh_gateway_node_sessions", "Sessions the media node last reported", labels,
                     registry=registry)  # fmt: skip
    capacity = Gauge("trackmesh_gateway_node_capacity", "Session capacity the media node last reported", labels,
                     registry=registry)  # fmt: skip
    cpu = Gauge("trackmesh_gateway_node_cpu_percent", "CPU the media node last reported", labels, registry=registry)
    age = Gauge("trackmesh_gateway_node_report_age_seconds", "Seconds since the node's last load report", labels,
                registry=registry)  # fmt: skip
    for entry in gw.directory.nodes.values():
        key = (str(entry.zone), str(entry.node))
        healthy.labels(*key).set(1 if entry.healthy else 0)
        sessions.labels(*key).set(entry.sessions)
        capacity.labels(*key).set(entry.capacity)
        cpu.labels(*key).set(entry.cpu)
        age.labels(*key).set(max(0.0, now - entry.seen))
    Gauge("trackmesh_gateway_zones_known", "Other zones with a live gateway summary", registry=registry).set(
        len({z["zone"] for z in gw.zones.summary(now)})
    )
    return generate_latest(registry).decode(), CONTENT_TYPE_LATEST
