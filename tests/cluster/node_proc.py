"""A cluster node in a subprocess, for kill -9 tests.

    python node_proc.py LISTEN_PORT SEED_PORT KEY...

Opens a node, puts each KEY into the registry, prints ``ready <zid>`` and sleeps until killed.
"""

from __future__ import annotations

import sys
import time

from trackmesh.cluster.zenoh_registry import ZenohRegistry
from trackmesh.cluster.zenoh_session import ClusterConfig, open_node


def main() -> None:
    listen, seed, *keys = sys.argv[1:]
    node = open_node(
        ClusterConfig("cluster-test-secret", listen=[f"tcp/127.0.0.1:{listen}"], seeds=[f"tcp/127.0.0.1:{seed}"])
    )
    registry = ZenohRegistry(node.session, lambda fn: fn(), time.monotonic)
    for key in keys:
        registry.put(0.0, key, b"from-subprocess")
    deadline = time.monotonic() + 10
    while not node.peers() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", registry.member, flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main()
