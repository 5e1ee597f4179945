"""uvicorn's HTTP/1.1 protocol with logs that name the client: "Invalid HTTP request received"
and friends come with ``client=<ip:port>`` under the ``trackmesh.http`` logger."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("trackmesh.http")


class ClientLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``trackmesh.http`` with the client's address in every record's fields."""

    def __init__(self, client: str) -> None:
        super().__init__(log, {})
        self.client = client

    @property
    def level(self) -> int:  # uvicorn compares its logger's level with TRACE before tracing
        return int(self.logger.level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra["fields"] = {"client": self.client, **extra.get("fields", {})}
        kwargs["extra"] = extra
        return msg, kwargs


class ClientLoggingH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = self.client
        self.logger = ClientLog(f"{client[0]}:{client[1]}" if client else "unknown")  # type: ignore[assignment]
