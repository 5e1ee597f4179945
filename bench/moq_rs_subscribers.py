"""N MoQ subscribers on moq-rs (moq-ffi: the Rust moq-dev stack, quinn, tokio) in one process.

The ``--clients moqrs`` side of bench/moq_fanout_e2e.py. It runs in the Python 3.12 ``.venv-moq``
(``moq`` from moq-rs 0.5.1, ``moq_ffi`` 0.4.18), without trackmesh. Usage::

    moq_rs_subscribers.py URL COUNT SECONDS

Each subscriber is its own ``moq.Client`` connection (raw QUIC: a ``moqt://`` URL, no WebSocket
fallback, no reconnect, certificate not verified: the relays' certificates are self-signed and
this is loopback). It waits for the broadcast ``bench/fanout`` (namespace ("bench", "fanout")) to
be announced, subscribes to its track ``video`` and reads every group's frames. Each frame's
payload starts with the publisher's STAMP (``>Qd``: sequence number, ``time.monotonic()`` send
time), read as bench/moq_fanout_e2e.py's aioquic subscribers read it.

Output, on stdout, as the aioquic subscribers': a line ``{"window": [start, end]}`` once every
subscriber has its first frame (or gave up), the window starting 1 s later; then, 2 s after the
window, one line with the result (see ``result()``). Datagram and ACK counts come from quinn's
connection statistics (packets received and sent); the largest datagram is not known (null).
When no subscriber gets a frame, the first line is ``{"error": "..."}`` instead: which step failed
for how many subscribers, and the first errors. Every step has a timeout, the setup a budget, and a
watchdog ends the process, so it never hangs. Dials run DIALING at a time (a Python relay given 200
handshakes at once let some time out).
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import threading
import time
from collections import Counter
from contextlib import AsyncExitStack, suppress
from typing import Any

BROADCAST = "bench/fanout"  # the namespace ("bench", "fanout") as a moq-lite broadcast path
TRACK = "video"
STAMP = struct.Struct(">Qd")  # sequence number, send time: bench/moq_fanout_e2e.py's
LATE = 0.200
MAX_LATENCIES = 20_000  # per subscriber, as the aioquic subscribers keep
SETUP_TIMEOUT = 15.0  # per step: connect, announcement, subscription (the first frame: SETUP_BUDGET)
STRAGGLERS = 2.0
DIALING = 8  # connections being set up at once
SETUP_BUDGET = 90.0  # every subscriber connected and given its first frame, or left out


class Subscriber:
    """One moq-rs session's counts over the window."""

    def __init__(self) -> None:
        self.client: Any = None
        self.step = "connect"  # the step it is in, or failed in
        self.error: str | None = None
        self.first_frame = asyncio.Event()
        self.window = (0.0, 0.0)
        self.received = 0  # frames sent in the window that arrived
        self.late = 0  # of them, more than LATE after their send time
        self.seen: set[int] = set()
        self.latencies: list[float] = []
        self.decode_errors = 0  # frames too short for a STAMP

    def frame(self, payload: bytes, now: float) -> None:
        if len(payload) < STAMP.size:
            self.decode_errors += 1
            return
        seq, sent = STAMP.unpack_from(payload)
        start, end = self.window
        if start <= sent < end:
            self.received += 1
            self.seen.add(seq)
            if now - sent > LATE:
                self.late += 1
            if len(self.latencies) < MAX_LATENCIES:
                self.latencies.append(now - sent)

    def stats(self) -> tuple[int, int, int] | None:
        """(packets received, bytes received, packets sent) of the QUIC connection, if known."""
        session = None if self.client is None else self.client.session
        if session is None:
            return None
        try:
            s = session.stats()
        except Exception:
            return None
        values = (s.packets_received, s.bytes_received, s.packets_sent)
        if any(v is None for v in values):
            return None
        return int(values[0]), int(values[1]), int(values[2])


async def read_group(sub: Subscriber, group: Any) -> None:
    with suppress(Exception):  # a group the relay or the publisher reset: its frames are lost
        while (frame := await group.read_frame()) is not None:
            now = time.monotonic()
            sub.frame(bytes(frame.payload), now)
            sub.first_frame.set()


async def run_subscriber(sub: Subscriber, url: str, stack: AsyncExitStack, dialing: asyncio.Semaphore) -> None:
    import moq  # here, not at the top: the counting above is tested without moq (in trackmesh's venv)

    try:
        client = moq.Client(url, tls_verify=False, websocket_enabled=False, reconnect=False)
        async with dialing:  # a few handshakes at a time: 200 at once outlast a Python relay's patience
            await asyncio.wait_for(stack.enter_async_context(client), SETUP_TIMEOUT)
        sub.client = client
        sub.step = "announcement"
        broadcast = await asyncio.wait_for(client.announced_broadcast(BROADCAST).available(), SETUP_TIMEOUT)
        sub.step = "subscribe"
        track = await asyncio.wait_for(broadcast.subscribe_track(TRACK), SETUP_TIMEOUT)
        sub.step = "first frame"
        readers: set[asyncio.Task[None]] = set()
        while (group := await track.recv_group()) is not None:  # arrival order: one reader per group
            task = asyncio.create_task(read_group(sub, group))
            readers.add(task)
            task.add_done_callback(readers.discard)
        sub.error = "the track ended"
    except TimeoutError:
        sub.error = f"timeout ({SETUP_TIMEOUT:g} s)"
    except Exception as exc:
        sub.error = f"{type(exc).__name__}: {exc}"


