"""The global gateway's pure parts: zone summaries (nonsense ignored), GeoIP lookups, the zone ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.gateway.directory import BadReport, ZoneDirectory, ZoneEntry, parse_report, parse_zone_summary
from trackmesh.gateway.geo import GeoDb, GeoDbError, distance_km, location_of
from trackmesh.gateway.zone_choice import (
    KM_PER_LOAD,
    MAX_RTT_ZONES,
    MS_PER_LOAD,
    ZoneRttError,
    parse_zone_rtt,
    rank_zones,
)

OPENS_SESSIONS = False

PARIS, NEW_YORK, TOKYO = (48.85, 2.35), (40.71, -74.01), (35.68, 139.69)
BOSTON, OSAKA = (42.36, -71.06), (34.69, 135.50)


def summary(zone: int, **kw: object) -> bytes:
    base = {"zone": zone, "gateway": 1, "url": f"http://127.0.0.1:{3000 + zone}", "nodes": 2, "free": 100,
            "score": 0.1, "location": None}  # fmt: skip
    return json.dumps({**base, **kw}).encode()


def zone(z: int, loc: tuple[float, float] | None, score: float = 0.1, free: int = 100, nodes: int = 2) -> ZoneEntry:
    return ZoneEntry(z, 1, f"http://127.0.0.1:{3000 + z}", nodes, free, score, 0.0, loc)


def write_db(path: Path, records: dict[str, dict[str, object]]) -> str:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    w = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    for net, rec in records.items():
        w.insert_network(IPSet([net]), rec)
    w.to_db_file(str(path))
    return str(path)


def test_nonsense_zone_summaries_are_ignored_and_counted() -> None:
    d = ZoneDirectory(-1)
    d.update(summary(1, location=list(PARIS)), 0.0)
    for bad in (
        summary(2, free=-5),
        summary(2, nodes=-1),
        summary(2, free=10**12),
        summary(2, nodes=10**9),
        summary(2, score=float("nan")),
        summary(2, location=[91, 0]),
        summary(2, url="file:///etc/passwd"),
        b"not json",
        b'{"zone": 2}',
        b"[]",
    ):
        d.update(bad, 0.0)
    assert sorted(d.zones(0.0)) == [1] and d.bad_summaries == 10
    assert d.zones(0.0)[1].location == PARIS


def test_nonsense_capacity_in_a_load_report_is_refused() -> None:
    ok = {"zone": 1, "node": 10, "node_id": 266, "http": "http://x", "sessions": 1, "capacity": 10}
    assert parse_report(json.dumps(ok).encode(), 0.0).capacity == 10
    for bad in ({"capacity": -1}, {"capacity": 10**9}, {"sessions": -3}, {"cpu": -1.0}):
        with pytest.raises(BadReport):
            parse_report(json.dumps({**ok, **bad}).encode(), 0.0)


@given(st.binary(max_size=300) | st.dictionaries(st.text(max_size=8), st.integers() | st.floats() | st.text()).map(
    lambda d: json.dumps(d).encode()))  # fmt: skip
def test_any_bytes_are_a_zone_summary_or_a_bad_report(data: bytes) -> None:
    try:
        e = parse_zone_summary(data, 0.0)
    except BadReport:
        return
    assert 0 <= e.free <= e.nodes * 1_000_000 and 0.0 <= e.score <= 1000.0


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@given(st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3)))
def test_any_geoip_record_is_a_location_in_range_or_none(record: object) -> None:
    where = location_of(record)
    assert where is None or (-90 <= where[0] <= 90 and -180 <= where[1] <= 180)


def test_geoip_lookups_and_bad_databases(tmp_path: Path) -> None:
    path = write_db(tmp_path / "geo.mmdb", {
        "127.0.0.2/32": {"location": {"latitude": BOSTON[0], "longitude": BOSTON[1]}},
        "127.0.0.4/32": {"city": {"names": {"en": "nowhere"}}},
    })  # fmt: skip
    db = GeoDb(path)
    assert db.locate("127.0.0.2") == pytest.approx(BOSTON)
    assert db.locate("127.0.0.4") is None  # a record without a location
    assert db.locate("127.0.0.9") is None  # not covered
    assert db.locate("not an address") is None
    assert (db.lookups, db.misses) == (4, 3)
    db.close()
    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(GeoDbError, match=r"^--geoip-db: cannot read the MaxMind database .*corrupt\.mmdb"):
        GeoDb(str(corrupt))
    with pytest.raises(GeoDbError, match=r"^--geoip-db: "):
        GeoDb(str(tmp_path / "missing.mmdb"))


def test_ranking_nearest_weighed_by_load_else_least_loaded() -> None:
    zones = [zone(1, PARIS), zone(2, NEW_YORK), zone(3, TOKYO)]
    assert [e.zone for e, _ in rank_zones(zones, BOSTON)] == [2, 1, 3]
    assert rank_zones(zones, OSAKA)[0][0].zone == 3
    # Full or dead (no node, no free session): the next best.
    zones[1] = zone(2, NEW_YORK, free=0)
    assert [e.zone for e, _ in rank_zones(zones, BOSTON)] == [1, 3]
    zones[1] = zone(2, NEW_YORK, nodes=0, free=0)
    assert rank_zones(zones, BOSTON)[0][0].zone == 1
    # Load weighs: New York busier by more than (Paris - New York distance from Boston) / KM_PER_LOAD.
    extra = (distance_km(BOSTON, PARIS) - distance_km(BOSTON, NEW_YORK)) / KM_PER_LOAD
    zones[1] = zone(2, NEW_YORK, score=0.1 + extra + 0.05)
    assert rank_zones(zones, BOSTON)[0][0].zone == 1
    zones[1] = zone(2, NEW_YORK, score=0.1 + extra - 0.05)
    assert rank_zones(zones, BOSTON)[0][0].zone == 2
    # No location: least loaded; zones without a location rank after located ones.
    loads = [zone(1, None, score=0.5), zone(2, None, score=0.2), zone(3, TOKYO, score=0.9)]
    assert [(e.zone, why) for e, why in rank_zones(loads, None)] == [(2, "load"), (1, "load"), (3, "load")]
    assert [(e.zone, why) for e, why in rank_zones(loads, BOSTON)] == [(3, "geo"), (2, "load"), (1, "load")]
    assert rank_zones([], BOSTON) == []


def test_distance() -> None:
    assert distance_km(PARIS, PARIS) == 0.0
    assert 5800 < distance_km(PARIS, NEW_YORK) < 5900
    assert math.isclose(distance_km(PARIS, TOKYO), distance_km(TOKYO, PARIS))


# ---- RTT reports (?zone_rtt= / X-Trackmesh-Zone-Rtt) -----------------------------------------------


def test_zone_rtt_parses_pairs_and_refuses_bad_values_with_the_reason() -> None:
    assert parse_zone_rtt("1:23,2:41.5") == {1: 23.0, 2: 41.5}
    assert parse_zone_rtt(" 3 : 0 , 16777215:60000 ") == {3: 0.0, 16777215: 60000.0}
    for text, reason in (
        ("", "empty"),
        ("1", "'1' is not ZONE:MS"),
        ("1=23", "'1=23' is not ZONE:MS"),
        ("a:1", "zone 'a' is not an integer"),
        ("-1:5", "zone '-1' is not an integer"),
        ("16777216:5", "is not an integer 0..16777215"),
        ("1:-1", "RTT '-1' of zone 1"),
        ("1:nan", "RTT 'nan' of zone 1"),
        ("1:inf", "RTT 'inf' of zone 1"),
        ("1:60001", "RTT '60001' of zone 1"),
        ("1:", "RTT '' of zone 1"),
        ("1:5,1:6", "zone 1 is given twice"),
        ("1:5,", "'' is not ZONE:MS"),
        (",".join(f"{z}:1" for z in range(MAX_RTT_ZONES + 1)), f"at most {MAX_RTT_ZONES}"),
    ):
        with pytest.raises(ZoneRttError, match=None) as exc:
            parse_zone_rtt(text)
        assert reason in str(exc.value), (text, str(exc.value))


@given(st.text(max_size=80))
def test_zone_rtt_parser_never_fails_otherwise(text: str) -> None:
    try:
        out = parse_zone_rtt(text)
    except ZoneRttError:
        return
    assert out and all(0 <= z < 1 << 24 and 0.0 <= ms <= 60_000.0 for z, ms in out.items())


@given(st.dictionaries(st.integers(0, (1 << 24) - 1), st.floats(0, 60_000), min_size=1, max_size=MAX_RTT_ZONES))
def test_zone_rtt_round_trips(rtt: dict[int, float]) -> None:
    assert parse_zone_rtt(",".join(f"{z}:{ms!r}" for z, ms in rtt.items())) == rtt


def test_lowest_rtt_weighed_by_load_wins_then_geo_then_load() -> None:
    zones = [zone(1, PARIS), zone(2, NEW_YORK), zone(3, TOKYO, score=0.0)]
    # RTT beats geo: a Boston client measuring 5 ms to Paris goes to Paris.
    ranked = rank_zones(zones, BOSTON, {1: 5.0, 2: 80.0})
    assert [(e.zone, why) for e, why in ranked] == [(1, "rtt"), (2, "rtt"), (3, "geo")]
    # Load weighs in: 10 ms more is worth half a load step (MS_PER_LOAD / 2).
    busy = [zone(1, PARIS, score=1.0), zone(2, NEW_YORK, score=0.0)]
    assert rank_zones(busy, None, {1: 10.0, 2: 10.0 + MS_PER_LOAD - 1})[0][0].zone == 2
    assert rank_zones(busy, None, {1: 10.0, 2: 10.0 + MS_PER_LOAD + 1})[0][0].zone == 1
    # A measured zone that is full or dead is skipped; unknown zones in the report are ignored.
    full = [zone(1, PARIS, free=0), zone(2, NEW_YORK, nodes=0), zone(3, TOKYO)]
    assert [(e.zone, why) for e, why in rank_zones(full, BOSTON, {1: 1.0, 2: 2.0, 9: 0.0})] == [(3, "geo")]
    # Only unknown zones measured: GeoIP decides, then load.
    assert rank_zones(zones, BOSTON, {9: 1.0})[0] == (zones[1], "geo")
    assert rank_zones(zones, None, {9: 1.0})[0] == (zones[2], "load")
