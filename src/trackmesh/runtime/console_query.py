"""The console role's reach into the cluster (docs/console.md, "The console role").

- Media nodes answer console queries on ``tm/console/<zone>/<node>`` (a zenoh queryable on the
  node's cluster session, so only members holding the cluster secret can ask). The query's
  payload is JSON ``{"op": "rooms"|"kick"|"end_room"|"mute"|"unmute", "app": ..., ...}`` (``"apps": "*"``:
  every app, the cluster secret's login; runtime/console_rpc.py); the node runs the op on
  its workers (runtime/console_rpc.py) and replies with one result per worker: the result, or
  ``{"error": message}`` for a worker that did not answer.
  ``recordings`` and ``recording_chunk`` are the node's own (:func:`node_op`): its recorded files of
  the app, and RECORDING_CHUNK raw bytes of one of them from ``offset`` (the console role streams a
  download chunk by chunk); a refused one is answered with ``reply_err`` ``{"error", "status"}``.
  ``record_start`` and ``record_stop`` go to the one worker of the room (as ``POST /api/record/*``:
  cluster-wide, runtime/recording.py), answered like the workers' ops with one result.
- Gateways and connectors, which send no load report, publish a status report every second on
  ``tm/status/<role>/<zone>/<index>`` (CPU, memory, health, their HTTP address): the console's
  zones view reads them with the media nodes' load reports (``tm/load/<zone>/<node>``).

The queryable's callback runs on a zenoh thread: it only hands the query to the event loop, which
replies when the workers have answered (a zenoh query may be answered from any thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import zenoh

from trackmesh.cluster.membership import REPORT_INTERVAL
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.recording.layout import list_recordings, recorded_file
from trackmesh.rpc import RpcError

log = logging.getLogger("trackmesh.console")

__all__ = ["CONSOLE_ROOT", "OPS", "STATUS_ROOT", "ConsoleQueryable", "CpuMeter", "StatusReporter", "rss_mb"]

CONSOLE_ROOT = "tm/console/"  # tm/console/<zone>/<node>: a media node's console queryable
STATUS_ROOT = "tm/status/"  # tm/status/<role>/<zone>/<index>: gateway and connector status reports
OPS = {"rooms": "console.rooms", "kick": "console.kick", "end_room": "console.end_room", "mute": "console.mute",
       "unmute": "console.unmute",
       # Start or stop recording a room: one worker of the node (the room's), cluster-wide decision.
       "record_start": "record.start", "record_stop": "record.stop",
       # The node's own (not its workers'): its recorded files, and a chunk of one (RECORDING_CHUNK bytes).
       "recordings": "node.recordings", "recording_chunk": "node.recording_chunk"}  # fmt: skip
RECORDING_CHUNK = 512 * 1024
MAX_QUERY_BYTES = 4096

CallWorkers = Callable[[str, dict[str, Any]], Awaitable[list[Any]]]
CallRoom = Callable[[str, str, dict[str, Any]], Awaitable[Any]]  # (room, method, params): the room's worker


def rss_mb() -> float:
    """This process's resident memory in MB (Linux), else its peak."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)


class CpuMeter:
    """CPU use of this process, in percent of one core, since the previous reading."""

    def __init__(self) -> None:
        self._at = (time.monotonic(), time.process_time())

    def percent(self) -> float:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._at
        self._at = (now, cpu)
        return round(100.0 * (cpu - cpu_then) / max(now - then, 1e-3), 1)


def parse_query(data: bytes) -> tuple[str, dict[str, Any]]:
    """(worker RPC method, params) of a console query; ValueError when malformed."""
    if len(data) > MAX_QUERY_BYTES:
        raise ValueError("query too large")
    try:
        obj = json.loads(data)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if not isinstance(obj, dict) or obj.get("op") not in OPS:
        raise ValueError("unknown op")
    params = {k: str(obj[k]) for k in ("app", "apps", "session", "room", "track", "path", "offset")
              if k in obj and obj[k] is not None}  # fmt: skip
    return OPS[str(obj["op"])], params


def encode_results(results: list[Any]) -> bytes:
    out = [{"error": r.message, "status": r.status} if isinstance(r, RpcError) else {"ok": r} for r in results]
    return json.dumps(out, separators=(",", ":")).encode()


