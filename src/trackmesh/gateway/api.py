"""``GatewayApi``: what the gateway's HTTP app and metrics need from the gateway process.

``GatewayNode`` (gateway/node.py) satisfies it and composes the app (``GatewayNode.create_app``);
app.py and metrics.py see only this Protocol, so neither imports node.py.
"""

from __future__ import annotations

from typing import Any, Protocol

from trackmesh.config import NodeConfig
from trackmesh.core.audit import RouteAudit
from trackmesh.core.ids import ConnIdCodec, SessionIdGenerator

from .directory import NodeDirectory, ZoneDirectory

__all__ = ["GatewayApi"]


class GatewayApi(Protocol):
    @property
    def config(self) -> NodeConfig: ...

    @property
    def draining(self) -> bool: ...

    @property
    def started_at(self) -> float: ...

    @property
    def index(self) -> int:
        """This gateway's index in its zone."""
        ...

    @property
    def url(self) -> str:
        """This gateway's own HTTP URL, as other gateways reach it."""
        ...

    @property
    def directory(self) -> NodeDirectory:
        """The media nodes of this zone, from their load reports."""
        ...

    @property
    def zones(self) -> ZoneDirectory:
        """The other zones' gateway summaries."""
        ...

    @property
    def codec(self) -> ConnIdCodec: ...

    @property
    def route_audit(self) -> RouteAudit | None:
        """Where route events go (an event source on the link to the zone's connector); None: not reported."""
        ...

    def link_metrics(self) -> dict[str, float]:
        """The link to the zone's connector (runtime/connector_link.py ``metrics``)."""
        ...

    @property
    def route_ids(self) -> SessionIdGenerator:
        """Session ids of requests no media node took (route_report.py)."""
        ...

    @property
    def counters(self) -> dict[str, int]: ...

    @property
    def http_counters(self) -> dict[str, int]:
        """The HTTP server's limit counters (trackmesh.http.serving)."""
        ...

    @property
    def client(self) -> Any:
        """The HTTP client requests are proxied with (an ``httpx.AsyncClient`` once started)."""
        ...

    def now(self) -> float:
        """The clock load reports are stamped with (monotonic seconds)."""
        ...

    def readiness(self) -> tuple[bool, str]: ...

    def cluster_peers(self) -> int:
        """How many cluster peers this gateway's zenoh session sees (0 before it started)."""
        ...
