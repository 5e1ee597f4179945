"""The recording thread: track recorders and their muxers, off the media worker's loop. A driver.

The worker's side only appends to a bounded queue (a ``deque``, whose ``append`` is atomic): no
lock, no wake-up, no I/O and no copy per packet. The queued :class:`MediaPacket` keeps its payload
view alive: receiving drivers allocate one immutable ``bytes`` per datagram (runtime/worker.py,
SRTP), so the view cannot change under the thread; a transport that published views of a reused
buffer would have to copy them first. When the queue holds :data:`QUEUE_MAX` packets, further
packets are dropped and counted (``recording_queue_drops``): the recorder sees the gap as loss
and resumes at the next key frame, and forwarding to viewers is never slowed. Track controls
(open, sender report, close) are never dropped.

The thread wakes every :data:`POLL_INTERVAL` (or at once on a control), runs the sans-IO
:class:`~.track.TrackRecorder` of each track on what arrived and writes its outputs with a
:class:`~.muxer.SegmentMuxer`. A file that cannot be written (disk full, permissions) fails that
track only: logged once, counted (``recording_failures``), its sidecar says ``failed``.

Counters live in the dict given at construction (the worker's, so /metrics shows them):
``recording_tracks`` (open now), ``recording_files``, ``recording_bytes``, ``recording_failures``,
``recording_queue_drops``, ``recording_skipped_frames``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from trackmesh.core.model import MediaPacket

from .clock import PeerClock
from .layout import file_stem, iso_time, write_sidecar
from .muxer import SegmentMuxer
from .track import Sample, SegmentEnd, SegmentStart, StartRefined, TrackRecorder

__all__ = ["POLL_INTERVAL", "QUEUE_MAX", "RecordingWriter", "TrackMeta"]

log = logging.getLogger("trackmesh.recording")

#: Packets the queue holds before it drops (about 8 s of one 2.5 Mbps video track).
QUEUE_MAX: Final = 20_000
#: How often the thread drains the queue (seconds): part of what a crash can lose.
POLL_INTERVAL: Final = 0.05
#: While a video track waits for a key frame, ask the publisher again this often (seconds); the
#: publisher side merges requests anyway (core.tracks: one per 300 ms).
KEYFRAME_RETRY: Final = 1.0

_PACKET, _OPEN, _SR, _CLOSE = range(4)

COUNTERS: Final = (
    "recording_tracks",
    "recording_files",
    "recording_bytes",
    "recording_failures",
    "recording_queue_drops",
    "recording_skipped_frames",
)


@dataclass(frozen=True, slots=True)
class TrackMeta:
    """What names a recorded track's files."""

    app: str
    room: str
    session: str
    peer: str
    track: str
    video: bool


@dataclass(eq=False)
class _Track:
    meta: TrackMeta
    recorder: TrackRecorder
    want_keyframe: Callable[[], None] | None = None
    muxer: SegmentMuxer | None = None
    info: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    skipped: int = 0
    keyframe_asked: float = -1e9


