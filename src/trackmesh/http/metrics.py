"""Prometheus exposition of the node's and its workers' counters (built per scrape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trackmesh import __version__

if TYPE_CHECKING:
    from trackmesh.security.throttle import FailureThrottle

    from .api import NodeApi


def render_metrics(
    node: NodeApi, stats: list[dict[str, Any]], auth: FailureThrottle | None = None
) -> tuple[str, str]:
    registry = CollectorRegistry()
    if auth is not None:
        add_auth_metrics(registry, auth)
    Gauge("trackmesh_info", "Build and role of this node", ["version", "role"], registry=registry).labels(
        __version__, node.config.role
    ).set(1)
    endpoints = Gauge("trackmesh_endpoints", "Live endpoints (connections)", ["worker"], registry=registry)
    rooms = Gauge("trackmesh_rooms", "Rooms with endpoints on this worker", ["worker"], registry=registry)
    lag = Gauge("trackmesh_loop_lag_seconds",
                "Worst lateness of the worker's timer over the last 10-20 s (event-loop lag)", ["worker"],
                registry=registry)
    lag_total = Gauge("trackmesh_loop_lag_seconds_total", "Summed lateness of the worker's timer", ["worker"],
                      registry=registry)
    fires = Gauge("trackmesh_timer_fires_total", "Times the worker's timer fired", ["worker"], registry=registry)
    counters: dict[str, Gauge] = {}
    for st in stats:
        if "error" in st:
            continue
        worker = str(st["worker"])
        endpoints.labels(worker).set(st["endpoints"])
        rooms.labels(worker).set(st["rooms"])
        if "loop_lag" in st:
            lag.labels(worker).set(st["loop_lag"]["recent_max_s"])
            lag_total.labels(worker).set(st["loop_lag"]["late_total_s"])
            fires.labels(worker).set(st["loop_lag"]["timer_fires"])
        for name, value in st["counters"].items():
            gauge = counters.get(name)
            if gauge is None:
                gauge = counters[name] = Gauge(
                    f"trackmesh_{name}_total", f"Worker counter {name}", ["worker"], registry=registry
                )
            gauge.labels(worker).set(value)
    connector = node.connector
    if connector is not None:
        hooks = Gauge("trackmesh_connector", "Connector: webhooks queued, delivered, retried, given up; events "
                      "stored; oldest undelivered age in seconds", ["what"], registry=registry)
        for name, value in connector.metrics().items():
            hooks.labels(name).set(value)
    link = node.link_metrics()
    if link:
        gauge = Gauge("trackmesh_connector_link", "Events to the zone's connector: pending (queued, spilled or "
                      "unacknowledged), batches sent, resent and acknowledged, events spilled to disk or dropped",
                      ["what"], registry=registry)
        for name, value in link.items():
            gauge.labels(name).set(value)
    moq = getattr(node, "moq", None)  # runtime/moq_listener.py, when --moq-port is not 0
    if moq is not None:
        gauge = Gauge("trackmesh_moq", "Media over QUIC: sessions, relay namespaces/tracks/subscriptions and "
                      "counters (*_total) of sessions, refusals, objects and streams", ["what"], registry=registry)
        for name, value in moq.metrics().items():
            gauge.labels(name).set(value)
    for name, value in node.http_counters.items():
        Gauge(f"trackmesh_{name}_total", f"HTTP limit counter {name}", registry=registry).set(value)
    return generate_latest(registry).decode(), CONTENT_TYPE_LATEST


def add_auth_metrics(registry: CollectorRegistry, auth: FailureThrottle) -> None:
    Gauge(
        "trackmesh_auth_failures_total", "Wrong app secrets presented (POST /token/*)", registry=registry
    ).set(auth.failures)
    Gauge(
        "trackmesh_auth_throttled_total", "Requests refused with 429 (too many wrong app secrets)", registry=registry
    ).set(auth.throttled)
    Gauge("trackmesh_auth_throttled_sources", "Client addresses with a failed-secret bucket", registry=registry).set(
        len(auth)
    )
