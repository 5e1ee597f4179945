"""The worker call seam: how the HTTP layer reaches a media worker, and how a call fails.

Neutral ground between ``http/`` (which makes calls and maps failures to HTTP answers) and
``runtime/`` (whose workers serve them in process or over a pipe, ``runtime/handles.py``), so
neither imports the other for these two names. A call is ``(method, params)`` with picklable
params; the answer is any picklable value.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["RpcError", "WorkerHandle"]


class RpcError(Exception):
    """A control call that failed; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class WorkerHandle(Protocol):
    """One media worker as the node sees it: its index, its UDP port, calls and stop."""

    index: int
    udp_port: int

    async def call(self, method: str, params: dict[str, Any]) -> Any: ...

    async def stop(self, reason: str, timeout: float) -> None: ...
