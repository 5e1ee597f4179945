"""Memory per idle MoQ session: a trackmesh node's RSS before and after N clients set up a session.

Starts ``trackmesh standalone --moq-port PORT --moq-anonymous`` on loopback (run it inside the
private network namespace: ``scripts/in-netns.sh``), opens N raw-QUIC sessions from this process
(aioquic clients, ALPN ``moqt-20`` or ``moqt-16``, SETUP answered), waits, and reads the node's
VmRSS from /proc. Reports (RSS after - RSS before) / N.

    scripts/in-netns.sh .venv/bin/python bench/moq_idle_sessions.py 200 [--draft 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack

from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration

from trackmesh.transports.moq import codec16, codec20
from trackmesh.transports.moq import messages as m


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def open_sessions(port: int, count: int, draft: int) -> None:
    config = QuicConfiguration(is_client=True, alpn_protocols=[f"moqt-{draft}"], verify_mode=ssl.CERT_NONE)
    async with AsyncExitStack() as stack:
        for _ in range(count):
            client = await stack.enter_async_context(connect("127.0.0.1", port, configuration=config))
            if draft >= 18:
                sid = client._quic.get_next_available_stream_id(is_unidirectional=True)
                client._quic.send_stream_data(sid, codec20.encode_message(m.ClientSetup({})))
            else:
                sid = client._quic.get_next_available_stream_id()
                client._quic.send_stream_data(sid, codec16.encode_message(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 100})))
            client.transmit()
        await asyncio.sleep(3.0)  # every SETUP answered, the node idle again
        print(f"after {count} sessions: node RSS {rss_kib(NODE_PID)} KiB", flush=True)
        RESULT.append(rss_kib(NODE_PID))


NODE_PID = 0
RESULT: list[int] = []


def main() -> None:
    global NODE_PID
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sessions", type=int)
    parser.add_argument("--draft", type=int, default=20, choices=(16, 20))
    args = parser.parse_args()
    moq_port, http_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    data = tempfile.mkdtemp(prefix="moq-bench-")
    env = dict(os.environ, TRACKMESH_CONNECTOR_DB=f"sqlite:///{data}/c.db")
    node = subprocess.Popen(
        [
            *(sys.executable, "-m", "trackmesh.cli.main", "standalone", "--http-port", str(http_port)),
            *("--moq-port", str(moq_port), "--moq-anonymous", "--log-level", "warning"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    NODE_PID = node.pid
    try:
        time.sleep(6)
        before = rss_kib(node.pid)
        print(f"before: node RSS {before} KiB", flush=True)
        asyncio.run(open_sessions(moq_port, args.sessions, args.draft))
        per = (RESULT[0] - before) / args.sessions
        grown = RESULT[0] - before
        print(f"| {args.sessions} idle draft-{args.draft} sessions | {grown} KiB | {per:.1f} KiB per session |")
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(20)


if __name__ == "__main__":
    main()
