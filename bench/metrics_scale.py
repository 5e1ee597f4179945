"""Series count and scrape time of /metrics as sessions grow (issue 14: bounded cardinality).

Runs inside a private network namespace (a standalone node on 127.0.0.1)::

    scripts/in-netns.sh .venv/bin/python bench/metrics_scale.py --sessions 500

Starts ``trackmesh standalone``, counts the samples of ``/metrics`` idle, opens ``--sessions`` WHIP
(one in five) and WHEP sessions with real offers (tests/sdp/fixtures) in ``--rooms`` rooms, then
counts again and times ``--scrapes`` scrapes. The sessions stay connecting (no ICE): each one still
costs its full share of a scrape (its counters are read and summed), which is what is measured.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.runtime.node_process import NodeProcess, http  # noqa: E402

FIXTURES = ROOT / "tests" / "sdp" / "fixtures"


def samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--rooms", type=int, default=50)
    ap.add_argument("--scrapes", type=int, default=10)
    args = ap.parse_args()
    offers = {"whip": (FIXTURES / "chrome_whip_simulcast.sdp").read_bytes(),
              "whep": (FIXTURES / "chrome_whep_recvonly.sdp").read_bytes()}  # fmt: skip
    cap = str(args.sessions * 2)
    node = NodeProcess("--connect-timeout", "600", "--max-sessions", cap, "--max-sessions-per-token", cap)
    out = node.proc.stdout
    assert out is not None
    threading.Thread(target=lambda: [None for _ in out], daemon=True).start()  # a full pipe would block the node
    node.wait_ready()
    try:
        idle = samples(http("GET", node.base + "/metrics")[2].decode())

        def open_session(i: int) -> int:
            kind = "whip" if i % 5 == 0 else "whep"
            body = {"room": f"room-{i % args.rooms}", "peer": f"p{i}", "ttl": 600}
            _, tok = node.json("POST", f"/token/{kind}", body, token=node.secret)
            status, _, _ = http("POST", f"{node.base}/{kind}/endpoint", offers[kind],
                                {"Content-Type": "application/sdp", "Authorization": f"Bearer {tok['data']['token']}"})
            return status

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(open_session, range(args.sessions)))
        times = []
        text = ""
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            text = http("GET", node.base + "/metrics")[2].decode()
            times.append(time.perf_counter() - t0)
        print(json.dumps({
            "sessions": codes.count(201),
            "series_idle": idle,
            "series": samples(text),
            "scrape_ms_median": round(1000 * statistics.median(times), 1),
            "scrape_ms_max": round(1000 * max(times), 1),
        }))
    finally:
        node.stop(timeout=60)


if __name__ == "__main__":
    main()
