"""RTMP capacity and late-viewer join, end to end, beside nginx-rtmp (issue 10's "Speed" list).

Run inside a private network namespace (loopback only)::

    scripts/in-netns.sh .venv/bin/python bench/rtmp_capacity.py publishers [--count 4] [--seconds 15]
    scripts/in-netns.sh .venv/bin/python bench/rtmp_capacity.py nginx [--count 4] [--seconds 15]
    scripts/in-netns.sh .venv/bin/python bench/rtmp_capacity.py join [--viewers 10]

``publishers``: a real ``trackmesh standalone`` node; ``--count`` Debian ffmpeg 5.1 processes
publish a pre-encoded 720p30 2.5 Mbit/s H.264 (no B-frames, key frame every 2 s) + 128 kbit/s
AAC file with ``-c copy`` (the encoders' CPU is not the node's), each into its own room with one
WHEP viewer (GStreamer webrtcbin, RTP counted, not decoded: the viewers' CPU is not the node's
either). The node's CPU (every thread) while they run minus while idle, over the same wall time,
divided by ``--count``: one publisher's share of a core, and its inverse, publishers per core.
Video is passed through; the AAC is transcoded to Opus (what browsers need), so it is included.

``nginx``: the same publishers into Debian's nginx 1.22 with libnginx-mod-rtmp (one worker,
``master_process off``, ``live on``), each with one RTMP player (ffmpeg ``-c copy -f null``):
what a user compares against (nginx relays RTMP to RTMP: no transcode, no SRTP).

``join``: one 720p publisher (key frame every 2 s), then ``--viewers`` aiortc WHEP viewers one
after another at random points of the GOP; each one's first decoded frame after its start (the
offer, the POST, ICE, DTLS, then the GOP cache replay): p50 and max.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.node_process import NodeProcess, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_RTMP = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime of every thread


def make_source(path: Path, seconds: int) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
         "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "2500k", "-maxrate", "2500k",
         "-bufsize", "2500k", "-g", "60", "-c:a", "aac", "-ac", "2", "-b:a", "128k", "-f", "flv", str(path)],
        check=True,
    )  # fmt: skip


def ffmpeg_publish(source: Path, url: str) -> subprocess.Popen[bytes]:
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(source), "-c", "copy", "-f", "flv", url]
    return subprocess.Popen(cmd)


def measure(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def rtmp_key(node: NodeProcess, room: str) -> str:
    status, resp = node.json("POST", "/token/rtmp", {"room": room, "peer": "enc", "ttl": 600}, token=node.secret)
    assert status == 200, resp
    return str(resp["data"]["publish_url"])


def whep_token(node: NodeProcess, room: str) -> str:
    status, resp = node.json("POST", "/token/whep", {"room": room, "ttl": 600}, token=node.secret)
    assert status == 200, resp
    return str(resp["data"]["token"])


def run_publishers(source: Path, count: int, seconds: int) -> dict[str, Any]:
    node = NodeProcess("--rtmp-port", str(free_port()), "--log-level", "warning")
    procs: list[subprocess.Popen[Any]] = []
    try:
        node.wait_ready()
        pid = node.proc.pid
        urls = [rtmp_key(node, f"cap{i}") for i in range(count)]
        time.sleep(1.0)
        idle = measure(pid, seconds)
        procs += [ffmpeg_publish(source, url) for url in urls]
        time.sleep(1.5)
        gst = ["/usr/bin/python3", str(ROOT / "tests/e2e/clients/gst_webrtc_client.py"), "whep"]
        viewers = []
        for i in range(count):
            cmd = [*gst, f"{node.base}/whep/endpoint", "--token", whep_token(node, f"cap{i}"), "--codec", "h264",
                   "--no-decode", "--duration", str(seconds + 2)]  # fmt: skip
            viewers.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        procs += viewers
        time.sleep(2.0)  # past the viewers' setup
        busy = measure(pid, seconds - 1)
        received = []
        for v in viewers:
            out, _ = v.communicate(timeout=60)
            lines = out.strip().splitlines()
            s = json.loads(lines[-1]) if lines else {}
            received.append(s.get("rtp", {}).get("video", {}).get("received", 0))
        per = (busy - idle) / count
        return {
            "server": "trackmesh", "publishers": count, "seconds": seconds,
            "node_idle_core_share": round(idle, 4), "node_busy_core_share": round(busy, 4),
            "per_publisher_core_share": round(per, 4), "publishers_per_core": round(1 / per, 1) if per > 0 else None,
            "viewer_video_rtp_packets": received,
        }  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        node.stop()


def run_nginx(source: Path, count: int, seconds: int) -> dict[str, Any]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not NGINX_RTMP.exists():
        raise SystemExit("libnginx-mod-rtmp is not installed (apt-get install nginx-light libnginx-mod-rtmp)")
    tmp = Path(tempfile.mkdtemp(prefix="nginx-rtmp-"))
    port = free_port()
    (tmp / "nginx.conf").write_text(
        f"load_module {NGINX_RTMP};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n"
        f"pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n"
        "  application live { live on; record off; } } }\n"
    )
    server = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(tmp / "nginx.conf")])
    procs: list[subprocess.Popen[Any]] = []
    try:
        time.sleep(1.0)
        idle = measure(server.pid, seconds)
        urls = [f"rtmp://127.0.0.1:{port}/live/k{i}" for i in range(count)]
        procs += [ffmpeg_publish(source, url) for url in urls]
        time.sleep(1.5)
        play = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1", "-i"]
        players = [
            subprocess.Popen([*play, url, "-c", "copy", "-f", "null", "-"], stdout=subprocess.PIPE, text=True)
            for url in urls
        ]
        procs += players
        time.sleep(2.0)
        busy = measure(server.pid, seconds - 1)
        per = (busy - idle) / count
        frames = []
        for player in players:  # what each RTMP player received: the relay really relayed
            player.kill()
            out, _ = player.communicate(timeout=30)
            counts = [int(line[6:]) for line in out.splitlines() if line.startswith("frame=")]
            frames.append(counts[-1] if counts else 0)
        return {
            "server": "nginx-rtmp", "publishers": count, "seconds": seconds,
            "node_idle_core_share": round(idle, 4), "node_busy_core_share": round(busy, 4),
            "per_publisher_core_share": round(per, 4), "publishers_per_core": round(1 / per, 1) if per > 0 else None,
            "player_video_frames": frames,
        }  # fmt: skip
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        server.terminate()
        server.wait(timeout=10)


def run_join(source: Path, viewers: int) -> dict[str, Any]:
    node = NodeProcess("--rtmp-port", str(free_port()), "--log-level", "warning")
    pub = None
    try:
        node.wait_ready()
        pub = ffmpeg_publish(source, rtmp_key(node, "join"))
        time.sleep(2.0)
        rng = random.Random(10)
        firsts: list[float] = []
        for _ in range(viewers):
            time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the 2 s GOP
            out = subprocess.run(
                [sys.executable, str(ROOT / "tests/e2e/clients/aiortc_client.py"), "whep", f"{node.base}/whep/endpoint",
                 "--token", whep_token(node, "join"), "--frames", "5", "--duration", "5"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            s = json.loads(out.stdout.strip().splitlines()[-1])
            if s.get("first_frame_s") is not None:
                firsts.append(float(s["first_frame_s"]))
        return {
            "viewers": viewers, "decoded": len(firsts), "first_frame_s": sorted(firsts),
            "p50_s": round(statistics.median(firsts), 3) if firsts else None, "max_s": max(firsts, default=None),
        }  # fmt: skip
    finally:
        if pub is not None:
            pub.kill()
            pub.wait()
        node.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["publishers", "nginx", "join"])
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--viewers", type=int, default=10)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rtmp-cap-"))
    source = tmp / "source.flv"
    length = args.seconds + 8 if args.mode != "join" else args.viewers * 3 + 10
    make_source(source, length)
    if args.mode == "publishers":
        result = run_publishers(source, args.count, args.seconds)
    elif args.mode == "nginx":
        result = run_nginx(source, args.count, args.seconds)
    else:
        result = run_join(source, args.viewers)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
