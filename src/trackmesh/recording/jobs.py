"""Compose jobs of a node (``POST /api/record/compose``): one ``trackmesh record compose`` process
each, one at a time, their status kept in memory. A driver.

The composition runs in a child process (``python -m trackmesh.cli.main record compose ...
--progress json``), never in the node: it is CPU work for minutes, and the node's loop and workers
must stay responsive. The child prints one JSON line per progress step and a last line with its
result; the job reads them. Jobs run one after the other (a queue), with the child's priority
lowered (``nice`` 10) so that media forwarding keeps the CPU it needs. The last :data:`KEEP` jobs
are remembered (not across a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = ["ComposeJob", "ComposeJobs"]

log = logging.getLogger("trackmesh.recording.jobs")

KEEP: Final = 100
_STDERR_KEEP: Final = 2000


@dataclass
class ComposeJob:
    id: str
    app: str
    path: str  # as asked, relative to --record-dir
    folder: Path
    output: Path
    options: dict[str, Any]
    status: str = "queued"  # queued, running, completed, failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: float = 0.0
    total: float = 0.0
    error: str | None = None
    result: dict[str, Any] | None = None
    output_rel: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "status": self.status,
            "progress": round(self.done / self.total, 4) if self.total else float(self.status == "completed"),
            "done_seconds": round(self.done, 3),
            "total_seconds": round(self.total, 3),
            "output": self.output_rel,
            "options": self.options,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "result": self.result,
        }


class ComposeJobs:
    """The node's compose jobs. ``on_event(kind, job)`` is told ``started``, ``completed`` and
    ``failed`` (the connector's hook events), and must not raise."""

    def __init__(self, root: Path, on_event: Callable[[str, ComposeJob], None] | None = None) -> None:
        self.root = root
        self.on_event = on_event
        self._jobs: OrderedDict[str, ComposeJob] = OrderedDict()
        self._queue: asyncio.Queue[ComposeJob] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    def get(self, job_id: str, app: str) -> ComposeJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.app == app else None

    def submit(self, app: str, path: str, folder: Path, output: Path, options: dict[str, Any]) -> ComposeJob:
        job = ComposeJob(secrets.token_hex(8), app, path, folder, output, options)
        job.output_rel = str(output.relative_to(self.root)) if output.is_relative_to(self.root) else str(output)
        self._jobs[job.id] = job
        while len(self._jobs) > KEEP:
            oldest = next(iter(self._jobs.values()))
            if oldest.status in ("queued", "running"):
                break
            self._jobs.popitem(last=False)
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(job)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run_all(), name="compose-jobs")
        return job

    async def close(self) -> None:
        """Stop the running job's process (its partial output is removed by the child or left
        as ``*.part``), forget the queue."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run_all(self) -> None:
        assert self._queue is not None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            try:
                await self._run(job)
            except Exception as exc:  # never lose the runner: the job fails, the next one runs
                log.exception("compose job failed to run", extra={"fields": {"job": job.id}})
                self._finish(job, "failed", f"{type(exc).__name__}: {exc}")

    def _tell(self, kind: str, job: ComposeJob) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, job)
            except Exception:  # an event sink must not break the job
                log.exception("compose event sink failed")

    def _finish(self, job: ComposeJob, status: str, error: str | None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        self._tell(status, job)
        log.info("compose job %s", status, extra={"fields": {"job": job.id, "path": job.path, "error": error}})

    async def _run(self, job: ComposeJob) -> None:
        job.status, job.started = "running", time.time()
        self._tell("started", job)
        log.info("compose job started", extra={"fields": {"job": job.id, "path": job.path}})
        args = [sys.executable, "-m", "trackmesh.cli.main", "record", "compose", str(job.folder),
                "-o", str(job.output), "--progress", "json"]  # fmt: skip
        for name in ("width", "height", "fps"):
            if job.options.get(name) is not None:
                args += [f"--{name}", str(job.options[name])]
        if os.name == "posix" and Path("/usr/bin/nice").exists():
            args = ["/usr/bin/nice", "-n", "10", *args]
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.ensure_future(proc.stderr.read())
        async for raw in proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            if "done" in line:
                job.done, job.total = float(line["done"]), float(line["total"])
            elif isinstance(line.get("result"), dict):
                job.result = line["result"]
        rc = await proc.wait()
        err = (await stderr_task).decode(errors="replace").strip()[-_STDERR_KEEP:]
        self._proc = None
        if rc == 0 and job.result is not None:
            job.result["output"] = job.output_rel
            self._finish(job, "completed", None)
        else:
            message = err.splitlines()[-1] if err else f"exit code {rc}"
            message = message.removeprefix("trackmesh record: ").replace(str(self.root) + os.sep, "")
            self._finish(job, "failed", message)
