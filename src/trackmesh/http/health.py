"""``/api/node/health``: liveness and readiness, for orchestration (Kubernetes probes) and load balancers.

- ``GET /api/node/health/live``: 200 while the process's event loop answers HTTP. A liveness probe
  that fails restarts the process, so this never depends on the cluster or on load.
- ``GET /api/node/health/ready``: 200 when the node takes new sessions, else 503 with the reason
  (draining, no media worker, no cluster seed reached...). A readiness probe that fails only takes
  the node out of rotation.
- ``GET /api/node/health``: both in one body, 200 when ready, else 503 (the status of the
  readiness), for the tools that were written against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

__all__ = ["add_health_routes"]


def add_health_routes(
    app: FastAPI, role: str, readiness: Callable[[], tuple[bool, str]], draining: Callable[[], bool]
) -> None:
    def body(data: dict[str, Any], status: int) -> JSONResponse:
        return JSONResponse({"status": True, "data": data}, status_code=status)

    @app.get("/api/node/health", tags=["node"], summary="Liveness and readiness of this node (503 when not ready)",
             responses={503: {"description": "not ready; data.reason says why"}})
    async def health() -> JSONResponse:
        ready, reason = readiness()
        return body({"live": True, "ready": ready, "reason": reason, "role": role, "draining": draining()},
                    200 if ready else 503)

    @app.get("/api/node/health/live", tags=["node"], summary="Liveness probe: 200 while the process answers")
    async def live() -> JSONResponse:
        return body({"live": True, "role": role}, 200)

    @app.get("/api/node/health/ready", tags=["node"], summary="Readiness probe: 200 when taking new sessions",
             responses={503: {"description": "not ready; data.reason says why"}})
    async def ready() -> JSONResponse:
        ok, reason = readiness()
        return body({"ready": ok, "reason": reason, "role": role, "draining": draining()}, 200 if ok else 503)
