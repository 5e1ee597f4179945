"""The sans-IO outbox on a virtual clock: order per room, backoff, give-up, a 6-hour outage."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.connector import signing
from trackmesh.connector.outbox import Attempt, Delivered, Delivery, GaveUp, Outbox, RetryPolicy, RetryScheduled

KEY = signing.parse_secret(signing.derived_secret("app-secret"))
T0 = 1_800_000_000.0


def make(policy: RetryPolicy | None = None, seed: int = 1, max_in_flight: int = 32) -> Outbox:
    box = Outbox(policy or RetryPolicy(), random.Random(seed), max_in_flight)
    box.set_signing_key("", KEY)
    return box


def delivery(seq: int, room: str, now: float = T0) -> Delivery:
    return Delivery(f"evt_{seq}", seq, room, "", "http://127.0.0.1/hook", f'{{"n":{seq}}}'.encode(), now, 0, now)


class Receiver:
    """A virtual receiver: answers attempts by ``answer(now, attempt)`` and records deliveries."""

    def __init__(self, answer: Callable[[float, Attempt], int | None]) -> None:
        self.answer = answer
        self.seen: list[tuple[float, Attempt]] = []
        self.accepted: list[str] = []


def run(box: Outbox, rx: Receiver, now: float, until: float) -> float:
    """Drive the outbox like its driver does, jumping the clock from deadline to deadline."""
    while now <= until:
        while (att := box.poll_transmit(now)) is not None:
            assert signing.verify(KEY, att.id, att.headers["webhook-timestamp"], att.headers["webhook-signature"],
                                  att.body, int(now))
            rx.seen.append((now, att))
            status = rx.answer(now, att)
            if status is not None:
                if 200 <= status < 300:
                    rx.accepted.append(att.id)
                box.handle_result(att.id, att.attempt, now, status)
        box.handle_timeout(now)
        deadline = box.next_deadline()
        if deadline is None or deadline > until:
            return until if deadline is not None else now
        now = max(now, deadline)
    return now


def test_first_four_attempts_within_a_minute_then_give_up_after_retry_for() -> None:
    box = make(RetryPolicy(retry_for=3600.0))
    box.enqueue(delivery(1, "r"))
    rx = Receiver(lambda now, att: 500)
    run(box, rx, T0, T0 + 7200)
    times = [t - T0 for t, _ in rx.seen]
    assert times[3] < 60.0, times[:4]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] == 3600.0  # the last attempt at the deadline
    assert box.gave_up == 1 and box.queued == 0
    assert {att.id for _, att in rx.seen} == {"evt_1"}
    assert {att.body for _, att in rx.seen} == {b'{"n":1}'}
    # Each attempt is signed afresh with its own time.
    assert [att.headers["webhook-timestamp"] for _, att in rx.seen] == [str(int(t)) for t, _ in rx.seen]


def test_jitter_spreads_retries() -> None:
    firsts = set()
    for seed in range(5):
        box = make(seed=seed)
        box.enqueue(delivery(1, "r"))
        rx = Receiver(lambda now, att: 503)
        run(box, rx, T0, T0 + 30)
        firsts.add(round(rx.seen[1][0] - T0, 3))
    assert len(firsts) == 5


def test_a_failing_room_does_not_hold_up_another() -> None:
    box = make()
    box.enqueue(delivery(1, "bad"))
    box.enqueue(delivery(2, "bad"))
    box.enqueue(delivery(3, "good"))
    box.enqueue(delivery(4, "good"))
    rx = Receiver(lambda now, att: 500 if att.id in ("evt_1", "evt_2") else 200)
    run(box, rx, T0, T0 + 30)
    assert rx.accepted == ["evt_3", "evt_4"]
    assert "evt_2" not in {att.id for _, att in rx.seen}  # waits for evt_1


def test_six_hour_outage_delivers_everything_in_order_per_room() -> None:
    rng = random.Random(42)
    box = make(seed=3)
    outage_end = T0 + 6 * 3600
    rx = Receiver(lambda now, att: 200 if now >= outage_end else None if rng.random() < 0.3 else 500)
    rooms = [f"room{i}" for i in range(10)]
    expected: dict[str, list[str]] = {r: [] for r in rooms}
    now = T0
    for seq in range(1, 1001):  # 1,000 events over the first ~17 minutes of the outage
        room = rng.choice(rooms)
        d = delivery(seq, room, now)
        expected[room].append(d.id)
        box.enqueue(d)
        now = run(box, rx, now, now + 1.0)
    assert now < outage_end
    end = run(box, rx, now, T0 + 30 * 3600)
    assert box.queued == 0 and box.gave_up == 0
    assert box.delivered == 1000
    # After the receiver came back everything went through within the backoff cap plus jitter.
    assert end <= outage_end + box.policy.cap * (1 + box.policy.jitter) + 1
    by_room: dict[str, list[str]] = {r: [] for r in rooms}
    room_of = {i: r for r, ids in expected.items() for i in ids}
    for msg_id in rx.accepted:
        by_room[room_of[msg_id]].append(msg_id)
    assert by_room == expected
    assert box.oldest_age(end) == 0.0


def test_unanswered_attempts_time_out_and_late_answers_are_ignored() -> None:
    box = make(RetryPolicy(attempt_timeout=10.0))
    box.enqueue(delivery(1, "r"))
    first = box.poll_transmit(T0)
    assert first is not None
    assert box.next_deadline() == T0 + 10.0
    box.handle_timeout(T0 + 10.0)
    assert isinstance(box.poll_event(), RetryScheduled)
    box.handle_result(first.id, first.attempt, T0 + 11, 200)  # too late: that attempt is over
    assert box.delivered == 0
    deadline = box.next_deadline()
    assert deadline is not None
    second = box.poll_transmit(deadline)
    assert second is not None and second.attempt == 2 and second.body == first.body
    box.handle_result(second.id, second.attempt, deadline + 0.01, 204)
    out = box.poll_event()
    assert isinstance(out, Delivered) and out.attempts == 2


def test_restored_deliveries_keep_attempts_and_duplicates_are_refused() -> None:
    box = make(RetryPolicy(retry_for=100.0))
    d = delivery(1, "r")
    d.attempts = 5
    assert box.enqueue(d)
    assert not box.enqueue(delivery(1, "r"))
    att = box.poll_transmit(T0 + 100)
    assert att is not None and att.attempt == 6
    box.handle_result(att.id, att.attempt, T0 + 100, 410)
    out = box.poll_event()
    assert isinstance(out, GaveUp) and out.error == "HTTP 410"


def test_max_in_flight_bounds_concurrency() -> None:
    box = make(max_in_flight=2)
    for i in range(5):
        box.enqueue(delivery(i + 1, f"r{i}"))
    assert box.poll_transmit(T0) is not None
    assert box.poll_transmit(T0) is not None
    assert box.poll_transmit(T0) is None
    assert box.in_flight == 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=60), st.integers(0, 1000))
def test_any_failure_pattern_keeps_room_order_and_loses_nothing(plan: list[tuple[int, bool]], seed: int) -> None:
    rng = random.Random(seed)
    box = make(seed=seed)
    expected: dict[str, list[str]] = {}
    for seq, (room_no, _) in enumerate(plan, 1):
        d = delivery(seq, f"r{room_no}")
        expected.setdefault(d.key, []).append(d.id)
        box.enqueue(d)
    rx = Receiver(lambda now, att: 200 if rng.random() < 0.6 else 500)
    run(box, rx, T0, T0 + 24 * 3600)
    assert box.delivered == len(plan)
    got: dict[str, list[str]] = {}
    room_of = {i: r for r, ids in expected.items() for i in ids}
    for msg_id in rx.accepted:
        got.setdefault(room_of[msg_id], []).append(msg_id)
    assert got == expected


def test_random_failures_of_a_working_receiver_do_not_escalate_the_backoff() -> None:
    """A receiver that accepts other deliveries meanwhile is flaky, not down: retry after base."""
    box = make()
    box.enqueue(delivery(1, "unlucky"))
    rx = Receiver(lambda now, att: 500 if att.id == "evt_1" and att.attempt <= 5 else 200)
    now = T0
    for seq in range(2, 40):  # other rooms' events keep flowing, every 0.5 s
        box.enqueue(delivery(seq, f"r{seq}", now))
        now = run(box, rx, now, now + 0.5)
    run(box, rx, now, T0 + 3600)
    times = [t - T0 for t, att in rx.seen if att.id == "evt_1"]
    assert len(times) == 6 and box.delivered == 39
    # Each retry after about base (1 s +-20 %), not 1, 4, 16, 64, 256 s.
    assert times[-1] < 5 * 1.2 + 0.1, times


def test_a_receiver_that_is_down_backs_off_exponentially() -> None:
    box = make()
    for seq in range(1, 4):
        box.enqueue(delivery(seq, f"r{seq}"))
    rx = Receiver(lambda now, att: 503)
    run(box, rx, T0, T0 + 400)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise([x for x in rx.seen if x[1].id == "evt_1"])]
    assert gaps[:5] == sorted(gaps[:5]) and gaps[4] > 200, gaps


def test_a_receiver_that_comes_back_gets_its_backlog_within_the_probe_interval() -> None:
    """Down for 2 minutes: one delivery probes it every ``probe`` seconds; the first 2xx brings the
    other rooms' deliveries forward (their own backoff would wait up to 256 s more)."""
    box = make(seed=5)
    back_at = T0 + 120
    rx = Receiver(lambda now, att: 200 if now >= back_at else 503)
    rooms = [f"r{i}" for i in range(20)]
    expected: dict[str, list[str]] = {r: [] for r in rooms}
    now = T0
    for seq in range(1, 101):  # 100 events over the first 10 s of the outage
        d = delivery(seq, rooms[seq % 20], now)
        expected[d.key].append(d.id)
        box.enqueue(d)
        now = run(box, rx, now, now + 0.1)
    end = run(box, rx, now, T0 + 3600)
    assert box.delivered == 100 and box.queued == 0
    last = max(t for t, att in rx.seen if att.id == rx.accepted[-1])
    assert last <= back_at + box.policy.probe + box.policy.base + 0.01, last - back_at
    # While it was down the URL was tried at least every ``probe`` seconds.
    down = sorted(t for t, _ in rx.seen if t < back_at)
    gaps = [b - a for a, b in itertools.pairwise(down)]
    assert max(gaps) <= box.policy.probe + 0.01, gaps
    # Once every room backs off past ``probe`` (64 s +-20 % after the 4th failure, at ~102 s at the latest),
    # only the probe tries it.
    assert len([t for t in down if t > T0 + 105]) <= 1, down
    room_of = {i: r for r, ids in expected.items() for i in ids}
    by_room: dict[str, list[str]] = {r: [] for r in rooms}
    for msg_id in rx.accepted:
        by_room[room_of[msg_id]].append(msg_id)
    assert by_room == expected
    assert end >= last
