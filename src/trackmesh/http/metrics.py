"""Prometheus exposition of the node's and its workers' counters (built per scrape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trackmesh import __version__

if TYPE_CHECKING:
    from trackmesh.runtime.node import Node


def render_metrics(node: Node, stats: list[dict[str, Any]]) -> tuple[str, str]:
    registry = CollectorRegistry()
    Gauge("trackmesh_info", "Build and role of this node", ["version", "role"], registry=registry).labels(
        __version__, node.config.role
    ).set(1)
    endpoints = Gauge("trackmesh_endpoints", "Live endpoints (connections)", ["worker"], registry=registry)
    rooms = Gauge("trackmesh_rooms", "Rooms with endpoints on this worker", ["worker"], registry=registry)
    counters: dict[str, Gauge] = {}
    for st in stats:
        if "error" in st:
            continue
        worker = str(st["worker"])
        endpoints.labels(worker).set(st["endpoints"])
        rooms.labels(worker).set(st["rooms"])
        for name, value in st["counters"].items():
            gauge = counters.get(name)
            if gauge is None:
                gauge = counters[name] = Gauge(
                    f"trackmesh_{name}_total", f"Worker counter {name}", ["worker"], registry=registry
                )
            gauge.labels(worker).set(value)
    connector = getattr(node, "connector", None)
    if connector is not None:
        hooks = Gauge("trackmesh_connector", "Connector: webhooks queued, delivered, retried, given up; events "
                      "stored; oldest undelivered age in seconds", ["what"], registry=registry)
        for name, value in connector.metrics().items():
            hooks.labels(name).set(value)
    return generate_latest(registry).decode(), CONTENT_TYPE_LATEST
