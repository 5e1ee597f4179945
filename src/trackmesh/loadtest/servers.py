"""The server under test (trackmesh standalone), pinned with taskset; process statistics.

CPU is utime+stime of the whole process tree from /proc/<pid>/stat (all threads, and the
worker processes trackmesh forks); memory is the sum of VmRSS from /proc/<pid>/status.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trackmesh.loadtest.signalling import ServerUrl

__all__ = ["ProcTree", "Server", "TrackmeshServer", "environment", "netns_ok"]

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return out


class ProcTree:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        todo, seen = [self.pid], []
        while todo:
            p = todo.pop()
            seen.append(p)
            todo.extend(_children(p))
        return seen

    def cpu(self) -> float:
        """Seconds of CPU (user + system) used so far by the tree."""
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total / _TICK

    def rss_kb(self) -> int:
        total = 0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def threads_fds(self) -> tuple[int, int]:
        threads = fds = 0
        for p in self.pids():
            try:
                threads += len(os.listdir(f"/proc/{p}/task"))
                fds += len(os.listdir(f"/proc/{p}/fd"))
            except OSError:
                pass
        return threads, fds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


class Server:
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def tree(self) -> ProcTree:
        return ProcTree(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class TrackmeshServer(Server):
    name = "trackmesh"
    #: Room names as they are: the server is ours alone (a ``--url`` deployment gets a random prefix).
    room_prefix = ""

    def __init__(self, cores: str, workdir: Path, *, log_level: str = "warning", workers: int = 0) -> None:
        """``workers`` 0: a one-worker standalone node; N >= 1: a media node with N workers and
        ``--room-spread 1`` (no seeds, the first member of its own cluster: every worker a zenoh member
        on loopback), so one room's viewers spread over its workers (docs/cluster.md)."""
        self.port = free_port()
        self.url = ServerUrl.local(self.port)
        self.secret = "bench-secret-" + os.urandom(6).hex()
        exe = shutil.which("trackmesh") or str(Path(sys.executable).parent / "trackmesh")
        self.log_path = workdir / "trackmesh.log"
        self.version = _pkg_version()
        role = ["standalone", "--workers", "1"]
        if workers:
            role = ["media", "--workers", str(workers), "--room-spread", "1", "--cluster-port", str(free_port()),
                    "--data-dir", str(workdir / "media-data")]  # fmt: skip
        self.proc = subprocess.Popen(
            ["taskset", "-c", cores, exe, *role, "--http-port", str(self.port), "--secret", self.secret,
             "--node-ip", "127.0.0.1", "--log-level", log_level],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT,
        )
        wait_http(self.port, "/api/node/health", self.proc)


def _pkg_version() -> str:
    try:
        from importlib.metadata import version

        return version("trackmesh")
    except Exception:
        return "?"


def netns_ok() -> tuple[bool, str]:
    """True when every interface is lo/v0/v1 and every IPv4 address is in 127.0.0.0/8."""
    out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if line.strip()}
    if not names <= {"lo", "v0", "v1"}:
        return False, f"interfaces {sorted(names)}"
    for line in out.splitlines():
        parts = line.split()
        if parts[2] == "inet" and not parts[3].startswith("127."):
            return False, line
        if parts[2] == "inet6" and not parts[3].startswith("::1/"):
            return False, line
    return True, "lo" + (" + v0(127.0.0.2)" if "v0" in names else "")


def _steal() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields)


class StealMeter:
    def __init__(self) -> None:
        self.start = _steal()

    def share(self) -> float:
        s1, t1 = _steal()
        s0, t0 = self.start
        return (s1 - s0) / max(1, t1 - t0)


def environment(server_cores: str, gen_cores: list[int], profile: str) -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^flags\s*:(.*)$", f.read(), re.M)
        flags = m.group(1) if m else ""
    try:
        import uvloop

        uv = getattr(uvloop, "__version__", "?")
    except ImportError:
        uv = None
    import sysconfig

    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "aes_ni": " aes " in flags + " ",
        "server_cores": server_cores,
        "generator_cores": gen_cores,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_pgo": "-fprofile-use" in (sysconfig.get_config_var("PY_CFLAGS_NODIST") or ""),
        "uvloop": uv,
        "srtp_profile": profile,
        "codec": "VP8 1 Mbps 30 fps 640x360 (key frame every 2 s) + Opus 32 kbps",
        "trackmesh": _pkg_version(),
    }
