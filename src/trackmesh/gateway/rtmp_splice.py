"""The zone gateway's RTMP port: each encoder's TCP connection spliced to a media node.

Encoders need one URL for the whole zone (docs/rtmp.md): ``rtmp://<gateway>:<--rtmp-port>/live/<key>``.
The gateway does not speak RTMP: it accepts the connection, picks the healthiest media node of
its zone whose load report names an RTMP address (``"rtmp": "host:port"``), connects to it and
copies bytes both ways until either side closes. The stream key is checked by the media node (so
a refusal's onStatus reaches the encoder as usual). In a cluster any media worker can take any
room (the registry and channels are the cluster's), so the least-loaded node is always right.

A takeover (the same key reconnecting) still works when both connections land on the same node;
on different nodes each node sees one publisher with the key (a known limit, in docs/rtmp.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from .directory import NodeEntry

__all__ = ["RtmpSplice"]

log = logging.getLogger("trackmesh.gateway")
CONNECT_TIMEOUT = 3.0
READ = 65536


class Nodes(Protocol):
    def candidates(self, now: float) -> list[NodeEntry]: ...


def rtmp_address(entry: NodeEntry) -> tuple[str, int] | None:
    """A media node's RTMP listener from its load report, or None (RTMP off, or a bad value)."""
    value = entry.raw.get("rtmp")
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        return None
    return host.strip("[]"), int(port)


class RtmpSplice:
    def __init__(
        self, directory: Nodes, now: Callable[[], float], counters: dict[str, int], max_connections: int = 1000
    ) -> None:
        self.directory = directory
        self._now = now
        self.counters = counters
        self.max_connections = max_connections
        for name in ("rtmp_spliced", "rtmp_no_node", "rtmp_node_unreachable", "rtmp_over_limit", "rtmp_bytes"):
            counters.setdefault(name, 0)
        self.open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accepted, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._splice(reader, writer)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= self.max_connections:
            self.counters["rtmp_over_limit"] += 1
            return
        targets = [a for e in self.directory.candidates(self._now()) if (a := rtmp_address(e)) is not None]
        if not targets:
            self.counters["rtmp_no_node"] += 1
            log.info("rtmp connection refused: no media node of this zone takes RTMP")
            return
        for host, port in targets[:2]:
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            except (OSError, TimeoutError):
                self.counters["rtmp_node_unreachable"] += 1
                continue
            break
        else:
            return
        self.counters["rtmp_spliced"] += 1
        self.open += 1
        try:
            down = asyncio.ensure_future(self._pipe(reader, up_writer))
            up = asyncio.ensure_future(self._pipe(up_reader, writer))
            _, pending = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        finally:
            self.open -= 1
            up_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(READ):
                self.counters["rtmp_bytes"] += len(data)
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
