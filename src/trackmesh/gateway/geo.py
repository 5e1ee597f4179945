"""Where a client is: a MaxMind database (``--geoip-db``, GeoLite2-City layout) read with ``maxminddb``,
and great-circle distances to the zones (their gateways' ``--location``).

Only ``location.latitude`` / ``location.longitude`` of a record are used (as atm0s does, to send a
client to the nearest zone). A record without them, an address the database does not cover or a
malformed address locates nothing: the global gateway then routes by load alone.
"""

from __future__ import annotations

import math
from typing import Any

import maxminddb

EARTH_RADIUS_KM = 6371.0


class GeoDbError(Exception):
    """The database cannot be used; the message is one line naming the flag."""


class GeoDb:
    def __init__(self, path: str) -> None:
        try:
            self._reader = maxminddb.open_database(path)
        except (OSError, ValueError, RuntimeError) as exc:  # InvalidDatabaseError is a RuntimeError
            raise GeoDbError(f"--geoip-db: cannot read the MaxMind database {path!r}: {exc}") from None
        self.path = path
        self.database_type = str(self._reader.metadata().database_type)
        self.lookups = 0
        self.misses = 0

    def locate(self, ip: str) -> tuple[float, float] | None:
        """(latitude, longitude) of ``ip``, or None (unknown, not covered, no location in the record)."""
        self.lookups += 1
        try:
            record: Any = self._reader.get(ip)
        except (ValueError, TypeError):
            record = None
        where = location_of(record)
        if where is None:
            self.misses += 1
        return where

    def close(self) -> None:
        self._reader.close()


def location_of(record: Any) -> tuple[float, float] | None:
    """``record["location"]``'s (latitude, longitude) when both are numbers in range."""
    if not isinstance(record, dict):
        return None
    loc = record.get("location")
    if not isinstance(loc, dict):
        return None
    lat: Any = loc.get("latitude")
    lon: Any = loc.get("longitude")
    for v in (lat, lon):
        if isinstance(v, bool) or not isinstance(v, int | float):
            return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also rejects NaN
        return None
    return float(lat), float(lon)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
