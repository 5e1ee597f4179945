"""``trackmesh gateway --global`` as a real process above three zones (gateway + media node each).

Loopback only, inside the private network namespace. Clients "in" a region are clients whose source
address is one the test's MaxMind database (written with mmdb-writer) places there: every 127/8
address is loopback on Linux, so a client binds 127.0.0.2 to be "near zone 2".
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from trackmesh.core.ids import ConnIdCodec, SessionId

from .test_global_choice import BOSTON, NEW_YORK, OSAKA, PARIS, TOKYO, write_db
from .test_roles import SECRET, Cluster, Member, free_port, http

LOCATIONS = {1: PARIS, 2: NEW_YORK, 3: TOKYO}


def geo_db(tmp_path: Path) -> str:
    def loc(p: tuple[float, float]) -> dict[str, object]:
        return {"location": {"latitude": p[0], "longitude": p[1]}}

    return write_db(tmp_path / "geo.mmdb", {"127.0.0.2/32": loc(BOSTON), "127.0.0.3/32": loc(OSAKA)})


def post_token(glob: Member, source: str, query: str = "", follow: bool = False) -> Any:
    import httpx

    body = json.dumps({"room": "geo", "ttl": 60}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, trust_env=False, follow_redirects=follow, timeout=10) as c:
        return c.post(f"{glob.base}/token/whep{query}", content=body, headers=headers)


def post_token_header(glob: Member, source: str, zone_rtt: str) -> Any:
    """As post_token, the RTTs in the ``X-Trackmesh-Zone-Rtt`` header."""
    import httpx

    body = json.dumps({"room": "geo", "ttl": 60}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"}
    headers["X-Trackmesh-Zone-Rtt"] = zone_rtt
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), trust_env=False, timeout=10) as c:
        return c.post(f"{glob.base}/token/whep", content=body, headers=headers)


def wait_global_zones(glob: Member, want: dict[int, int], timeout: float = 10.0) -> None:
    """Until the global gateway sees each zone of ``want`` with that many healthy nodes."""
    deadline = time.monotonic() + timeout
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        seen = {int(z["zone"]): int(z["nodes"]) for z in glob.info()["zones"]}
        if all(seen.get(z) == n for z, n in want.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"global gateway sees {seen}, wanted {want}")


def test_global_gateway_routes_by_name_location_and_room(cluster: Cluster, tmp_path: Path) -> None:
    media: dict[int, Member] = {}
    gateways: dict[int, Member] = {}
    for z, (lat, lon) in LOCATIONS.items():
        gateways[z] = cluster.start("gateway", z, 1, "--location", f"{lat},{lon}")
        media[z] = cluster.media(z, 10)
    glob = cluster.start("gateway", 0, 1, "--global", "--geoip-db", geo_db(tmp_path))
    wait_global_zones(glob, {1: 1, 2: 1, 3: 1})

    # A client near New York (127.0.0.2 -> Boston) lands in zone 2 (proxied to zone 2's gateway).
    r = post_token(glob, "127.0.0.2")
    assert r.status_code == 200 and r.headers["x-trackmesh-served-by"] == "2/10", (r.status_code, r.headers, r.text)
    assert (r.headers["x-trackmesh-zone"], r.headers["x-trackmesh-route"]) == ("2", "geo"), r.headers
    assert post_token(glob, "127.0.0.3").headers["x-trackmesh-served-by"] == "3/10"  # Osaka -> Tokyo
    # Not in the database: the least loaded zone.
    r = post_token(glob, "127.0.0.1")
    assert r.status_code == 200 and r.headers["x-trackmesh-route"] == "load", r.headers
    # The client names a zone: it gets it, wherever it is; an unknown zone is 400 with the reason.
    r = post_token(glob, "127.0.0.2", "?zone=3")
    assert r.status_code == 200 and r.headers["x-trackmesh-served-by"] == "3/10", r.headers
    r = post_token(glob, "127.0.0.2", "?zone=9")
    assert r.status_code == 400 and "unknown zone '9': zones with a live gateway are 1, 2, 3" in r.text, r.text
    # RTT: zone gateways answer a cheap ping the client times; the global gateway lists them.
    status, headers, body = http("GET", gateways[2].base + "/api/zone/ping")
    assert (status, headers["x-trackmesh-zone"], body) == (204, "2", b""), (status, headers, body)
    status, headers, _ = http("HEAD", gateways[2].base + "/api/zone/ping")
    assert (status, headers["x-trackmesh-zone"]) == (204, "2"), (status, headers)
    operations = json.loads(http("GET", gateways[2].base + "/openapi.json")[2])["paths"]["/api/zone/ping"]
    assert list(operations) == ["get"], operations  # one operation id (HEAD stays out of the schema)
    listed = json.loads(http("GET", glob.base + "/api/global/zones")[2])["data"]["zones"]
    assert [(z["zone"], z["ping"]) for z in listed] == [(z, gateways[z].base + "/api/zone/ping") for z in (1, 2, 3)]
    # A client that measured its RTT: the lowest wins over GeoIP (Boston, but 5 ms to zone 1) ...
    r = post_token(glob, "127.0.0.2", "?zone_rtt=1:5,2:80,3:190")
    assert r.status_code == 200 and r.headers["x-trackmesh-served-by"] == "1/10", (r.status_code, r.headers)
    assert r.headers["x-trackmesh-route"] == "rtt", r.headers
    # ... also as a header; RTTs of zones the gateway does not know are ignored (GeoIP decides).
    r = post_token_header(glob, "127.0.0.2", "3:4.5, 1:60")
    assert (r.status_code, r.headers["x-trackmesh-served-by"]) == (200, "3/10"), (r.status_code, r.headers)
    r = post_token(glob, "127.0.0.2", "?zone_rtt=9:1")
    assert (r.headers["x-trackmesh-served-by"], r.headers["x-trackmesh-route"]) == ("2/10", "geo"), r.headers
    # Bad values: 400 with the reason.
    for query, reason in (("1:-3", "RTT '-3' of zone 1 is not a number of ms"), ("1:5,1:6", "zone 1 is given twice"),
                          ("x:5", "zone 'x' is not an integer"), ("15", "'15' is not ZONE:MS")):  # fmt: skip
        r = post_token(glob, "127.0.0.2", f"?zone_rtt={query}")
        assert r.status_code == 400 and reason in r.json()["error"], (query, r.status_code, r.text)
    # Follow-up calls go to the zone the conn id names (zone 3's gateway, then its node 3/10,
    # which does not know this session); a forged one is 404 at the global gateway.
    conn = ConnIdCodec(SECRET).encode(3 << 8 | 10, 0, SessionId(7))
    status, headers, _ = http("DELETE", f"{glob.base}/whep/conn/{conn}", headers={"Authorization": "Bearer x"})
    assert (headers["x-trackmesh-zone"], headers["x-trackmesh-route"]) == ("3", "conn"), (status, headers)
    assert headers.get("x-trackmesh-served-by") == "3/10", headers
    forged = ConnIdCodec("another-secret").encode(3 << 8 | 10, 0, SessionId(7))
    assert http("DELETE", f"{glob.base}/whep/conn/{forged}")[0] == 404
    # --global-redirect: a 307 to the zone gateway instead (clients that follow it and resend credentials).
    redirecting = cluster.start("gateway", 0, 2, "--global", "--global-redirect", "--geoip-db", geo_db(tmp_path))
    wait_global_zones(redirecting, {1: 1, 2: 1, 3: 1})
    r = post_token(redirecting, "127.0.0.2", "?room=x")
    assert r.status_code == 307 and r.headers["location"] == f"{gateways[2].base}/token/whep?room=x", r.headers

    # Zone 2's only media node dies: its zone summary says 0 nodes, the Boston client goes to the
    # next best zone (Paris is nearer than Tokyo).
    media[2].kill()
    media[2].lines.append("(killed)")
    wait_global_zones(glob, {2: 0})
    r = post_token(glob, "127.0.0.2")
    assert r.status_code == 200 and r.headers["x-trackmesh-served-by"] == "1/10", (r.status_code, r.headers)
    # The same with RTTs: zone 2 is nearest but has no node, so the next lowest RTT.
    r = post_token(glob, "127.0.0.2", "?zone_rtt=2:5,3:10,1:50")
    assert (r.headers["x-trackmesh-served-by"], r.headers["x-trackmesh-route"]) == ("3/10", "rtt"), r.headers
    text = http("GET", glob.base + "/metrics")[2].decode()
    assert "trackmesh_global_routed_geo_total 4" in text and "trackmesh_global_unknown_zone_total 1" in text, text
    assert "trackmesh_global_routed_rtt_total 3" in text and "trackmesh_global_bad_zone_rtt_total 4" in text, text
    assert 'trackmesh_global_zone_nodes{zone="2"} 0' in text, text


def test_forged_nonsense_summary_is_ignored_and_counted(cluster: Cluster, nodes: Any) -> None:
    gw = cluster.start("gateway", 1, 1, "--location", "48.85,2.35")
    cluster.media(1, 10)
    glob = cluster.start("gateway", 0, 1, "--global")
    wait_global_zones(glob, {1: 1})
    # A member with the secret reports nonsense for zone 7 (negative free capacity): ignored, counted.
    liar = nodes(seeds=[glob.seed, gw.seed], secret=SECRET)
    bad = {"zone": 7, "gateway": 1, "url": "http://127.0.0.1:9", "nodes": 3, "free": -100, "score": 0.0}
    deadline = time.monotonic() + 10
    while glob.info()["counters"]["bad_summaries"] < 3:  # once the link and the subscription are up
        assert time.monotonic() < deadline, (liar.links(), glob.info())
        liar.session.put("tm/zone/7/1", json.dumps(bad))
        time.sleep(0.2)
    assert [z["zone"] for z in glob.info()["zones"]] == [1]
    # A forged summary from a member with another secret never arrives: no link at all.
    outsider = nodes(seeds=[glob.seed], secret="another-secret-xyz")
    time.sleep(1.5)
    assert outsider.links() == 0


def test_bad_geoip_database_refuses_start_naming_the_flag(tmp_path: Path) -> None:
    import subprocess

    from .test_roles import TRACKMESH

    corrupt = tmp_path / "corrupt.mmdb"
    corrupt.write_bytes(b"\x00not a maxmind database" * 20)
    for path, expect in ((str(tmp_path / "missing.mmdb"), "--geoip-db: "), (str(corrupt), "--geoip-db: cannot read")):
        cmd = [TRACKMESH, "gateway", "--global", "--geoip-db", path, "--secret", SECRET]
        cmd += ["--http-port", str(free_port())]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"trackmesh: {expect}"), proc.stderr
