"""Microbenchmark of the receive side's TWCC bookkeeping (issue 19, lever 4).

Run with ``python bench/twcc_recorder.py``; prints microseconds per recorded packet for a
publisher at 1,000 packets a second with feedback every 50 ms (the default), in order, and
with 2 % of packets lost and 2 % arriving one place late; feedback building is included,
amortized over the packets it covers. Also prints the bytes allocated and kept per packet
between two feedbacks (tracemalloc). docs/benchmarks.md has the runs.
"""

from __future__ import annotations

import random
import time
import tracemalloc

from trackmesh.rtp.twcc import TwccRecorder

PACKETS = 50_000
INTERVAL_PACKETS = 50  # 50 ms at 1,000 packets a second


def trace(disorder: bool) -> list[int]:
    """Transport-wide sequence numbers as they arrive (16-bit, wrapping several times)."""
    rnd = random.Random(19)
    seqs = list(range(PACKETS))
    if disorder:
        for i in range(1, PACKETS):
            if rnd.random() < 0.02:
                seqs[i - 1], seqs[i] = seqs[i], seqs[i - 1]
        seqs = [s for s in seqs if rnd.random() >= 0.02]
    return [s & 0xFFFF for s in seqs]


def run(seqs: list[int]) -> float:
    rec = TwccRecorder(1, 2)
    record, handle = rec.record, rec.handle_timeout
    now = 1000.0
    start = time.thread_time()  # CPU time: a shared box's preemption is not counted
    for i, seq in enumerate(seqs):
        now += 0.001
        record(seq, now, 0x1234)
        if i % INTERVAL_PACKETS == 0:
            handle(now)
    return (time.thread_time() - start) / len(seqs)


def kept_per_packet() -> float:
    rec = TwccRecorder(1, 2)
    now = 1000.0
    for seq in range(100):  # allocate the ring (once per publisher) and warm up
        now += 0.001
        rec.record(seq, now)
    rec.handle_timeout(now + 1)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for seq in range(100, 100 + INTERVAL_PACKETS):
        now += 0.001
        rec.record(seq, now)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return grown / INTERVAL_PACKETS


def main() -> None:
    for name, disorder in (("in order", False), ("2 % lost, 2 % reordered", True)):
        seqs = trace(disorder)
        best = min(run(seqs) for _ in range(20))  # the least disturbed of 20 runs
        print(f"record + feedback, {name:<24} {best * 1e6:6.3f} us/packet")
    print(f"bytes kept per packet until feedback      {kept_per_packet():6.1f}")


if __name__ == "__main__":
    main()