class RecordingWriter:
    """Owns the thread; every method except the thread's own is called from the worker's loop."""

    def __init__(
        self,
        root: Path,
        max_segment: float,
        counters: dict[str, int],
        wall_offset: float,
        on_file_done: Callable[[Path], None] | None = None,
    ) -> None:
        """``wall_offset`` turns a packet's monotonic ``arrival`` into wall-clock seconds;
        ``on_file_done(path)`` is called (on the recording thread) for each finalised file."""
        self.on_file_done = on_file_done
        self.root = root
        self.max_segment = max_segment
        self.counters = counters
        for name in COUNTERS:
            counters.setdefault(name, 0)
        self._wall_offset = wall_offset
        self._queue: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Thread-owned state.
        self._tracks: dict[Hashable, _Track] = {}
        self._peers: dict[tuple[str, str, str], PeerClock] = {}
        self._next_index: dict[tuple[str, ...], int] = {}

    # ---- the worker's side (never blocks) --------------------------------------------------------

    def open_track(self, key: Hashable, meta: TrackMeta, want_keyframe: Callable[[], None] | None = None) -> None:
        """Start recording track ``key``. ``want_keyframe()`` is called on the recording thread when
        the track waits for a key frame: it must only set a flag that the worker acts on."""
        self._start()
        self._control((_OPEN, key, meta, want_keyframe))

    def packet(self, key: Hashable, pkt: MediaPacket) -> None:
        queue = self._queue
        if len(queue) < QUEUE_MAX:
            queue.append((_PACKET, key, pkt))
        else:
            self.counters["recording_queue_drops"] += 1

    def sender_report(self, key: Hashable, arrival: float, spatial: int, rtp_ts: int, ntp64: int) -> None:
        self._queue.append((_SR, key, arrival, spatial, rtp_ts, ntp64))

    def close_track(self, key: Hashable, reason: str) -> None:
        self._control((_CLOSE, key, reason))

    def stop(self, timeout: float = 10.0) -> None:
        """Close every file (trailers written) and end the thread, waiting up to ``timeout``."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("recording thread did not finish within %.0f s", timeout)

    def _control(self, item: tuple[Any, ...]) -> None:
        self._queue.append(item)
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trackmesh-recording", daemon=True)
            self._thread.start()

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                self._timeouts(time.time())
            except Exception:
                self.counters["recording_failures"] += 1
                log.exception("recording thread error")
            if stopping:
                break
        for key in list(self._tracks):
            self._close(key, "node stopped")

    def _drain(self) -> None:
        queue = self._queue
        touched: set[Hashable] = set()
        offset = self._wall_offset
        while queue:
            item = queue.popleft()
            tag, key = item[0], item[1]
            if tag == _PACKET:
                track = self._tracks.get(key)
                if track is None or track.failed:
                    continue
                pkt: MediaPacket = item[2]
                track.recorder.on_packet(
                    pkt.arrival + offset, pkt.codec.name, pkt.seq, pkt.ts, pkt.marker, bytes(pkt.payload), pkt.spatial
                )
                touched.add(key)
            elif tag == _SR:
                track = self._tracks.get(key)
                if track is not None:
                    track.recorder.on_sender_report(item[2] + offset, item[3], item[4], item[5])
                    touched.add(key)
            elif tag == _OPEN:
                self._open(key, item[2], item[3])
            else:
                self._close(key, item[2])
        for key in touched:
            track = self._tracks.get(key)
            if track is not None:
                self._outputs(track)

    def _timeouts(self, now: float) -> None:
        for track in self._tracks.values():
            deadline = track.recorder.next_deadline()
            if deadline is not None and deadline <= now:
                track.recorder.handle_timeout(now)
                self._outputs(track)

    def _open(self, key: Hashable, meta: TrackMeta, want_keyframe: Callable[[], None] | None) -> None:
        if key in self._tracks:
            return
        clock = self._peers.setdefault((meta.room, meta.peer, meta.session), PeerClock())
        # A track republished in the same session continues its file numbering.
        name = (meta.app, meta.room, meta.session, meta.peer, meta.track)
        first = self._next_index.get(name, 0)
        recorder = TrackRecorder(meta.video, clock, self.max_segment, first_index=first)
        self._tracks[key] = _Track(meta, recorder, want_keyframe)
        self.counters["recording_tracks"] += 1

    def _close(self, key: Hashable, reason: str) -> None:
        track = self._tracks.pop(key, None)
        if track is None:
            return
        self.counters["recording_tracks"] -= 1
        if not track.failed:
            track.recorder.stop(time.time(), reason)
            self._outputs(track)
        meta = track.meta
        name = (meta.app, meta.room, meta.session, meta.peer, meta.track)
        self._next_index[name] = self._next_index.get(name, 0) + track.recorder.segments

    def _outputs(self, track: _Track) -> None:
        recorder = track.recorder
        while (out := recorder.poll()) is not None:
            if track.failed:
                continue
            try:
                if isinstance(out, Sample):
                    if track.muxer is not None:
                        track.muxer.write(out)
                        self.counters["recording_bytes"] += len(out.data)
                elif isinstance(out, SegmentStart):
                    self._begin(track, out)
                elif isinstance(out, StartRefined):
                    track.info.update(start_wall=out.start_wall, start_time=iso_time(out.start_wall), synced=True)
                    self._sidecar(track)
                elif isinstance(out, SegmentEnd):
                    self._end(track, out)
            except Exception as exc:
                self._fail(track, exc)
        if recorder.needs_keyframe and track.want_keyframe is not None and not track.failed:
            now = time.monotonic()
            if now - track.keyframe_asked >= KEYFRAME_RETRY:
                track.keyframe_asked = now
                track.want_keyframe()
        skipped = recorder.skipped_frames
        if skipped != track.skipped:
            self.counters["recording_skipped_frames"] += skipped - track.skipped
            track.skipped = skipped

    def _begin(self, track: _Track, start: SegmentStart) -> None:
        meta = track.meta
        stem = file_stem(self.root, meta.app, meta.room, meta.session, meta.peer, meta.track, start.index)
        path = stem.with_name(f"{stem.name}.{start.container}")
        path.parent.mkdir(parents=True, exist_ok=True)
        start_time = iso_time(start.start_wall)
        track.info = {
            "app": meta.app,
            "room": meta.room,
            "session": meta.session,
            "peer": meta.peer,
            "track": meta.track,
            "kind": "video" if meta.video else "audio",
            "codec": start.codec,
            "container": start.container,
            "index": start.index,
            "start_wall": start.start_wall,
            "start_time": start_time,
            "synced": start.synced,
            # What the file's own start_time tag says: the start as known when it opened (by arrival
            # when no sender report had come yet; start_time above is refined by the first one).
            "tagged_start_time": start_time,
            "opened_wall": time.time(),
            "status": "recording",
            "file": path.name,
        }
        metadata = {
            "title": f"{meta.room}/{meta.peer}/{meta.track}",
            "room": meta.room,
            "peer": meta.peer,
            "track": meta.track,
            "session": meta.session,
            "start_time": start_time,
            "creation_time": start_time,
            "encoder": "trackmesh",
        }
        track.muxer = SegmentMuxer(path, start, metadata)
        self.counters["recording_files"] += 1
        self._sidecar(track)
        log.info("recording file opened", extra={"fields": {"path": str(path), "codec": start.codec}})

    def _end(self, track: _Track, end: SegmentEnd) -> None:
        muxer = track.muxer
        track.muxer = None
        if muxer is None:
            return
        muxer.close()
        track.info.update(status="complete", duration=round(end.duration, 3), bytes=muxer.bytes, end_reason=end.reason)
        self._sidecar(track)
        if self.on_file_done is not None:
            self.on_file_done(muxer.path)

    def _sidecar(self, track: _Track) -> None:
        write_sidecar(self._path_of(track), track.info)

    def _path_of(self, track: _Track) -> Path:
        meta = track.meta
        stem = file_stem(self.root, meta.app, meta.room, meta.session, meta.peer, meta.track, track.info["index"])
        return stem.with_name(f"{stem.name}.{track.info['container']}")

    def _fail(self, track: _Track, exc: Exception) -> None:
        track.failed = True
        self.counters["recording_failures"] += 1
        meta = track.meta
        log.error(
            "recording failed; this track is no longer recorded",
            extra={"fields": {"room": meta.room, "peer": meta.peer, "track": meta.track, "error": str(exc)}},
        )
        muxer = track.muxer
        track.muxer = None
        if muxer is not None:
            with contextlib.suppress(Exception):
                muxer.close()
        if track.info:
            track.info.update(status="failed", error=str(exc))
            with contextlib.suppress(OSError):
                write_sidecar(self._path_of(track), track.info)
