"""RTMP ingest inside a media worker: the listener (``--rtmp-port``, worker i on PORT+i), the
stream-key check and each publisher's place in its room (docs/rtmp.md).

Thin glue between :class:`~.rtmp_listener.RtmpListener` (TCP, sessions) and the sans-IO
:class:`~trackmesh.transports.rtmp.bridge.RtmpPublisher` (one per stream key, a peer of its room):

- ``connect``: app ``live`` only. ``publish``: the stream key is a ``POST /token/rtmp`` token
  (kind ``rtmp``, room and peer, not expired); on a standalone node the room must live on this
  worker (the token's URL names its port). Refusals are an ``onStatus`` error the encoder logs
  (``NetStream.Publish.BadName``), then the close, and a log line with the reason.
- The same key publishing again takes the stream over: the old connection (half-open, or still
  sending) is closed and the publisher continues with the new one (no leave/join in the room). A
  publisher whose connection broke waits ``bridge.DEFAULT_LINGER`` seconds for that reconnect. Another
  key for a (room, peer) that is being published is refused.
- AAC -> Opus, the B-frame re-encode of H.264 (``--rtmp-bframes transcode``) and the H.264
  alternate of HEVC/AV1/VP9 (while a viewer cannot decode those) run in a thread each per worker
  (rtmp_transcode.py): bounded queues in, batches of results back to the loop; a full queue
  drops the job and counts it (a dropped video frame also drops the rest of its GOP).
  The loop never decodes or encodes media.
- Calls: ``rtmp.list``, ``rtmp.delete`` (``DELETE /rtmp/conn/<conn_id>``), counters ``rtmp_*`` in
  the worker's stats (so in /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from trackmesh.cluster.local import LocalRegistry
from trackmesh.cluster.worker_mesh import MeshRegistry
from trackmesh.core.errors import ControlError
from trackmesh.core.ids import SessionId
from trackmesh.core.registry import room_key
from trackmesh.rpc import RpcError
from trackmesh.security.tokens import TokenError, verify_for_app
from trackmesh.transports.rtmp.bridge import (
    EndPublish,
    Notice,
    PublisherSetupError,
    RtmpPublisher,
    StopAlternate,
    TranscodeAudio,
    TranscodeVideo,
)
from trackmesh.transports.rtmp.events import (
    AudioData,
    Closed,
    ConnectRequested,
    Event,
    PublishRequested,
    Unpublished,
    VideoData,
)
from trackmesh.transports.rtmp.video_transcode import ReencodedFrame

from .console_rpc import ConsoleRpc
from .recording import recording_of
from .rtmp_listener import RtmpConnection, RtmpListener
from .rtmp_transcode import AudioCoders, OffLoop, VideoCoders
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.rtmp")

APP = "live"
_METRIC_NAME = re.compile(r"[^a-z0-9]+")
AUDIO_QUEUE = 256  # AAC frames (about 6 s of one stream at 44.1 kHz)
VIDEO_QUEUE = 120  # access units (4 s of one 30 fps stream)
#: The video thread's key of a stream's H.264 alternate rendition (HEVC/AV1/VP9 -> H.264): the
#: stream key + this, so its coder lives beside the B-frame re-encoder's.
ALTERNATE_KEY = "#alt"


def room_worker(room: str, workers: int) -> int:
    """The worker of ``room`` on a standalone node (runtime/node.py ``Node.worker_for_room``)."""
    digest = hashlib.blake2b(room.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers


@dataclass(eq=False)
class _Entry:
    """One stream key's publisher and the connection feeding it now (None while it lingers)."""

    key: str
    publisher: RtmpPublisher
    conn: RtmpConnection | None = None
    stream_id: int = 0
    timer: _LingerTimer | None = None
    app: str = ""  # the app (tenant) of its stream key's token: the console lists it to that app only


@dataclass(eq=False)
class _ConnState:
    entry: _Entry | None = None
    generation: int = 0
    ended_here: bool = False  # the server ended it (DELETE, takeover, B-frames): no linger