def node_op(root: Path | None, method: str, params: dict[str, str]) -> bytes:
    """A node-level console op (blocking: file system). ``node.recordings``: the app's recorded files
    (of one room), as one result (``encode_results``); ``node.recording_chunk``: up to
    RECORDING_CHUNK raw bytes of one of them from ``offset`` (fewer at its end). RpcError when refused."""
    app = params.get("app", "")
    if method == "node.recordings":
        room = params.get("room")
        return encode_results([list_recordings(root, app, room) if root is not None else []])
    try:
        offset = int(params.get("offset", "0"))
    except ValueError:
        raise RpcError(400, "offset is not an integer") from None
    full = recorded_file(root, app, params.get("path", "")) if root is not None and offset >= 0 else None
    if full is None:
        raise RpcError(404, "no such recorded file of your app on this node")
    with open(full, "rb") as f:
        f.seek(offset)
        return f.read(RECORDING_CHUNK)


class ConsoleQueryable:
    """A media node's ``tm/console/<zone>/<node>`` queryable."""

    def __init__(self, session: zenoh.Session, zone: int, node: int, call_workers: CallWorkers,
                 loop: asyncio.AbstractEventLoop, record_dir: str | None = None,
                 call_room: CallRoom | None = None) -> None:  # fmt: skip
        self.key = f"{CONSOLE_ROOT}{zone}/{node}"
        self._call_room = call_room
        self._record_root = Path(record_dir) if record_dir else None
        self._call = call_workers
        self._loop = loop
        self._tasks: set[asyncio.Task[None]] = set()
        self.bad_queries = 0
        self._queryable = session.declare_queryable(self.key, self._on_query)

    def _on_query(self, query: zenoh.Query) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._spawn, query)

    def _spawn(self, query: zenoh.Query) -> None:
        task = asyncio.create_task(self._answer(query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, query: zenoh.Query) -> None:
        try:
            payload = query.payload.to_bytes() if query.payload is not None else b""
            try:
                method, params = parse_query(payload)
            except (ValueError, UnicodeDecodeError):
                self.bad_queries += 1
                query.reply_err(b'{"error":"malformed console query"}')
                return
            if method.startswith("node."):  # file system work: off the loop
                try:
                    query.reply(self.key, await asyncio.to_thread(node_op, self._record_root, method, params))
                except RpcError as exc:
                    query.reply_err(json.dumps({"error": exc.message, "status": exc.status}).encode())
                return
            if method.startswith("record."):  # the room's worker only: one recording session name
                results = [await self._record(method, params)]
                query.reply(self.key, encode_results(results))
                return
            results = await self._call(method, params)  # console.rooms: every transport's sessions
            query.reply(self.key, encode_results(results))
        except Exception:
            log.exception("console query failed")
        finally:
            with contextlib.suppress(Exception):
                query.drop()  # type: ignore[no-untyped-call]

    async def _record(self, method: str, params: dict[str, str]) -> Any:
        room = params.get("room", "")
        if not room or len(room) > 128:
            return RpcError(400, "room is required (at most 128 characters)")
        if self._call_room is None:
            return RpcError(404, "this node does not record")
        try:
            return await self._call_room(room, method, {"room": room, "app": params.get("app", "")})
        except RpcError as exc:
            return exc

    def close(self) -> None:
        undeclare(self._queryable)
        for task in self._tasks:
            task.cancel()


class StatusReporter:
    """Puts ``build()`` as JSON on ``key`` every second (a gateway's or connector's status report)."""

    def __init__(self, session: zenoh.Session, key: str, build: Callable[[], dict[str, Any]]) -> None:
        self._session = session
        self.key = key
        self._build = build
        self._task: asyncio.Task[None] | None = asyncio.create_task(self._run(), name="status-report")

    async def _run(self) -> None:
        while True:
            if not self._session.is_closed():
                try:
                    self._session.put(self.key, json.dumps(self._build()))
                except Exception:
                    log.exception("status report failed")
            await asyncio.sleep(REPORT_INTERVAL)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            if not self._session.is_closed():
                self._session.delete(self.key)


def status_report(role: str, zone: int, index: int, http: str, ready: bool, reason: str, cpu: float,
                  **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"role": role, "zone": zone, "node": index, "http": http, "ready": ready, "reason": reason,
            "cpu": cpu, "mem_mb": rss_mb(), "ts": time.time(), **extra}  # fmt: skip
