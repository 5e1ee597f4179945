"""Set-up cost of atm0s 0.2's RTPengine-style endpoints: a real ``trackmesh standalone`` node (one
worker), sequential ``POST /rtpengine/answer`` (a PCMA offer) then ``DELETE`` on its Location, as
atm0s' SIP gateway does per call (without media: the media path is ``bench/sip_media.py``'s).

Run inside a private network namespace (loopback only)::

    scripts/in-netns.sh .venv/bin/python bench/rtpengine_setup.py [--calls 300]

Prints the median and 95th percentile latency of each request (HTTP client included), the sequential
rate of set-up plus teardown, and the node's CPU per endpoint created and deleted (every thread of the
process, so the gateway's HTTP handling is included).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.node_process import NodeProcess, http  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
OFFER = (
    "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 49170 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args()
    # warning: an info line per endpoint would be part of what is measured
    node = NodeProcess("--workers", "1", "--sip-port", "0", "--sip-rtp-ports", "43000-43999", "--log-level", "warning")
    try:
        node.wait_ready()
        status, body = node.json("POST", "/token/rtpengine", {"room": "bench", "peer": "gw", "ttl": 3600},
                                 token=node.secret)  # fmt: skip
        assert status == 200, body
        token = body["data"]["token"]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        for _ in range(20):  # warm-up
            _, h, _ = http("POST", node.base + "/rtpengine/answer", OFFER.encode(), headers)
            http("DELETE", node.base + h["Location"])
        posts: list[float] = []
        deletes: list[float] = []
        cpu0 = cpu_seconds(node.proc.pid)
        start = time.perf_counter()
        for _ in range(args.calls):
            t0 = time.perf_counter()
            status, h, body = http("POST", node.base + "/rtpengine/answer", OFFER.encode(), headers)
            t1 = time.perf_counter()
            assert status == 201, body
            status, _, _ = http("DELETE", node.base + h["Location"])
            t2 = time.perf_counter()
            assert status == 200
            posts.append(t1 - t0)
            deletes.append(t2 - t1)
        cpu = cpu_seconds(node.proc.pid) - cpu0
        wall = time.perf_counter() - start
    finally:
        node.stop()

    def q(xs: list[float], f: float) -> float:
        return sorted(xs)[int(f * (len(xs) - 1))] * 1000

    print(f"{args.calls} endpoints: POST /rtpengine/answer median {statistics.median(posts) * 1000:.2f} ms, "
          f"p95 {q(posts, 0.95):.2f} ms; DELETE median {statistics.median(deletes) * 1000:.2f} ms, "
          f"p95 {q(deletes, 0.95):.2f} ms; {args.calls / wall:.0f} set-ups+teardowns/s sequential; "
          f"node CPU {cpu / args.calls * 1000:.2f} ms per endpoint")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
