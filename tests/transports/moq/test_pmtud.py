"""The DPLPMTUD search (transports/moq/pmtud.py) on a virtual clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.moq.pmtud import (
    BASE_PLPMTU,
    MAX_PROBES,
    PMTU_RAISE_TIMER,
    PROBE_TIMER,
    PmtuSearch,
    PmtuState,
    Step,
    default_max_plpmtu,
)


def state_of(search: PmtuSearch) -> PmtuState:
    """The state (a call, so that mypy does not keep an earlier narrowing of the attribute)."""
    return search.state


def run_path(search: PmtuSearch, path_mtu: int, now: float = 0.0) -> tuple[list[int], float]:
    """Drive the search over a path that carries up to ``path_mtu`` bytes (acks come at once, losses too)."""
    probes: list[int] = []
    step = search.start(now)
    while step.probe is not None:
        size = step.probe
        probes.append(size)
        search.probe_sent(size, now)
        now += 0.05
        step = search.probe_acked(size, now) if size <= path_mtu else search.probe_lost(size, now)
        assert len(probes) < 50
    return probes, now


def test_defaults() -> None:
    assert default_max_plpmtu(ipv6=False) == 1472
    assert default_max_plpmtu(ipv6=True) == 1452


def test_ethernet_path_takes_one_probe() -> None:
    search = PmtuSearch(1472)
    probes, _ = run_path(search, 1472)
    assert probes == [1472]
    assert search.plpmtu == 1472 and search.state is PmtuState.SEARCH_COMPLETE
    assert (search.probes_sent, search.probes_acked, search.probes_lost) == (1, 1, 0)


def test_max_fails_then_climbs_the_ladder() -> None:
    search = PmtuSearch(1472)
    probes, _ = run_path(search, 1392)  # a WireGuard link: 1420 - 28
    assert probes[:MAX_PROBES] == [1472] * MAX_PROBES
    assert probes[MAX_PROBES:] == [1322, 1352, 1372, 1392, 1422, 1422, 1422]
    assert search.plpmtu == 1392 and search.state is PmtuState.SEARCH_COMPLETE


def test_a_1280_link_stays_at_base() -> None:
    search = PmtuSearch(1472)
    probes, _ = run_path(search, 1252)
    assert probes == [1472] * 3 + [1322] * 3
    assert search.plpmtu == BASE_PLPMTU and search.state is PmtuState.SEARCH_COMPLETE
    assert search.probes_lost == 6


def test_peer_limit_below_every_candidate() -> None:
    search = PmtuSearch(1200)
    assert search.start(0.0).probe is None
    assert search.state is PmtuState.SEARCH_COMPLETE and search.plpmtu == BASE_PLPMTU


def test_probe_timer_counts_as_a_loss() -> None:
    search = PmtuSearch(1472)
    step = search.start(0.0)
    assert step.probe == 1472
    step = search.probe_sent(1472, 0.0)
    assert step.deadline == PROBE_TIMER
    assert search.timer(PROBE_TIMER - 1).probe is None
    step = search.timer(PROBE_TIMER)
    assert step.probe == 1472 and search.probes_lost == 1
    # an ack of the first probe after the timer: no evidence for the probe in progress (not yet sent)
    assert search.probe_acked(1472, PROBE_TIMER + 0.1).plpmtu is None


def test_unsent_probe_is_asked_for_again() -> None:
    search = PmtuSearch(1472)
    assert search.start(0.0).probe == 1472  # the driver could not send it (EAGAIN)
    step = search.timer(PROBE_TIMER)
    assert step.probe == 1472 and search.probes_lost == 0


def test_raise_timer_searches_again_and_confirmation_at_max() -> None:
    search = PmtuSearch(1472)
    _, now = run_path(search, 1392)
    assert search.deadline == now + PMTU_RAISE_TIMER
    step = search.timer(search.deadline)
    assert step.probe == 1472 and search.state is PmtuState.SEARCHING
    search.probe_sent(1472, search.deadline)
    step = search.probe_acked(1472, search.deadline + 0.05)  # the path grew
    assert step.plpmtu == 1472 and state_of(search) is PmtuState.SEARCH_COMPLETE
    now = search.deadline
    step = search.timer(now)
    assert step.probe == 1472  # confirmation
    search.probe_sent(1472, now)
    assert search.probe_acked(1472, now + 0.05).plpmtu is None
    assert search.plpmtu == 1472


def test_failed_confirmation_is_a_black_hole() -> None:
    search = PmtuSearch(1472)
    _, now = run_path(search, 1472)
    now = search.deadline
    step = search.timer(now)
    for _ in range(MAX_PROBES):
        assert step.probe == 1472
        search.probe_sent(1472, now)
        step = search.probe_lost(1472, now)
    assert step.plpmtu == BASE_PLPMTU and step.probe == BASE_PLPMTU
    assert search.black_holes == 1 and search.state is PmtuState.BASE


def test_black_hole_falls_back_then_searches_below_it() -> None:
    search = PmtuSearch(1472)
    _, now = run_path(search, 1472)
    step = search.black_hole_suspected(now)
    assert step == Step(BASE_PLPMTU, BASE_PLPMTU, now + PROBE_TIMER)
    assert search.plpmtu == BASE_PLPMTU and search.black_holes == 1
    assert search.black_hole_suspected(now).plpmtu is None  # already at BASE
    search.probe_sent(BASE_PLPMTU, now)
    step = search.probe_acked(BASE_PLPMTU, now + 0.05)
    assert step.probe == 1322 and search.state is PmtuState.SEARCHING  # not 1472 again before the raise timer


def test_base_lost_is_error_then_retried() -> None:
    search = PmtuSearch(1472)
    _, now = run_path(search, 1472)
    step = search.black_hole_suspected(now)
    for _ in range(MAX_PROBES):
        assert step.probe == BASE_PLPMTU
        search.probe_sent(BASE_PLPMTU, now)
        step = search.probe_lost(BASE_PLPMTU, now)
    assert search.state is PmtuState.ERROR and search.plpmtu == BASE_PLPMTU
    step = search.timer(step.deadline)
    assert step.probe == BASE_PLPMTU and state_of(search) is PmtuState.BASE


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["send", "ack", "lose", "timer", "black_hole", "ack_other", "lose_other"]),
        st.floats(0, 100),
        st.integers(1000, 1600),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(max_plpmtu=st.integers(1100, 1600), events=EVENTS)
def test_size_stays_in_range_and_rises_only_on_an_acked_probe(
    max_plpmtu: int, events: list[tuple[str, float, int]]
) -> None:
    search = PmtuSearch(max_plpmtu)
    upper = max(BASE_PLPMTU, max_plpmtu)
    now = 0.0
    step = search.start(now)
    wanted = step.probe
    for kind, dt, other in events:
        now += dt
        before = search.plpmtu
        acked: int | None = None
        if kind == "send" and wanted is not None:
            step = search.probe_sent(wanted, now)
        elif kind == "ack" and search.probe_size is not None:
            acked = search.probe_size
            step = search.probe_acked(acked, now)
        elif kind == "lose" and search.probe_size is not None:
            step = search.probe_lost(search.probe_size, now)
        elif kind == "timer":
            step = search.timer(now)
        elif kind == "black_hole":
            step = search.black_hole_suspected(now)
        elif kind == "ack_other":
            acked = other
            step = search.probe_acked(other, now)
        elif kind == "lose_other":
            step = search.probe_lost(other, now)
        else:
            continue
        if step.probe is not None:
            wanted = step.probe
            assert BASE_PLPMTU <= step.probe <= upper
        assert BASE_PLPMTU <= search.plpmtu <= upper
        if step.plpmtu is not None:
            assert step.plpmtu == search.plpmtu
        if search.plpmtu > before:
            assert acked == search.plpmtu, (kind, before, search.plpmtu)
            assert step.plpmtu == search.plpmtu
        elif search.plpmtu < before:
            assert search.plpmtu == BASE_PLPMTU and step.plpmtu == BASE_PLPMTU
        if kind == "timer":
            assert step.deadline > now  # never due again at once: no busy loop