class RtmpTransport:
    def __init__(self, runtime: WorkerRuntime, sock: socket.socket) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.counters = runtime.counters
        for name in (
            "rtmp_connections",
            "rtmp_publishes",
            "rtmp_refused",
            "rtmp_takeovers",
            "rtmp_publishers_finished",
            "rtmp_handler_errors",
        ):
            self.counters.setdefault(name, 0)
        for name in ("rtmp_sessions", "rtmp_publishers", "rtmp_video_transcodes_running", "rtmp_bytes_received"):
            self.counters.setdefault(name, 0)
        self.entries: dict[str, _Entry] = {}  # by token hash
        self.by_peer: dict[tuple[str, str], _Entry] = {}  # by (room key: app-scoped, peer)
        self.by_session: dict[SessionId, _Entry] = {}
        self.conns: dict[int, _ConnState] = {}
        # A standalone node's rooms live on the worker their name hashes to (with --room-spread only
        # their WHEP viewers spread: cluster/worker_mesh.py), so a publisher goes to that worker's port.
        self.local_rooms = isinstance(runtime.core.registry, LocalRegistry | MeshRegistry)
        loop = asyncio.get_running_loop()
        self.listener = RtmpListener(self)
        self._server_task = loop.create_task(self._serve(sock))
        self.audio_coder: OffLoop[TranscodeAudio, tuple[int, int, bytes]] = OffLoop(
            "rtmp-aac-opus", loop, AudioCoders(self.config.rtmp_opus_bitrate), self._on_opus, self.counters,
            "rtmp_audio_transcode", AUDIO_QUEUE,
        )  # fmt: skip
        self.video_coder: OffLoop[TranscodeVideo, tuple[int, ReencodedFrame]] = OffLoop(
            "rtmp-h264-reencode", loop, VideoCoders(), self._on_video, self.counters, "rtmp_video_transcode",
            VIDEO_QUEUE,
        )  # fmt: skip
        self._video_gap: set[str] = set()  # keys whose re-encoder lost a frame: skip to the next key frame
        runtime.services[RtmpTransport] = self
        runtime.register_rpc("rtmp.list", self.list_conns)
        runtime.register_rpc("rtmp.delete", self.delete)
        runtime.on_shutdown(self.shutdown)
        ConsoleRpc.of(runtime).others.append(RtmpSessions(self))  # the console's kick and end room

    async def _serve(self, sock: socket.socket) -> None:
        await self.listener.start_on(sock)

    # ---- listener events -----------------------------------------------------------------

    def on_event(self, conn: RtmpConnection, event: Event) -> None:
        now = self.runtime.now()
        try:
            self._on_event(now, conn, event)
        finally:
            if isinstance(event, VideoData | AudioData):
                self.counters["rtmp_bytes_received"] = self.listener.stats.bytes_received
            else:
                self._refresh_gauges()
            self.runtime.flush(now)

    def _refresh_gauges(self) -> None:
        """Gauges and the listener's counters, in the worker's counters (so in /metrics)."""
        c = self.counters
        stats = self.listener.stats
        c["rtmp_sessions"] = len(self.listener.connections)
        c["rtmp_publishers"] = len(self.entries)
        c["rtmp_video_transcodes_running"] = sum(
            1 for e in self.entries.values() if e.publisher.transcoding or e.publisher.alternate_running
        )
        c["rtmp_bytes_received"] = stats.bytes_received
        c["rtmp_connections_over_limit"] = stats.refused
        for kind, n in stats.errors.items():
            # Error kinds are a small fixed set (numbers are folded out by the listener).
            c["rtmp_error_" + (_METRIC_NAME.sub("_", kind.lower()).strip("_")[:48] or "other")] = n

    def _on_event(self, now: float, conn: RtmpConnection, event: Event) -> None:
        if isinstance(event, VideoData | AudioData):
            state = self.conns.get(conn.conn_id)
            entry = state.entry if state is not None else None
            if state is None or entry is None or entry.conn is not conn:
                return
            publisher = entry.publisher
            if isinstance(event, VideoData):
                publisher.video(now, state.generation, event.timestamp, event.payload)
            else:
                publisher.audio(now, state.generation, event.timestamp, event.payload)
            self._outputs(now, entry)
            self._paced(entry)
        elif isinstance(event, ConnectRequested):
            self.counters["rtmp_connections"] += 1
            self.conns[conn.conn_id] = _ConnState()
            if event.app != APP:
                self._refuse(conn, f"unknown app {event.app!r}: publish to rtmp://<host>/{APP}/<stream key>")
                conn.reject_connect(f"unknown app {event.app!r}; use {APP}")
            else:
                conn.accept_connect()
        elif isinstance(event, PublishRequested):
            self._on_publish(now, conn, event)
        elif isinstance(event, Unpublished):
            if not conn.session.closed:
                self._end(now, conn, clean=True)
        elif isinstance(event, Closed):
            state = self.conns.get(conn.conn_id)
            clean = state is not None and state.ended_here
            if not clean:
                clean = not event.error and event.reason != "connection lost"
            self._end(now, conn, clean=clean)
            self.conns.pop(conn.conn_id, None)

    def _refuse(self, conn: RtmpConnection, why: str) -> None:
        self.counters["rtmp_refused"] += 1
        log.info("rtmp publish refused", extra={"fields": {"conn": conn.conn_id, "peer": conn.peer, "reason": why}})

    def _on_publish(self, now: float, conn: RtmpConnection, event: PublishRequested) -> None:
        state = self.conns.setdefault(conn.conn_id, _ConnState())
        if state.entry is not None:
            conn.reject_publish(event.stream_id, "one publish per connection")
            return
        raw = event.stream_key.split("?", 1)[0]
        try:
            token = verify_for_app(self.runtime.token_key_of, raw, "rtmp", int(time.time()))
        except TokenError as exc:
            self._refuse(conn, f"stream key: {exc}")
            conn.reject_publish(event.stream_id, f"stream key refused: {exc}", "NetStream.Publish.BadName")
            return
        if token.room is None or token.peer is None:
            self._refuse(conn, "stream key names no room or peer")
            conn.reject_publish(event.stream_id, "stream key refused: it names no room or peer")
            return
        if self.local_rooms and room_worker(token.room, self.config.workers) != self.runtime.index:
            port = self.config.rtmp_listen_port + room_worker(token.room, self.config.workers)
            self._refuse(conn, f"room {token.room!r} publishes to port {port}")
            why = f"wrong port for this stream key: use the URL of POST /token/rtmp (port {port})"
            conn.reject_publish(event.stream_id, why)
            return
        key = hashlib.sha256(raw.encode()).hexdigest()
        entry = self.entries.get(key)
        holder = self.by_peer.get((room_key(token.app, token.room), token.peer))
        if holder is not None and holder is not entry:
            self._refuse(conn, f"peer {token.peer!r} of room {token.room!r} is published with another stream key")
            conn.reject_publish(event.stream_id, "this peer is already published with another stream key")
            return
        if entry is None:
            endpoint = self.runtime.core.create_endpoint(token.app)
            audit = self.runtime.core.audit
            if audit is not None:
                audit.connecting(now, endpoint.session, conn.peer[0] if conn.peer else "", token.app)
            try:
                publisher = RtmpPublisher(
                    now, endpoint, token.room, token.peer, bframes=self.config.rtmp_bframes, extra_data=token.extra_data
                )
            except PublisherSetupError as exc:
                self.runtime.core.close_endpoint(now, endpoint.session, "setup failed")
                if audit is not None:
                    audit.disconnected(now, endpoint.session, "setup failed")
                self._refuse(conn, str(exc))
                conn.reject_publish(event.stream_id, f"cannot join the room: {exc}")
                return
            if audit is not None:
                audit.connected(now, endpoint.session, conn.peer[0] if conn.peer else "")
            recording = recording_of(self.runtime)
            if token.record and recording is not None:
                # A record:true token (atm0s): every track this peer publishes is recorded.
                recording.record_peer(now, token.app, token.room, token.peer)
            entry = _Entry(key, publisher, app=token.app)
            self.entries[key] = entry
            self.by_peer[(room_key(token.app, token.room), token.peer)] = entry
            self.by_session[endpoint.session] = entry
            self.runtime.listen(endpoint.session, functools.partial(self._on_core_events, entry=entry))
            entry.timer = _LingerTimer(self, entry)
        old = entry.conn
        if old is not None and old is not conn:
            self.counters["rtmp_takeovers"] += 1
            old_state = self.conns.get(old.conn_id)
            if old_state is not None:
                old_state.ended_here = True
                old_state.entry = None  # its Closed must not end the publisher it no longer feeds
            log.info("rtmp takeover", extra={"fields": {"room": token.room, "peer": token.peer, "old": old.conn_id}})
            old.close("taken over by a new connection with the same stream key")
        entry.conn = conn
        entry.stream_id = event.stream_id
        state.entry = entry
        state.generation = entry.publisher.attach(now)
        self.counters["rtmp_publishes"] += 1
        conn.accept_publish(event.stream_id)
        log.info(
            "rtmp publishing",
            extra={"fields": {"room": token.room, "peer": token.peer, "conn": conn.conn_id, "from": conn.peer}},
        )

    def _end(self, now: float, conn: RtmpConnection, clean: bool) -> None:
        state = self.conns.get(conn.conn_id)
        entry = state.entry if state is not None else None
        if state is None or entry is None or entry.conn is not conn:
            return
        entry.conn = None
        state.entry = None
        entry.publisher.detach(now, state.generation, clean)
        self._reap(now, entry, "unpublished" if clean else "connection lost")
        if not entry.publisher.finished and entry.timer is not None:
            self.runtime.track(entry.timer)

    def _reap(self, now: float, entry: _Entry, reason: str) -> None:
        publisher = entry.publisher
        if not publisher.finished:
            return
        session = publisher.endpoint.session
        if self.entries.get(entry.key) is not entry:
            return
        del self.entries[entry.key]
        self.by_peer.pop((room_key(entry.app, publisher.room), publisher.peer), None)
        self.by_session.pop(session, None)
        self.runtime.core.close_endpoint(now, session, reason)
        audit = self.runtime.core.audit
        if audit is not None:
            audit.disconnected(now, session, reason)
        self.runtime.unlisten(session)
        self.audio_coder.forget(entry.key)
        self.video_coder.forget(entry.key)
        self.video_coder.forget(entry.key + ALTERNATE_KEY)
        self._video_gap.discard(entry.key)
        self._video_gap.discard(entry.key + ALTERNATE_KEY)
        if entry.timer is not None:
            self.runtime.untrack(entry.timer)
        self.counters["rtmp_publishers_finished"] += 1
        log.info(
            "rtmp publisher left",
            extra={
                "fields": {
                    "room": publisher.room,
                    "peer": publisher.peer,
                    "reason": reason,
                    **_nonzero(publisher.counters),
                }
            },
        )

    def _outputs(self, now: float, entry: _Entry) -> None:
        for item in entry.publisher.take_outputs():
            if isinstance(item, TranscodeAudio):
                self.audio_coder.submit(entry.key, item)
            elif isinstance(item, TranscodeVideo):
                key = entry.key + ALTERNATE_KEY if item.alternate else entry.key
                if item.keyframe:
                    self._video_gap.discard(key)
                if key not in self._video_gap and not self.video_coder.submit(key, item):
                    self._video_gap.add(key)  # the decoder cannot skip one frame of a GOP
            elif isinstance(item, StopAlternate):
                self.video_coder.forget(entry.key + ALTERNATE_KEY)
                self._video_gap.discard(entry.key + ALTERNATE_KEY)
                self._refresh_gauges()
            elif isinstance(item, EndPublish):
                conn = entry.conn
                if conn is not None and item.generation == entry.publisher.generation:
                    state = self.conns.get(conn.conn_id)
                    if state is not None:
                        state.ended_here = True
                    self._refuse(conn, item.description)
                    conn.session.end_publish(entry.stream_id, item.description, item.code)
                    conn.close(item.description)
            elif isinstance(item, Notice):
                p = entry.publisher
                log.warning("rtmp %s/%s: %s", p.room, p.peer, item.text)
                self._refresh_gauges()

    def _on_opus(self, results: list[tuple[str, tuple[int, int, bytes]]]) -> None:
        now = self.runtime.now()
        for key, (generation, ts48, data) in results:
            entry = self.entries.get(key)
            if entry is not None:
                entry.publisher.opus(now, generation, ts48, data)
        self.runtime.flush(now)

    def _on_video(self, results: list[tuple[str, tuple[int, ReencodedFrame]]]) -> None:
        now = self.runtime.now()
        for key, (generation, frame) in results:
            alternate = key.endswith(ALTERNATE_KEY)
            entry = self.entries.get(key[: -len(ALTERNATE_KEY)] if alternate else key)
            if entry is None:
                continue
            if alternate:
                entry.publisher.alternate_video(now, generation, frame.pts, frame.keyframe, frame.data)
            else:
                entry.publisher.transcoded_video(now, generation, frame.pts, frame.keyframe, frame.data)
            self._paced(entry)
        self.runtime.flush(now)

    def _paced(self, entry: _Entry) -> None:
        """A key frame's packets are held back (bridge pacing): the worker's timer releases them."""
        if entry.publisher.pacing and entry.timer is not None:
            self.runtime.track(entry.timer)

    def _on_core_events(self, now: float, *, entry: _Entry) -> None:
        entry.publisher.on_core_events(now)
        self._outputs(now, entry)  # StopAlternate, the alternate's Notice
        self._refresh_gauges()

    # ---- control calls -------------------------------------------------------------------

    def list_conns(self, now: float, params: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for entry in self.entries.values():
            p = entry.publisher
            conn = entry.conn
            out.append(
                {
                    "conn_id": p.endpoint.conn_id,
                    "session": str(p.endpoint.session),
                    "app": entry.app,
                    "worker": self.runtime.index,
                    "room": p.room,
                    "peer": p.peer,
                    "connected": conn is not None,
                    "remote": f"{conn.peer[0]}:{conn.peer[1]}" if conn is not None and conn.peer else None,
                    "counters": _nonzero(p.counters),
                }
            )
        return out

    def delete(self, now: float, params: dict[str, Any]) -> None:
        """End a publisher now, no linger (``reason``: the console's kick, else the API's delete)."""
        reason = str(params.get("reason") or "deleted by the operator")
        found = self.runtime.core.lookup(str(params.get("conn_id", "")))
        entry = None if isinstance(found, ControlError) else self.by_session.get(found.session)
        if entry is None:
            raise RpcError(404, "no such RTMP publisher on this node")
        conn = entry.conn
        entry.publisher.finished = True
        if conn is not None:
            state = self.conns.get(conn.conn_id)
            if state is not None:
                state.ended_here = True
                state.entry = None
            entry.conn = None
            with contextlib.suppress(Exception):
                conn.session.end_publish(entry.stream_id, "ended by the server operator", "NetStream.Publish.Unpublish")
            conn.close(reason)
        self._reap(now, entry, reason)

    def shutdown(self, now: float) -> None:
        for entry in list(self.entries.values()):
            conn = entry.conn
            entry.publisher.finished = True
            self._reap(now, entry, "node stopping")
            if conn is not None:
                conn.close("server shutting down")
        self.audio_coder.stop()
        self.video_coder.stop()
        self._server_task.cancel()
        self.listener.stop_serving()


class _LingerTimer:
    """A publisher's deadlines on the worker's one timer: its paced video packets, its linger."""

    __slots__ = ("entry", "transport")

    def __init__(self, transport: RtmpTransport, entry: _Entry) -> None:
        self.transport = transport
        self.entry = entry

    def next_deadline(self) -> float | None:
        return self.entry.publisher.next_deadline()

    def handle_timeout(self, now: float) -> None:
        publisher = self.entry.publisher
        publisher.handle_timeout(now)
        if publisher.finished:
            self.transport._reap(now, self.entry, "encoder did not reconnect")


def _nonzero(counters: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counters.items() if v}


def bind(runtime: WorkerRuntime) -> socket.socket | None:
    """The worker's RTMP socket, or None when RTMP is off (or its default port is taken)."""
    config = runtime.config
    base = config.rtmp_listen_port
    if not base:
        return None
    port = base + runtime.index
    host = config.node_ip
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if config.rtmp_port is None:
            log.warning(
                "RTMP ingest off on worker %d: cannot listen on %s:%d (%s); pass --rtmp-port to choose",
                runtime.index,
                host,
                port,
                exc.strerror,
            )
            return None
        raise RpcError(500, f"--rtmp-port: cannot listen on TCP {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    log.info("rtmp listening", extra={"fields": {"worker": runtime.index, "rtmp": f"rtmp://{host}:{port}/{APP}"}})
    return sock


def install(runtime: WorkerRuntime) -> None:
    sock = bind(runtime)
    if sock is not None:
        RtmpTransport(runtime, sock)


class RtmpSessions:
    """The console's view of RTMP publishers: a kick or a room end is ``onStatus
    NetStream.Publish.Unpublish`` and the TCP connection closed, no linger (as ``DELETE /rtmp/conn``)."""

    def __init__(self, rtmp: RtmpTransport) -> None:
        self.rtmp = rtmp

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        out = []
        for entry in self.rtmp.entries.values():
            if app is not None and entry.app != app:
                continue
            p, conn = entry.publisher, entry.conn
            remote = f"{conn.peer[0]}:{conn.peer[1]}" if conn is not None and conn.peer else None
            out.append({"app": entry.app, "session": int(p.endpoint.session), "room": p.room, "peer": p.peer,
                        "transport": "rtmp", "connected": conn is not None, "remote": remote})  # fmt: skip
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        entry = self.rtmp.by_session.get(SessionId(session))
        if entry is None:
            return False
        self.rtmp.delete(now, {"conn_id": entry.publisher.endpoint.conn_id, "reason": reason})
        return True