async def first_frame(sub: Subscriber, task: asyncio.Task[None]) -> None:
    """Until the subscriber has its first frame, or has failed (its task ended)."""
    frame = asyncio.create_task(sub.first_frame.wait())
    try:
        await asyncio.wait([frame, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        frame.cancel()


def setup_error(subs: list[Subscriber]) -> str:
    """Where the subscribers that got no frame stopped, and the first distinct errors."""
    stuck = Counter(s.step for s in subs if not s.first_frame.is_set())
    errors = sorted({f"{s.step}: {s.error}" for s in subs if s.error is not None})
    steps = ", ".join(f"{n} at {step}" for step, n in stuck.most_common())
    return f"no moq-rs subscriber got a frame ({steps}); errors: {errors[:3]}"


def result(subs: list[Subscriber], window: tuple[float, float], cpu: float, counts: list[int] | None) -> dict[str, Any]:
    """The result line, with the aioquic subscribers' keys (bench/moq_fanout_e2e.py)."""
    start, end = window
    latencies = sorted(x for s in subs for x in s.latencies)
    pct = {p: latencies[int(p / 100 * (len(latencies) - 1))] if latencies else None for p in (50, 99)}
    subscribed = [s for s in subs if s.first_frame.is_set()]
    return {
        "subscribed": len(subscribed),
        "errors": sorted({f"{s.step}: {s.error}" for s in subs if s.error is not None})[:3],
        "window": [start, end],
        "received": sum(s.received for s in subs),
        "late": sum(s.late for s in subs),
        "seqs": sorted(set().union(*(s.seen for s in subs))),
        "p50_ms": None if pct[50] is None else round(pct[50] * 1000, 1),
        "p99_ms": None if pct[99] is None else round(pct[99] * 1000, 1),
        "client_cpu_share": round(cpu / (end - start), 3),
        "decode_errors": sum(s.decode_errors for s in subs),
        "datagrams_in": None if counts is None else counts[0],
        "bytes_in": None if counts is None else counts[1],
        "packets_out": None if counts is None else counts[2],
        "largest_datagram": None,
    }


def total_counts(subs: list[Subscriber]) -> list[int] | None:
    """Sums of the connections' (packets received, bytes received, packets sent); None if any is unknown."""
    stats = [s.stats() for s in subs if s.client is not None]
    if not stats or any(x is None for x in stats):
        return None
    return [sum(x[i] for x in stats if x is not None) for i in range(3)]


def thread_cpu() -> dict[str, float]:
    """CPU seconds (utime + stime) of this process's threads, summed by thread name."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue
        name = head.split("(", 1)[1]
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def main(url: str, count: int, seconds: float) -> None:
    def progress(what: str) -> None:
        print(f"  subscribers (moq-rs): {what} at +{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    async with AsyncExitStack() as stack:
        subs = [Subscriber() for _ in range(count)]
        dialing = asyncio.Semaphore(DIALING)
        tasks = [asyncio.create_task(run_subscriber(s, url, stack, dialing)) for s in subs]
        # Every step has its timeout, and the whole setup its budget: who has no frame by then is out.
        waits = [asyncio.create_task(first_frame(s, t)) for s, t in zip(subs, tasks, strict=True)]
        await asyncio.wait(waits, timeout=SETUP_BUDGET)
        for w in waits:
            w.cancel()
        for s in subs:
            if not s.first_frame.is_set() and s.error is None:
                s.error = f"no frame within the setup budget ({SETUP_BUDGET:g} s)"
        ready = sum(s.first_frame.is_set() for s in subs)
        progress(f"{sum(s.client is not None for s in subs)} of {count} connected, {ready} have a frame")
        if not ready:
            emit({"error": setup_error(subs)})
            os._exit(1)
        start = time.monotonic() + 1.0
        end = start + seconds
        for s in subs:
            s.window = (start, end)
        emit({"window": [start, end]})
        cpu0, threads0 = time.process_time(), thread_cpu()  # every thread: tokio's and quinn's too
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        counts0 = total_counts(subs)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        counts1 = total_counts(subs)
        cpu, threads1 = time.process_time() - cpu0, thread_cpu()
        threads = {k: round((v - threads0.get(k, 0.0)) / seconds, 3) for k, v in threads1.items()}
        counts = None if counts0 is None or counts1 is None else [b - a for a, b in zip(counts0, counts1, strict=True)]
        await asyncio.sleep(STRAGGLERS)
        emit({**result(subs, (start, end), cpu, counts), "client_threads_cpu_share": threads})
        del tasks
        os._exit(0)  # closing 200 sessions gracefully can outlast the bench's patience


def watchdog(limit: float) -> None:
    """End the process after ``limit`` seconds whatever the event loop is doing."""

    def fire() -> None:
        time.sleep(limit)
        emit({"error": f"moq-rs subscribers: watchdog after {limit:g} s"})
        os._exit(2)

    threading.Thread(target=fire, daemon=True).start()


if __name__ == "__main__":
    url, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    # The Rust side's log on stderr: at "info", one line per session with the version it negotiated
    # (the bench counts them), which the Python API does not tell.
    import moq

    moq.log_level(os.environ.get("MOQ_BENCH_RS_LOG", "info"))
    watchdog(SETUP_BUDGET + 1 + seconds + STRAGGLERS + 30)
    asyncio.run(main(url, count, seconds))
