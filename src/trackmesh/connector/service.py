"""The connector's asyncio driver: ingest into SQL, deliver webhooks, keep metrics.

Runs in the node that hosts the connector (standalone: in process; ``trackmesh connector``: its
own process). It is off the media path: media workers hand events to a bounded in-memory
:class:`~trackmesh.connector.source.EventSource`, never await the database or a receiver.

- All database work runs on one thread (SQLite has one writer; ordering stays simple).
- :meth:`submit` returns once the batch is committed: that is the acknowledgement a source may
  forget its copy on.
- Delivery: one timer for the outbox core and the room-stop deadlines; each due attempt is
  POSTed with httpx (no redirects followed: a 3xx is a failed attempt, as is any non-2xx, a
  time-out or a refused connection); outcomes are written back to the outbox rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from . import storage
from .events import SourceEvent
from .ingest import Ingestor, IngestResult
from .outbox import Attempt, Delivered, GaveUp, Outbox, Outcome, RetryPolicy, RetryScheduled
from .signing import parse_secret

log = logging.getLogger("trackmesh.connector")
T = TypeVar("T")
INGEST_BATCH = 512


@dataclass(frozen=True)
class AppHooks:
    """Where an app's webhooks go and the secret they are signed with."""

    url: str | None
    secret: str  # whsec_...


