"""The uvicorn server of a node or gateway, with the limits of :mod:`.connection_guard` (slow and
too many connections, oversized heads) and :mod:`.request_limits` (authentication and body caps)."""

from __future__ import annotations

from typing import Any

import uvicorn

from trackmesh.config import NodeConfig

from .connection_guard import ConnectionGuard, HttpLimits, guarded_protocol
from .request_limits import RequestLimits, default_rules


def http_limits(config: NodeConfig) -> HttpLimits:
    return HttpLimits(
        header_timeout=config.http_header_timeout,
        body_timeout=config.http_body_timeout,
        max_per_ip=config.http_max_connections_per_ip,
    )


def server_config(app: Any, config: NodeConfig, counters: dict[str, int]) -> uvicorn.Config:
    """uvicorn's config for ``app`` behind the request limits; ``counters`` collects both layers'."""
    guard = ConnectionGuard(http_limits(config), counters)
    limited = RequestLimits(app, default_rules(), counters)
    return uvicorn.Config(
        limited,
        http=guarded_protocol(guard),
        h11_max_incomplete_event_size=guard.limits.max_head_bytes,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
