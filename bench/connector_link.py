"""The connector's cluster path: what a media node pays per event, and events per second to a real
``trackmesh connector`` over zenoh.

Runs ONLY inside a private network namespace (it opens zenoh sessions on 127.0.0.1)::

    scripts/in-netns.sh .venv/bin/python bench/connector_link.py [--events 20000]

1. **Node CPU per event** (no network): an event recorded by the worker's ``EventSource``, moved
   into the node's ``ReliableSender`` (runtime/connector_link.py ``_collect``), batched and encoded
   for the wire (``encode_batch``), acknowledged. ``time.process_time`` over 100,000 events.
2. **Throughput**: a real ``trackmesh connector`` process (SQLite file, WAL, no webhook URL) and,
   in this process, a cluster member with the node's real :class:`ConnectorLink` (one batch in
   flight, acked after the connector's commit). ``--events`` events are queued at once; reported:
   the time until the link has no event pending (all committed and acknowledged), events per
   second, and the connector's ``events_stored``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.connector_delivery import one_session

from trackmesh.cluster.zenoh_session import ClusterConfig, open_node
from trackmesh.connector.relay import ReliableSender, encode_batch
from trackmesh.connector.source import EventSource

SECRET = "bench-connector-link-secret"
TRACKMESH = str(Path(sys.executable).parent / "trackmesh")


def node_cost(n: int = 100_000) -> dict[str, float]:
    source = EventSource(266, 7, time.time() - time.monotonic(), max_queued=n + 10)
    sender = ReliableSender(max_memory=n + 10, window=1)
    t0 = time.process_time()
    session = 0
    while source.emitted < n:
        session += 1
        one_session(source, session, 100)
    t1 = time.process_time()
    wire = 0
    while batch := source.take():
        for event in batch:
            sender.push(event)
        source.ack(batch)
    while (out := sender.poll_transmit(0.0)) is not None:
        wire += len(encode_batch(266, 7, out))
        sender.handle_ack(out.seq)
    t2 = time.process_time()
    events = source.emitted
    return {"emit_us": (t1 - t0) / events * 1e6, "link_us": (t2 - t1) / events * 1e6,
            "wire_bytes_per_event": wire / events}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(base: str, what: str) -> float:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(base + "/metrics", timeout=5) as r:
        found = re.search(rf'^trackmesh_connector{{what="{what}"}} (\S+)$', r.read().decode(), re.M)
    return float(found.group(1)) if found else -1.0


async def throughput(n: int, tmp: str) -> dict[str, Any]:
    from trackmesh.runtime.connector_link import ConnectorLink

    http_port, cluster_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    proc = subprocess.Popen([TRACKMESH, "connector", "--zone", "1", "--node-id", "9", "--secret", SECRET,
                             "--http-port", str(http_port), "--cluster-port", str(cluster_port),
                             "--connector-db", f"sqlite:///{tmp}/c.db", "--log-level", "warning"])
    member = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if metric(base, "queued") >= 0:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the connector did not start")
            await asyncio.sleep(0.2)
        member = open_node(ClusterConfig(SECRET, listen=[], seeds=[f"tcp/127.0.0.1:{cluster_port}"]))
        link = ConnectorLink(member.session, 266, 1, f"{tmp}/node")
        source = EventSource(266, 11, time.time() - time.monotonic(), max_queued=n + 10)
        link.add_source(source)
        link.start()
        while not link.connector_alive:
            await asyncio.sleep(0.05)
        session = 0
        t0 = time.monotonic()
        cpu0 = time.process_time()
        while source.emitted < n:
            session += 1
            one_session(source, session, 100)
        while link.sender.pending or source.queued:
            await asyncio.sleep(0.01)
        took = time.monotonic() - t0
        cpu = time.process_time() - cpu0
        stored = metric(base, "events_stored")
        m = link.metrics()
        await link.stop()
        return {"events": source.emitted, "seconds": round(took, 2), "events_per_s": round(source.emitted / took),
                "stored": stored, "batches": m["link_batches_sent"], "resent": m["link_batches_resent"],
                "node_cpu_us_per_event": round(cpu / source.emitted * 1e6, 1)}
    finally:
        if member is not None:
            member.close()
        proc.terminate()
        proc.wait(20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    args = p.parse_args()
    cost = node_cost()
    print(f"node CPU per event: record {cost['emit_us']:.1f} us, link (queue, batch, JSON) {cost['link_us']:.1f} us; "
          f"{cost['wire_bytes_per_event']:.0f} bytes per event on the wire")
    tmp = tempfile.mkdtemp(prefix="trackmesh-bench-link-")
    try:
        result = asyncio.run(throughput(args.events, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
