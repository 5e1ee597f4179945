"""RTMP transcodes off the worker's loop: AAC -> Opus, the B-frame re-encode of H.264 and the
H.264 alternate of HEVC/AV1/VP9.

One :class:`OffLoop` thread per kind and worker (started by its first job): a bounded queue in
(``submit`` never blocks the loop: a full queue drops the job and counts it), the results of a
batch back to the loop with one ``call_soon_threadsafe``. The coders (PyAV, which releases the
GIL while it codes) live in the thread, one per stream key and generation; ``forget(key)`` drops
a finished publisher's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from trackmesh.transports.rtmp.aac_opus import AacToOpus
from trackmesh.transports.rtmp.bridge import TranscodeAudio, TranscodeVideo
from trackmesh.transports.rtmp.errors import RtmpError
from trackmesh.transports.rtmp.video_transcode import H264Reencoder, ReencodedFrame

__all__ = ["AudioCoders", "OffLoop", "VideoCoders"]

log = logging.getLogger("trackmesh.rtmp")

J = TypeVar("J")
R = TypeVar("R")
J_contra = TypeVar("J_contra", contravariant=True)


class Coders(Protocol[J_contra, R]):
    """The thread's side: code one job of ``key``; drop ``key``'s coders."""

    def handle(self, key: str, job: J_contra) -> list[R]: ...

    def forget(self, key: str) -> None: ...


class OffLoop(Generic[J, R]):
    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        coders: Coders[J, R],
        deliver: Callable[[list[tuple[str, R]]], None],
        counters: dict[str, int],
        prefix: str,
        maxsize: int,
    ) -> None:
        self._name = name
        self._loop = loop
        self._coders = coders
        self._deliver = deliver
        self._counters = counters
        self._dropped, self._errors, self._done = f"{prefix}_dropped", f"{prefix}_errors", f"{prefix}_frames"
        for counter in (self._dropped, self._errors, self._done):
            counters.setdefault(counter, 0)
        # (key, job), (key, None) to forget a finished publisher's coders, None to stop.
        self._jobs: queue.Queue[tuple[str, J | None] | None] = queue.Queue(maxsize)
        self._results: list[tuple[str, R]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, key: str, job: J) -> bool:
        """Queue a job; False (counted) when the queue is full."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        try:
            self._jobs.put_nowait((key, job))
        except queue.Full:
            self._counters[self._dropped] += 1
            return False
        return True

    def forget(self, key: str) -> None:
        """With a full queue the coders stay until the key publishes again: the loop never blocks."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._jobs.put_nowait((key, None))

    def stop(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._jobs.put_nowait(None)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            key, job = item
            if job is None:
                self._coders.forget(key)
                continue
            out: list[R] = []
            try:
                out = self._coders.handle(key, job)
            except RtmpError:
                self._counters[self._errors] += 1
            except Exception:
                # A codec library failing in a way we did not foresee must not end the thread (every
                # publisher of the worker would lose its transcode): count it, drop the key's coders.
                self._counters[self._errors] += 1
                if self._counters[self._errors] <= 10:
                    log.exception("rtmp %s failed on a frame of %s", self._name, key[:12])
                self._coders.forget(key)
            self._counters[self._done] += 1
            if not out:
                continue
            with self._lock:
                first = not self._results
                self._results.extend((key, r) for r in out)
            if first:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the worker stopped
                    self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._lock:
            results, self._results = self._results, []
        self._deliver(results)


class AudioCoders:
    """AAC -> Opus, one :class:`AacToOpus` per (key, generation, track). Results: (generation, ts48, packet)."""

    def __init__(self, bitrate: int) -> None:
        self.bitrate = bitrate
        self._coders: dict[tuple[str, int, int], tuple[bytes, AacToOpus]] = {}

    def handle(self, key: str, job: TranscodeAudio) -> list[tuple[int, int, bytes]]:
        ident = (key, job.generation, job.track_id)
        known = self._coders.get(ident)
        if known is None or known[0] != job.config:
            self.forget(key)  # an older generation's (or config's) coder goes
            known = self._coders[ident] = (job.config, AacToOpus(job.config, self.bitrate))
        return [(job.generation, ts, data) for ts, data in known[1].push(job.data, job.ts_ms)]

    def forget(self, key: str) -> None:
        for old in [k for k in self._coders if k[0] == key]:
            del self._coders[old]


class VideoCoders:
    """H.264 with B-frames -> without, or HEVC/AV1/VP9 -> H.264 (the alternate rendition; the
    driver gives it its own key), one :class:`H264Reencoder` per (key, generation).
    Results: (generation, frame)."""

    def __init__(self) -> None:
        self._coders: dict[tuple[str, int], H264Reencoder] = {}

    def handle(self, key: str, job: TranscodeVideo) -> list[tuple[int, ReencodedFrame]]:
        ident = (key, job.generation)
        coder = self._coders.get(ident)
        if coder is None or coder.source != job.source:
            self.forget(key)
            coder = self._coders[ident] = H264Reencoder(source=job.source)
        return [(job.generation, f) for f in coder.push(job.data, job.dts, job.pts, job.keyframe)]

    def forget(self, key: str) -> None:
        for old in [k for k in self._coders if k[0] == key]:
            del self._coders[old]
