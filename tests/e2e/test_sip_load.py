"""The issue's load run: sipp's built-in ``uac`` at 50 calls/s, 500 calls, into one room of one
node, without a failed call (sipp exits 0 only then; always with ``-timeout``).

Each call gets its RTP port pair, joins the room with its mixer and leaves on sipp's BYE; the node
counts every one answered and ended, and none is left. Loopback only, inside the private network
namespace (scripts/test.sh). Timing figures belong to docs/benchmarks.md, not here.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode

pytestmark = pytest.mark.e2e

HOST = "127.0.0.1"
CALLS = 500
RATE = 50


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def load_node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    port = free_port()
    # 100 port pairs: every call of the room lands on the room's worker
    node = TrackmeshNode("--sip-port", str(port), "--sip-rtp-ports", "42400-42599", "--log-level", "warning")
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def sip_state(node: TrackmeshNode) -> dict[str, Any]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return dict(body["data"])


def test_sipp_50_calls_per_second_500_calls_all_succeed(load_node: tuple[TrackmeshNode, int], tmp_path: Path) -> None:
    node, sip_port = load_node
    token = node.token("sip", "sip-load-room", ttl=600)
    proc = subprocess.run(
        ["sipp", f"{HOST}:{sip_port}", "-sn", "uac", "-s", token, "-i", HOST, "-p", str(free_port()),
         "-m", str(CALLS), "-r", str(RATE), "-l", "60", "-d", "300", "-timeout", "60s", "-nostdin", "-trace_err"],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*errors.log"))
    assert proc.returncode == 0, proc.stdout[-2500:] + errors[-2000:]  # 0: every call succeeded
    successful = re.search(r"Successful call\s+\|\s+\d+\s+\|\s+(\d+)", proc.stdout)
    failed = re.search(r"Failed call\s+\|\s+\d+\s+\|\s+(\d+)", proc.stdout)
    assert successful and int(successful.group(1)) == CALLS, proc.stdout[-2500:]
    assert failed and int(failed.group(1)) == 0, proc.stdout[-2500:]
    state = sip_state(node)
    sip = state["sip"]
    assert sip["answered"] == CALLS and sip["ended_by_phone"] == CALLS, sip
    assert sip["refused"] == 0 and sip["flood_refused"] == 0 and sip["parse_errors"] == 0, sip
    assert sip["media_errors"] == 0, sip
    assert state["calls"] == [] and sip["calls"] == 0, state  # every call ended and left the room
