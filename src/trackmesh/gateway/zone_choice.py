"""Which zone a global gateway sends a new session to. Pure: zone summaries in, a ranking out.

1. The zone the client names (``?zone=Z`` / ``X-Trackmesh-Zone``): taken as is when a live gateway
   of it is known (its gateway forwards elsewhere if the zone is full); unknown: 400.
2. Else, when the client reports its measured round-trip times to zone gateways
   (``?zone_rtt=1:23,2:41`` / ``X-Trackmesh-Zone-Rtt``, milliseconds; :func:`parse_zone_rtt`): the
   zone with the lowest cost = RTT in ms + :data:`MS_PER_LOAD` x load, among the measured zones with
   free capacity. The client times ``GET /api/zone/ping`` on each zone gateway (the global
   gateway lists them at ``GET /api/global/zones``). Measured zones rank before unmeasured ones,
   which follow in the order of (3) and (4).
3. Else, when the client is located (GeoIP) and zones say where they are (``--location``): the
   zone with the lowest cost = distance in km + :data:`KM_PER_LOAD` x load, among zones with free
   capacity. ``load`` is the zone's summary score: its best node's fill (sessions / capacity) plus
   half its CPU share, 0 when idle, 1 or more when full or hot. So a zone 2,000 km further away
   wins once the nearer one is a full load step busier: close zones are preferred, busy ones avoided.
4. Else the least loaded zone with free capacity (lowest score, then the most free sessions).

Zones without a location rank after the located ones in (3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from .directory import ZoneEntry
from .geo import distance_km

KM_PER_LOAD = 2000.0
# The same trade in RTT: light in fibre covers ~200 km per ms, so 2,000 km further is ~20 ms more
# round trip. A zone 20 ms further away wins once the nearer one is a full load step busier.
MS_PER_LOAD = 20.0
MAX_RTT_MS = 60_000.0  # a round trip longer than a minute is not a measurement
MAX_RTT_ZONES = 64  # entries in one report
MAX_ZONE = (1 << 24) - 1  # --zone accepts 0..2^24-1


class ZoneRttError(ValueError):
    """A malformed ``zone_rtt`` report; the message says what is wrong (the API answers 400 with it)."""


def parse_zone_rtt(text: str) -> dict[int, float]:
    """``"1:23,2:41.5"`` -> ``{1: 23.0, 2: 41.5}``: the client's RTT in ms to each zone's gateway.

    Raises ZoneRttError naming the bad part: not ``ZONE:MS`` pairs, a zone that is not an integer
    0..2^24-1, an RTT that is not a number in 0..60000, a zone given twice, more than 64 zones.
    Zones not known to the gateway are not an error here (one may have gone since the client
    measured): the ranking ignores them.
    """
    text = text.strip()
    if not text:
        raise ZoneRttError("empty; expected ZONE:MS pairs separated by commas, e.g. 1:23,2:41")
    parts = text.split(",")
    if len(parts) > MAX_RTT_ZONES:
        raise ZoneRttError(f"{len(parts)} zones; at most {MAX_RTT_ZONES}")
    out: dict[int, float] = {}
    for part in parts:
        zone_text, sep, ms_text = part.strip().partition(":")
        if not sep:
            raise ZoneRttError(f"{part.strip()!r} is not ZONE:MS (e.g. 1:23)")
        zone_text = zone_text.strip()
        if not (zone_text.isascii() and zone_text.isdigit()) or int(zone_text) > MAX_ZONE:
            raise ZoneRttError(f"zone {zone_text!r} is not an integer 0..{MAX_ZONE}")
        try:
            ms = float(ms_text.strip())
        except ValueError:
            ms = math.nan
        if not 0.0 <= ms <= MAX_RTT_MS:  # also rejects nan and inf
            raise ZoneRttError(
                f"RTT {ms_text.strip()!r} of zone {zone_text} is not a number of ms in 0..{MAX_RTT_MS:.0f}"
            )
        zone = int(zone_text)
        if zone in out:
            raise ZoneRttError(f"zone {zone} is given twice")
        out[zone] = ms
    return out


def has_room(e: ZoneEntry) -> bool:
    return e.nodes > 0 and e.free > 0


def rank_zones(
    zones: Iterable[ZoneEntry], client: tuple[float, float] | None, rtt: Mapping[int, float] | None = None
) -> list[tuple[ZoneEntry, str]]:
    """Zones with free capacity, best first, each with the reason it ranks (``rtt``, ``geo`` or ``load``)."""
    open_zones = [e for e in zones if has_room(e)]
    if rtt:
        measured = sorted(
            (e for e in open_zones if e.zone in rtt), key=lambda e: (rtt[e.zone] + MS_PER_LOAD * e.score, e.zone)
        )
        if measured:
            unmeasured = rank_zones([e for e in open_zones if e.zone not in rtt], client)
            return [(e, "rtt") for e in measured] + unmeasured
    if client is not None:
        located = [e for e in open_zones if e.location is not None]
        if located:

            def cost(e: ZoneEntry) -> tuple[float, int]:
                assert e.location is not None and client is not None
                return distance_km(client, e.location) + KM_PER_LOAD * e.score, e.zone

            ranked = sorted(located, key=cost)
            rest = sorted((e for e in open_zones if e.location is None), key=lambda e: (e.score, -e.free, e.zone))
            return [(e, "geo") for e in ranked] + [(e, "load") for e in rest]
    return [(e, "load") for e in sorted(open_zones, key=lambda e: (e.score, -e.free, e.zone))]