class ConnectorService:
    def __init__(
        self,
        db_url: str,
        node: int,
        hooks_of: Callable[[str], AppHooks | None],
        policy: RetryPolicy | None = None,
        destroy_after: float = 120.0,
        max_in_flight: int = 32,
        clock: Callable[[], float] = time.time,
        hook_body: str = "json",
    ) -> None:
        self.db_url = db_url
        self.node = node
        self.hooks_of = hooks_of
        self.clock = clock
        self.outbox = Outbox(policy or RetryPolicy(), random.Random(), max_in_flight)
        self._destroy_after = destroy_after
        self._hook_body = hook_body
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="trackmesh-connector-db")
        self._engine: Any = None
        self.ingestor: Ingestor | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._ingest_lock = asyncio.Lock()
        self._keys_loaded: set[str] = set()
        self._stopping = False
        self.last_error = ""
        self._outcomes: list[Outcome] = []
        self._writer: asyncio.Task[None] | None = None
        self.counters = {"events_stored": 0, "events_duplicate": 0, "events_rejected": 0, "hook_errors": 0}

    # ---- lifecycle -----------------------------------------------------------------------

    async def _in_db(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def start(self) -> None:
        def open_db() -> Ingestor:
            engine = storage.open_engine(self.db_url)
            storage.migrate(engine)
            ing = Ingestor(engine, self.node, self._destroy_after, self._url_of, self._hook_body)
            ing.restore()
            return ing

        self.ingestor = await self._in_db(open_db)
        self._engine = self.ingestor.engine
        now = self.clock()
        pending = await self._in_db(lambda: _load(self.ingestor, now))  # type: ignore[arg-type]
        for d in pending:
            self._key_for(d.app)
            self.outbox.enqueue(d)
        self._client = httpx.AsyncClient(follow_redirects=False, timeout=self.outbox.policy.attempt_timeout)
        self._runner = asyncio.create_task(self._run(), name="connector")
        log.info("connector started", extra={"fields": {"db": _redact(self.db_url), "pending": len(pending)}})

    async def stop(self) -> None:
        # A flag and a wake-up, not cancel(): 3.11's wait_for can swallow a cancellation that
        # races with the event it waits for, and the runner would never end.
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            await self._runner
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._drain_outcomes()
        if self._client is not None:
            await self._client.aclose()
        if self._engine is not None:
            await self._in_db(self._engine.dispose)
        self._db.shutdown(wait=True)

    async def run_db(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the connector's database thread (the log API's queries)."""
        return await self._in_db(fn)

    @property
    def engine(self) -> Any:
        return self._engine

    # ---- input ---------------------------------------------------------------------------

    async def submit(self, batch: Sequence[SourceEvent]) -> IngestResult:
        """Store ``batch`` (duplicates by id are skipped) and queue its webhooks. Returns after
        the commit: the acknowledgement."""
        assert self.ingestor is not None, "start() first"
        ing = self.ingestor
        total = IngestResult()
        async with self._ingest_lock:
            for i in range(0, len(batch), INGEST_BATCH):
                chunk = list(batch[i : i + INGEST_BATCH])
                result = await self._in_db(ing.ingest, chunk, self.clock())
                self._queue(result, total)
        self._wake.set()
        return total

    def _queue(self, result: IngestResult, total: IngestResult) -> None:
        self.counters["events_stored"] += result.stored
        self.counters["events_duplicate"] += result.duplicates
        self.counters["events_rejected"] += result.rejected
        total.stored += result.stored
        total.duplicates += result.duplicates
        total.rejected += result.rejected
        total.deliveries.extend(result.deliveries)
        for d in result.deliveries:
            self._key_for(d.app)
            self.outbox.enqueue(d)

    # ---- the loop ------------------------------------------------------------------------

    def _url_of(self, app: str) -> str | None:
        hooks = self.hooks_of(app)
        return hooks.url if hooks is not None else None

    def _key_for(self, app: str) -> None:
        hooks = self.hooks_of(app)
        if hooks is not None and app not in self._keys_loaded:
            self.outbox.set_signing_key(app, parse_secret(hooks.secret))
            self._keys_loaded.add(app)

    def reload_keys(self) -> None:
        """Multi-tenancy changed the apps: look the signing keys up again."""
        apps = set(self._keys_loaded)
        self._keys_loaded.clear()
        for app in apps:
            self._key_for(app)

    async def _run(self) -> None:
        while not self._stopping:
            now = self.clock()
            self.outbox.handle_timeout(now)
            while (attempt := self.outbox.poll_transmit(now)) is not None:
                task = asyncio.create_task(self._post(attempt))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._collect_outcomes()
            assert self.ingestor is not None
            room_due = self.ingestor.next_deadline()
            if room_due is not None and room_due <= now:
                async with self._ingest_lock:
                    result = await self._in_db(self.ingestor.tick, self.clock())
                    self._queue(result, IngestResult())
                continue
            deadlines = [d for d in (self.outbox.next_deadline(), room_due) if d is not None]
            delay = max(0.0, min(deadlines) - self.clock()) if deadlines else 3600.0
            self._wake.clear()
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(delay, 3600.0)):
                    await self._wake.wait()

    async def _post(self, attempt: Attempt) -> None:
        assert self._client is not None
        status: int | None = None
        error = ""
        try:
            response = await self._client.post(attempt.url, content=attempt.body, headers=attempt.headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # a bad URL in an app list, say: a failed attempt, never a crash
            error = f"{type(exc).__name__}: {exc}"
        if status is None or not 200 <= status < 300:
            self.counters["hook_errors"] += 1
            self.last_error = error
            if attempt.attempt == 1 or attempt.attempt % 10 == 0:
                log.warning("webhook attempt failed", extra={"fields": {
                    "id": attempt.id, "attempt": attempt.attempt, "error": error}})
        self.outbox.handle_result(attempt.id, attempt.attempt, self.clock(), status if not error else None, error)
        self._wake.set()

    def _collect_outcomes(self) -> None:
        """Move the outbox's outcomes to the database writer without waiting for it: the
        delivery loop never waits on the database (a slow commit must not delay the next POST)."""
        while (o := self.outbox.poll_event()) is not None:
            self._outcomes.append(o)
            if isinstance(o, GaveUp):
                log.error("webhook given up", extra={"fields": {"id": o.id, "attempts": o.attempts, "error": o.error}})
        if self._outcomes and (self._writer is None or self._writer.done()):
            self._writer = asyncio.create_task(self._write_outcomes())

    async def _write_outcomes(self) -> None:
        while self._outcomes and self._engine is not None:
            outcomes, self._outcomes = self._outcomes, []
            try:
                await self._in_db(_write_outcomes, self._engine, outcomes, self.clock())
            except Exception:
                # The rows stay pending: after a restart they are sent again (same id), never lost.
                log.exception("cannot record webhook outcomes")

    async def _drain_outcomes(self) -> None:
        """At stop: write every outcome still in memory."""
        self._collect_outcomes()
        if self._writer is not None:
            await self._writer

    # ---- metrics -------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        box = self.outbox
        return {
            "queued": box.queued,
            "in_flight": box.in_flight,
            "delivered": box.delivered,
            "retried": box.retried,
            "gave_up": box.gave_up,
            "attempts": box.attempts,
            "oldest_undelivered_age_s": round(box.oldest_age(self.clock()), 3),
            **{k: float(v) for k, v in self.counters.items()},
        }


def _write_outcomes(engine: Any, outcomes: list[Outcome], now: float) -> None:
    with engine.begin() as conn:
        for o in outcomes:
            if isinstance(o, Delivered):
                storage.mark_delivered(conn, o.seq, o.attempts, now)
            elif isinstance(o, RetryScheduled):
                storage.mark_retry(conn, o.seq, o.attempts, o.next_at, o.error)
            elif isinstance(o, GaveUp):
                storage.mark_failed(conn, o.seq, o.attempts, o.error, now)


def _load(ing: Ingestor, now: float) -> list[Any]:
    with ing.engine.connect() as conn:
        return list(storage.load_pending(conn, now))


def _redact(url: str) -> str:
    """A database URL for logs: without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(storage.normalise_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable url>"
