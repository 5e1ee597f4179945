"""CPU of one RTMP publisher in a room, end to end: a real ``trackmesh standalone`` node, Debian's
ffmpeg publishing a pre-encoded 1080p30 6 Mbit/s H.264 + 128 kbit/s AAC file with ``-c copy`` (so
the encoder's CPU is not the node's), optionally one WHEP viewer (aiortc).

Run inside a private network namespace (loopback only)::

    scripts/in-netns.sh .venv/bin/python bench/rtmp_bridge.py [--seconds 20] [--bframes] [--viewer]

It measures the node process's CPU (every thread: the loop, the AAC->Opus thread, the B-frame
re-encoder) while idle and while the publisher publishes, over the same wall time, and prints the
difference as a share of one core. What it covers: the RTMP session, tags -> frames, RTP
packetizing, the room's channel, AAC -> Opus (and with ``--bframes`` the re-encode); with
``--viewer`` also one viewer's SRTP and sending.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.node_process import NodeProcess, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime of every thread


def make_source(path: Path, seconds: int, bframes: bool) -> None:
    x264 = ["-preset", "veryfast", "-bf", "2"] if bframes else ["-preset", "veryfast", "-tune", "zerolatency"]
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
         "-c:v", "libx264", *x264, "-b:v", "6M", "-maxrate", "6M", "-bufsize", "6M", "-g", "60",
         "-c:a", "aac", "-ac", "2", "-b:a", "128k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--bframes", action="store_true", help="an x264 source with B-frames (re-encoded by the node)")
    p.add_argument("--viewer", action="store_true", help="one aiortc WHEP viewer during the publish")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rtmp-bench-"))
    source = tmp / "source.flv"
    make_source(source, args.seconds + 2, args.bframes)
    node = NodeProcess("--rtmp-port", str(free_port()), "--log-level", "warning")
    try:
        node.wait_ready()
        pid = node.proc.pid
        status, resp = node.json("POST", "/token/rtmp", {"room": "bench", "peer": "obs", "ttl": 600}, token=node.secret)
        assert status == 200, resp
        url = resp["data"]["publish_url"]
        time.sleep(1.0)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        idle = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        pub = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(source), "-c", "copy", "-f", "flv", url]
        )
        viewer = None
        time.sleep(1.0)  # past the connect and the first key frame
        if args.viewer:
            status, resp = node.json("POST", "/token/whep", {"room": "bench", "ttl": 600}, token=node.secret)
            viewer = subprocess.Popen(
                [sys.executable, str(ROOT / "tests/e2e/clients/aiortc_client.py"), "whep", f"{node.base}/whep/endpoint",
                 "--token", resp["data"]["token"], "--duration", str(args.seconds)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds - 2)
        busy = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        summary = None
        if viewer is not None:
            out, _ = viewer.communicate(timeout=60)
            summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        pub.wait(timeout=30)
        status, resp = node.json("GET", "/rtmp/conn", token=node.secret)
        print(json.dumps({
            "seconds": args.seconds, "bframes": args.bframes, "viewer": args.viewer,
            "node_idle_core_share": round(idle, 4), "node_busy_core_share": round(busy, 4),
            "per_publisher_core_share": round(busy - idle, 4), "viewer_summary": summary,
        }, indent=1))  # fmt: skip
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
