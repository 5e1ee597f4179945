"""Failed secret checks per source: a token bucket, bounded in memory, on a virtual clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.security.throttle import FailureThrottle, source_key


def test_a_burst_then_one_try_per_refill_interval() -> None:
    t = FailureThrottle(burst=3, refill_per_s=0.5)
    for _ in range(3):
        assert t.retry_after("a", 0.0) == 0
        t.failed("a", 0.0)
    assert t.retry_after("a", 0.0) == 2  # one token takes 2 s at 0.5/s
    assert t.retry_after("b", 0.0) == 0  # other sources are not affected
    assert t.retry_after("a", 1.0) == 1
    assert t.retry_after("a", 2.0) == 0
    t.failed("a", 2.0)
    assert t.retry_after("a", 2.0) == 2
    assert (t.failures, t.throttled) == (4, 3)
    # Fully refilled after burst / rate seconds.
    assert t.retry_after("a", 100.0) == 0


def test_memory_is_bounded_and_drops_the_least_recently_failed() -> None:
    t = FailureThrottle(burst=1, refill_per_s=0.01, max_sources=100)
    for i in range(1000):
        t.failed(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(t) == 100
    assert t.retry_after("10.0.3.231", 999.0) > 0  # the last one is still throttled
    assert t.retry_after("10.0.0.0", 999.0) == 0  # the first was dropped


def test_an_ipv6_client_is_its_slash_64() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("testclient") == "testclient"


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 5), st.booleans()), max_size=200))
def test_retry_after_is_never_negative_and_the_table_stays_bounded(
    steps: list[tuple[str, float, bool]],
) -> None:
    t = FailureThrottle(burst=2, refill_per_s=1.0, max_sources=4)
    now = 0.0
    for source, dt, fail in steps:
        now += dt
        wait = t.retry_after(source, now)
        assert 0 <= wait <= 2
        if fail:
            t.failed(source, now)
        assert len(t) <= 4
