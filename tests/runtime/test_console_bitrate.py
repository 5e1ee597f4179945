"""The console's track bitrates (runtime/console_rpc.py): byte counters between two listings, on a
virtual clock."""

from __future__ import annotations

from trackmesh.runtime.console_rpc import BitrateMeter

KEY = ("1", "publish", "video")


def test_rate_between_listings_none_at_first_and_forgotten_when_not_listed() -> None:
    meter = BitrateMeter()
    assert meter.read(KEY, 10.0, 1000) is None  # one reading: no rate yet
    meter.sweep()
    assert meter.read(KEY, 11.0, 126_000) == 1_000_000  # 125 kB in 1 s
    meter.sweep()
    # A second console asking 0.1 s later gets the same rate (no rate over a tiny interval).
    assert meter.read(KEY, 11.1, 127_000) == 1_000_000
    meter.sweep()
    assert meter.read(KEY, 13.0, 376_000) == 1_000_000  # 250 kB over 2 s, from the 11.0 reading
    meter.sweep()
    meter.sweep()  # a listing without the track: forgotten
    assert meter.read(KEY, 14.0, 500_000) is None


def test_a_counter_that_restarts_never_gives_a_negative_rate() -> None:
    meter = BitrateMeter()
    meter.read(KEY, 0.0, 10_000)
    meter.sweep()
    assert meter.read(KEY, 1.0, 0) == 0
