"""The chaos run's cluster: ``trackmesh dev-cluster``'s members, supervised so that a killed one comes back.

The members, their ports and seeds are :mod:`trackmesh.cli.dev_cluster`'s (``plan`` and ``command``), each
started with the same ``die_with_parent``. dev-cluster itself does not restart a member that died, and a
chaos run that kills one every 30 s would soon have none left; here a killed member is started again
``restart_delay`` s after it died, with every other member as its seeds, as a process supervisor
(systemd ``Restart=always``) would. All members listen on 127.0.0.1 only, scouting off (their default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackmesh.cli.dev_cluster import Member, command, die_with_parent, plan, stop_all
from trackmesh.loadtest.probes import get_json
from trackmesh.loadtest.servers import ProcTree

__all__ = ["ChaosCluster", "KillRecord"]


@dataclass
class KillRecord:
    role: str
    node: int
    at: float  # time.time() of the SIGKILL
    pids: list[int]  # the member and its worker processes at the kill
    sessions_before: int | None = None
    gone_after_s: float | None = None  # every pid of ``pids`` reaped or gone
    left_behind: list[int] = field(default_factory=list)
    procs: list[tuple[int, int]] = field(default_factory=list)  # (pid, start time) of ``pids``
    restarted_ready_s: float | None = None  # from the kill until the restarted member answered ready
    restart_attempts: int = 0
    loadavg_1m: float | None = None


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, started: int) -> bool:
    """The same process (not a later one that reuses the pid: the box runs other work) is still running."""
    return _start_time(pid) == started


class ChaosCluster:
    """One zone: ``gateways`` gateways and ``media`` media nodes of ``workers`` workers each."""

    def __init__(self, workdir: Path, *, media: int = 2, gateways: int = 2, workers: int = 1,
                 http_port: int = 3000, cluster_port: int = 7450, restart_delay: float = 1.0) -> None:
        self.args = argparse.Namespace(
            zones=1, media_per_zone=media, gateways_per_zone=gateways, workers=workers, http_port=http_port,
            cluster_port=cluster_port, webrtc_port=0, log_level="warning", routers_per_zone=0, connector=False,
        )
        self.secret = "chaos-" + secrets.token_urlsafe(18)
        self.members: list[Member] = plan(self.args)
        self.workdir = workdir
        self.restart_delay = restart_delay
        self.all_pids: set[tuple[int, int]] = set()  # (pid, start time): every process of ours ever seen
        self.exits: list[dict[str, Any]] = []  # members that died without being killed by us
        self._logs: list[Any] = []

    @property
    def gateways(self) -> list[Member]:
        return [m for m in self.members if m.role == "gateway"]

    @property
    def media(self) -> list[Member]:
        return [m for m in self.members if m.role == "media"]

    def _spawn(self, m: Member) -> None:
        seeds = [o.seed for o in self.members if o is not m]  # a restart: every other member is up
        log = (self.workdir / f"{m.role}-{m.node}.log").open("ab")
        self._logs.append(log)
        m.proc = subprocess.Popen(command(m, seeds, self.args, self.secret), stdout=log, stderr=subprocess.STDOUT,
                                  preexec_fn=die_with_parent)
        self._note(m.proc.pid)

    async def start(self, timeout: float = 60.0) -> None:
        for i, m in enumerate(self.members):
            seeds = [earlier.seed for earlier in self.members[:i]]
            log = (self.workdir / f"{m.role}-{m.node}.log").open("ab")
            self._logs.append(log)
            m.proc = subprocess.Popen(command(m, seeds, self.args, self.secret), stdout=log,
                                      stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            self._note(m.proc.pid)
        deadline = time.monotonic() + timeout
        for m in self.members:
            while not await self.ready(m):
                if m.proc is not None and m.proc.poll() is not None:
                    raise RuntimeError(f"{m.role} {m.node} exited ({m.proc.returncode}) at start")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{m.role} {m.node} not ready after {timeout:g} s")
                await asyncio.sleep(0.2)
        self._note_pids()

    def _note_pids(self) -> None:
        for m in self.members:
            if m.proc is not None:
                for pid in ProcTree(m.proc.pid).pids():
                    self._note(pid)

    def _note(self, pid: int) -> tuple[int, int] | None:
        started = _start_time(pid)
        if started is None:
            return None
        self.all_pids.add((pid, started))
        return pid, started

    async def ready(self, m: Member) -> bool:
        try:
            status, body = await get_json(m.http_port, "/api/node/health", timeout=2.0)
        except Exception:
            return False
        return status == 200 and bool(body and body.get("data", {}).get("ready"))

    async def sessions(self, m: Member) -> int | None:
        """Endpoints on a media node (sum over its workers), None when it does not answer."""
        try:
            status, body = await get_json(m.http_port, "/api/node/info", timeout=2.0)
        except Exception:
            return None
        if status != 200 or not body:
            return None
        return sum(int(w.get("endpoints", 0)) for w in body["data"]["workers"] if "error" not in w)

    async def kill(self, m: Member) -> KillRecord:
        """SIGKILL the member (not its workers: their fate is what we check), then restart it."""
        assert m.proc is not None
        pids = ProcTree(m.proc.pid).pids()
        procs = [p for p in (self._note(pid) for pid in pids) if p is not None]
        sessions = await self.sessions(m) if m.role == "media" else None
        rec = KillRecord(m.role, m.node, time.time(), pids, sessions)
        rec.procs = procs
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
        asyncio.get_running_loop().create_task(self._after_kill(m, rec))
        return rec

    async def _after_kill(self, m: Member, rec: KillRecord) -> None:
        t0 = time.monotonic()
        # Workers of a killed node must go too (their parent-death signal); give them 5 s.
        while time.monotonic() - t0 < 5.0 and any(_alive(p, s) for p, s in rec.procs):
            await asyncio.sleep(0.05)
        rec.left_behind = [p for p, s in rec.procs if _alive(p, s)]
        if not rec.left_behind:
            rec.gone_after_s = round(time.monotonic() - t0, 3)
        await asyncio.sleep(max(0.0, self.restart_delay - (time.monotonic() - t0)))
        for _attempt in range(5):
            rec.restart_attempts += 1
            self._spawn(m)
            while m.proc is not None and m.proc.poll() is None:
                if await self.ready(m):
                    rec.restarted_ready_s = round(time.time() - rec.at, 2)
                    self._note_pids()
                    return
                if time.time() - rec.at > 60:
                    return
                await asyncio.sleep(0.1)
            # Refused (e.g. its liveliness token still seen as alive): try again shortly.
            await asyncio.sleep(1.0)

    async def registry_state(self) -> dict[str, Any]:
        """What the APIs say about sessions and registry entries, per member."""
        out: dict[str, Any] = {}
        for m in self.members:
            key = f"{m.role}-{m.node}"
            try:
                status, body = await get_json(m.http_port, "/api/node/info", timeout=3.0)
            except Exception as exc:
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            data = (body or {}).get("data", {})
            if m.role == "media":
                workers = data.get("workers", [])
                out[key] = {
                    "endpoints": sum(int(w.get("endpoints", 0)) for w in workers if "error" not in w),
                    "rooms": sum(int(w.get("rooms", 0)) for w in workers if "error" not in w),
                    "registry_remote_members": sum(int(w.get("cluster", {}).get("registry_remote_members", 0))
                                                   for w in workers),
                    "channels_imported": sum(int(w.get("cluster", {}).get("channels_imported", 0))
                                             for w in workers),
                    "channels_exported": sum(int(w.get("cluster", {}).get("channels_exported", 0))
                                             for w in workers),
                }
            else:
                nodes = data.get("nodes", [])
                out[key] = {
                    "nodes": sorted(int(n.get("node", -1)) for n in nodes),
                    "sessions_reported": sum(int(n.get("sessions", 0)) for n in nodes),
                    "status": status,
                }
        return out

    def stop(self) -> dict[str, Any]:
        """Stop every member (SIGINT, then SIGKILL after 15 s) and list any process of ours still alive."""
        self._note_pids()
        stop_all(self.members, signal.SIGINT)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(_alive(p, s) for p, s in self.all_pids):
            time.sleep(0.1)
        left = sorted(p for p, s in self.all_pids if _alive(p, s))
        cmdlines = {}
        for pid in left:
            with contextlib.suppress(OSError):
                cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:300]
        for log in self._logs:
            with contextlib.suppress(OSError):
                log.close()
        return {"processes_started": len(self.all_pids), "left_behind": left, "left_behind_cmdlines": cmdlines}

    def log_tail(self, lines: int = 20) -> dict[str, list[str]]:
        out = {}
        for p in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                out[p.name] = p.read_text(errors="replace").splitlines()[-lines:]
        return out
