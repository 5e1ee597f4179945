"""Which zone a global gateway sends a new session to. Pure: zone summaries in, a ranking out.

1. The zone the client names (``?zone=Z`` / ``X-Trackmesh-Zone``): taken as is when a live gateway
   of it is known (its gateway forwards elsewhere if the zone is full); unknown: 400.
2. Else, when the client is located (GeoIP) and zones say where they are (``--location``): the
   zone with the lowest cost = distance in km + :data:`KM_PER_LOAD` x load, among zones with free
   capacity. ``load`` is the zone's summary score: its best node's fill (sessions / capacity) plus
   half its CPU share, 0 when idle, 1 or more when full or hot. So a zone 2,000 km further away
   wins once the nearer one is a full load step busier: close zones are preferred, busy ones avoided.
3. Else the least loaded zone with free capacity (lowest score, then the most free sessions).

Zones without a location rank after the located ones in (2).
"""

from __future__ import annotations

from collections.abc import Iterable

from .directory import ZoneEntry
from .geo import distance_km

KM_PER_LOAD = 2000.0


def has_room(e: ZoneEntry) -> bool:
    return e.nodes > 0 and e.free > 0


def rank_zones(zones: Iterable[ZoneEntry], client: tuple[float, float] | None) -> list[tuple[ZoneEntry, str]]:
    """Zones with free capacity, best first, each with the reason it ranks (``geo`` or ``load``)."""
    open_zones = [e for e in zones if has_room(e)]
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
