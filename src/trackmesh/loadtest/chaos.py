"""The chaos run: kill -9 a media node and a gateway in turn while clients reconnect through the gateways.

    trackmesh-bench chaos --minutes 5 --every 30

A one-zone cluster of ``trackmesh dev-cluster`` members (2 gateways, 2 media nodes by default;
:mod:`trackmesh.loadtest.chaos_cluster` restarts a killed member like a supervisor would) carries one
room: a WHIP publisher, ``whep`` WHEP viewers and ``sdk`` SDK viewers (the load generator's clients), each
talking to a gateway of its own (round robin) and failing over to the next one when a call fails.

Clients reconnect the way an application would: a viewer that got no media for ``stall`` s (1 s), or none
within ``grace`` s (3 s) of a new session, ends its session (WHEP ``DELETE`` / SDK ``disconnect``, best
effort) and opens a new one; the publisher sends a consent check every 0.5 s and reconnects after
``pub_stall`` s (1.5 s) without any answer from the server.

Every ``every`` s, half a period into it, the next kill: media nodes and gateways in turn, the media node
with the most sessions, the gateways round robin. Right after each kill a fresh WHEP viewer joins through
the gateway used last (which may be the dead one) and fails over: the time to its first media is recorded.
Per kill and client the run reports how long after the kill media was back for good (the end of the last
gap > 0.5 s that began in the kill's period; 0 when media never stopped), whether the killed member's
processes all went away, and when it answered ready again. At the end every client leaves, and the run
waits until the nodes' and gateways' APIs show no session, room, registry entry or channel left, and lists
any member process still alive after the cluster is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trackmesh.loadtest.chaos_cluster import ChaosCluster, KillRecord
from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.media import Publisher, SendLog, Sink
from trackmesh.loadtest.recording import Recording, load
from trackmesh.loadtest.sdk_client import SdkClient, SdkPlan, TrackmeshSdk
from trackmesh.loadtest.sessions import Resource, WhipWhepSessions
from trackmesh.loadtest.signalling import ServerUrl
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.sdk.protocol import session_pb2
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate

__all__ = ["ChaosConfig", "recovery_after", "run_chaos", "summary_lines"]

ROOM = "chaos"
GAP = 0.5  # a viewer's silence longer than this is an outage (audio alone is 50 packets/s)
PUBLISHER_GAP = 1.0  # the publisher hears the server every 0.5 s (its consent checks' answers)


@dataclass
class ChaosConfig:
    seconds: float = 300.0
    every: float = 30.0
    media: int = 2
    gateways: int = 2
    workers: int = 1
    whep: int = 4
    sdk: int = 2
    target: float = 5.0
    stall: float = 1.0
    grace: float = 3.0
    pub_stall: float = 1.5
    cleanup_timeout: float = 45.0
    workdir: Path = field(default_factory=lambda: Path("."))
    http_port: int = 3000
    cluster_port: int = 7450


@dataclass
class Client:
    name: str
    kind: str  # "whip", "whep" or "sdk"
    gw: int
    arrivals: array[float] = field(default_factory=lambda: array("d"))  # media (viewers) / answers (publisher)
    tr: Transport | None = None
    res: Resource | None = None
    sdk: SdkClient | None = None
    sink: Sink | None = None
    session_at: float = 0.0
    last_rx: float = 0.0
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0


def recovery_after(
    arrivals: list[float] | array[float], t_kill: float, until: float, gap: float = GAP
) -> float | None:
    """Seconds from ``t_kill`` until media was back for good: the end of the last gap > ``gap`` that began in
    [t_kill - gap, until); 0.0 when there was none; None when nothing arrived after the kill before ``until``."""
    i = bisect_left(arrivals, t_kill)
    j = bisect_left(arrivals, until)
    if i >= j:
        return None
    back = 0.0
    prev = arrivals[i - 1] if i > 0 else None
    for k in range(i, j):
        a = arrivals[k]
        if prev is not None and a - prev > gap and prev >= t_kill - gap:
            back = a - t_kill
        prev = a
    return back


class ChaosRun:
    def __init__(self, cfg: ChaosConfig, rec: Recording) -> None:
        self.cfg = cfg
        self.rec = rec
        self.loop = asyncio.get_running_loop()
        self.cert = DtlsCertificate.generate(datetime.now(UTC).replace(microsecond=0))
        self.log = SendLog()
        self.cluster = ChaosCluster(cfg.workdir, media=cfg.media, gateways=cfg.gateways, workers=cfg.workers,
                                    http_port=cfg.http_port, cluster_port=cfg.cluster_port)
        self.stopping = False
        self.clients: list[Client] = []
        self.publisher: Publisher | None = None
        self.probes: list[dict[str, Any]] = []

    # -- gateways ------------------------------------------------------------------------------

    def _gw_port(self, c: Client) -> int:
        gws = self.cluster.gateways
        return gws[c.gw % len(gws)].http_port

    def _whip_whep(self, c: Client) -> WhipWhepSessions:
        return WhipWhepSessions(self._gw_port(c), self.cluster.secret, ROOM, timeout=5.0)

    # -- one session ---------------------------------------------------------------------------

    def _viewer_transport(self, c: Client) -> Transport:
        pt_kind: dict[int, int] = {}
        sink = Sink(self.log, pt_kind)

        def on_rtp(plain: bytes, now: float) -> None:
            before = sink.received
            sink.on_rtp(plain, now)
            if sink.received != before:
                c.arrivals.append(now)
                c.last_rx = now

        tr = Transport(self.loop, "127.0.0.1", SrtpProfile.AEAD_AES_128_GCM, self.cert, on_rtp)
        c.sink = sink
        return tr

    async def _open(self, c: Client) -> None:
        c.session_at = time.time()
        if c.kind == "whip":
            tr = Transport(self.loop, "127.0.0.1", SrtpProfile.AEAD_AES_128_GCM, self.cert)
            c.tr = tr
            ssrcs = (random.getrandbits(31) | 1, random.getrandbits(31) | 2)
            c.res = await self._whip_whep(c).publish_as(tr, ssrcs, c.name)
            await asyncio.wait_for(asyncio.shield(tr.connected), 5.0)
            if self.publisher is not None:
                await self.publisher.stop()
            self.publisher = Publisher(tr, self.rec, self.log, ssrcs=ssrcs)
            self.publisher.start(until=time.monotonic() + 24 * 3600)
            c.last_rx = time.time()
            return
        tr = self._viewer_transport(c)
        c.tr = tr
        if c.kind == "whep":
            c.res = await self._whip_whep(c).view(tr)
        else:
            sdk = TrackmeshSdk(ServerUrl.local(self._gw_port(c)), self.cluster.secret)
            plan = SdkPlan(audio_sender=False, video_sender=False, audio_receivers=1, video_receivers=1)
            c.sdk, _ = await sdk.connect(tr, ROOM, c.name, plan, (1, 2))
        assert tr.remote is not None and c.sink is not None
        c.sink.pt_kind.update(tr.remote.pt_kind)

    async def _close(self, c: Client, *, wait: bool) -> None:
        """End the client's session, best effort (its node or gateway may be dead), and drop its transport."""
        tr, res, sdk = c.tr, c.res, c.sdk
        c.tr, c.res, c.sdk = None, None, None
        if sdk is not None and tr is not None and not tr.closed:
            req = session_pb2.Request()
            req.session.disconnect.SetInParent()
            with contextlib.suppress(Exception):
                sdk.request(req)
            await asyncio.sleep(0.2)
            sdk.close()
        if tr is not None:
            tr.close()
        if res is not None:
            task = self.loop.create_task(self._delete(c, res))
            if wait:
                await task

    async def _delete(self, c: Client, res: Resource) -> None:
        for k in range(len(self.cluster.gateways)):
            port = self.cluster.gateways[(c.gw + k) % len(self.cluster.gateways)].http_port
            with contextlib.suppress(Exception):
                status = await WhipWhepSessions(port, self.cluster.secret, ROOM, timeout=3.0).end(res)
                if status in (200, 204, 404):
                    return

    def _stalled(self, c: Client, now: float) -> bool:
        tr = c.tr
        if tr is None or tr.closed:
            return True
        if c.kind == "whip":
            return now - c.last_rx > self.cfg.pub_stall
        if c.last_rx > c.session_at:
            return now - c.last_rx > self.cfg.stall
        return now - c.session_at > self.cfg.grace

    async def _keep(self, c: Client) -> None:
        """Keep ``c`` connected until the run stops: (re)connect, supervise, fail over between gateways."""
        rx_seen = 0
        next_check = 0.0
        while not self.stopping:
            try:
                await self._open(c)
            except Exception as exc:
                c.error_count += 1
                if len(c.errors) < 20:
                    c.errors.append(f"{time.time():.1f} gw{c.gw % len(self.cluster.gateways)} "
                                    f"{type(exc).__name__}: {exc}"[:300])
                await self._close(c, wait=False)
                c.gw += 1
                await asyncio.sleep(0.2)
                continue
            while not self.stopping:
                await asyncio.sleep(0.1)
                now = time.time()
                tr = c.tr
                if c.kind == "whip" and tr is not None and not tr.closed:
                    if tr.counters["rx"] != rx_seen:
                        rx_seen = tr.counters["rx"]
                        c.last_rx = now
                        c.arrivals.append(now)
                    if now >= next_check and tr.ice is not None:
                        tr._send_check()  # consent check every 0.5 s (RFC 7675 allows more than the minimum)
                        next_check = now + 0.5
                if self._stalled(c, now):
                    c.reconnects.append({"at": round(now, 3), "last_rx": round(c.last_rx, 3),
                                         "session_at": round(c.session_at, 3)})
                    await self._close(c, wait=False)
                    break

    # -- kills ---------------------------------------------------------------------------------

    async def _probe_join(self, rec: KillRecord, gw: int) -> None:
        """A fresh viewer right after the kill, through gateway ``gw`` first (maybe the dead one)."""
        c = Client(f"probe{len(self.probes) + 1}", "whep", gw)
        t0 = time.time()
        out: dict[str, Any] = {"kill_at": rec.at, "first_gateway": gw % len(self.cluster.gateways)}
        try:
            while time.time() - t0 < 15.0:
                try:
                    await self._open(c)
                except Exception as exc:
                    out.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}"[:200])
                    await self._close(c, wait=False)
                    c.gw += 1
                    await asyncio.sleep(0.2)
                    continue
                while not c.arrivals and time.time() - c.session_at < self.cfg.grace:
                    await asyncio.sleep(0.02)
                if c.arrivals:
                    out["media_after_s"] = round(c.arrivals[0] - t0, 3)
                    break
                await self._close(c, wait=False)
        finally:
            await self._close(c, wait=True)
            self.probes.append(out)

    async def _pick_media(self) -> Any:
        best, most = self.cluster.media[0], -1
        for m in self.cluster.media:
            n = await self.cluster.sessions(m)
            if n is not None and n > most:
                best, most = m, n
        return best

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        cluster = self.cluster
        await cluster.start()
        print(f"chaos: {len(cluster.members)} members up ({cfg.gateways} gateways, {cfg.media} media nodes)",
              flush=True)
        n_gw = len(cluster.gateways)
        self.clients = [Client("chaos-publisher", "whip", 0)]
        self.clients += [Client(f"whep{i + 1}", "whep", i + 1) for i in range(cfg.whep)]
        self.clients += [Client(f"sdk{i + 1}", "sdk", i) for i in range(cfg.sdk)]
        tasks = [self.loop.create_task(self._keep(self.clients[0]))]
        await asyncio.sleep(1.0)
        tasks += [self.loop.create_task(self._keep(c)) for c in self.clients[1:]]
        viewers = self.clients[1:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(c.arrivals for c in viewers):
            await asyncio.sleep(0.1)
        print(f"chaos: {sum(1 for c in viewers if c.arrivals)}/{len(viewers)} viewers have media; "
              f"a kill every {cfg.every:g} s for {cfg.seconds:g} s", flush=True)
        kills: list[KillRecord] = []
        probe_tasks = []
        t0 = time.time()
        n_kills = max(1, int(cfg.seconds // cfg.every))
        try:
            for k in range(n_kills):
                await asyncio.sleep(max(0.0, t0 + (k + 0.5) * cfg.every - time.time()))
                if k % 2 == 0:
                    victim = await self._pick_media()
                else:
                    victim = cluster.gateways[(k // 2) % n_gw]
                rec = await cluster.kill(victim)
                rec.loadavg_1m = round(os.getloadavg()[0], 2)  # the box is shared: how busy it was
                kills.append(rec)
                gw_index = cluster.gateways.index(victim) if victim.role == "gateway" else k
                probe_tasks.append(self.loop.create_task(self._probe_join(rec, gw_index)))
                print(f"  kill {k + 1}/{n_kills}: {victim.role} {victim.node} (sessions {rec.sessions_before})",
                      flush=True)
            await asyncio.sleep(max(0.0, t0 + (n_kills + 0.5) * cfg.every - time.time()))
        finally:
            self.stopping = True
            await asyncio.gather(*tasks, *probe_tasks, return_exceptions=True)
            if self.publisher is not None:
                await self.publisher.stop()
            # Everybody leaves; then the APIs must show nothing left behind.
            await asyncio.gather(*(self._close(c, wait=True) for c in self.clients), return_exceptions=True)
        left_at = time.time()
        cleanup = await self._wait_clean(left_at)
        stop = cluster.stop()
        return self._result(kills, t0, cleanup, stop)

    def _clean(self, state: dict[str, Any]) -> bool:
        media_nodes = sorted(m.node for m in self.cluster.media)
        for key, st in state.items():
            if "error" in st:
                return False
            if key.startswith("media"):
                if st["endpoints"] or st["rooms"] or st["registry_remote_members"] or st["channels_imported"] \
                        or st["channels_exported"]:
                    return False
            elif st["nodes"] != media_nodes or st["sessions_reported"]:
                return False
        return True

    async def _wait_clean(self, left_at: float) -> dict[str, Any]:
        state: dict[str, Any] = {}
        while time.time() - left_at < self.cfg.cleanup_timeout:
            state = await self.cluster.registry_state()
            if self._clean(state):
                return {"clean": True, "clean_after_s": round(time.time() - left_at, 2), "state": state}
            await asyncio.sleep(0.5)
        return {"clean": False, "clean_after_s": None, "state": state}

    def _result(self, kills: list[KillRecord], t0: float, cleanup: dict[str, Any],
                stop: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        per_kill = []
        for n, rec in enumerate(kills):
            until = kills[n + 1].at if n + 1 < len(kills) else t0 + (len(kills) + 0.5) * cfg.every
            rec_s: dict[str, float | None] = {}
            for c in self.clients:
                r = recovery_after(c.arrivals, rec.at, until, PUBLISHER_GAP if c.kind == "whip" else GAP)
                rec_s[c.name] = None if r is None else round(r, 3)
            vals = [v for v in rec_s.values()]
            worst = None if any(v is None for v in vals) else max(v for v in vals if v is not None)
            probe = next((p for p in self.probes if p["kill_at"] == rec.at), {})
            per_kill.append({
                "role": rec.role, "node": rec.node, "at_s": round(rec.at - t0, 2),
                "sessions_before": rec.sessions_before, "recovery_s": rec_s, "worst_recovery_s": worst,
                "all_back_within_target": worst is not None and worst <= cfg.target,
                "probe_join_media_s": probe.get("media_after_s"), "probe_errors": probe.get("errors", [])[:5],
                "processes_gone_after_s": rec.gone_after_s, "left_behind": rec.left_behind,
                "restarted_ready_s": rec.restarted_ready_s, "restart_attempts": rec.restart_attempts,
                "loadavg_1m": rec.loadavg_1m,
            })
        clients = {c.name: {"kind": c.kind, "reconnects": len(c.reconnects), "errors": c.error_count,
                            "first_errors": c.errors[:5], "media_packets": len(c.arrivals)} for c in self.clients}
        return {
            "config": {"seconds": cfg.seconds, "every": cfg.every, "media": cfg.media, "gateways": cfg.gateways,
                       "workers": cfg.workers, "whep": cfg.whep, "sdk": cfg.sdk, "target_s": cfg.target,
                       "stall_s": cfg.stall, "grace_s": cfg.grace, "publisher_stall_s": cfg.pub_stall},
            "kills": per_kill,
            "clients": clients,
            "cleanup": cleanup,
            "processes": stop,
            "member_exits": self.cluster.exits,
            "verdicts": {
                "every_client_back_within_target": bool(per_kill) and all(k["all_back_within_target"]
                                                                          for k in per_kill),
                "no_stuck_registry_entries": cleanup["clean"],
                "no_process_left_behind": not stop["left_behind"] and all(not k["left_behind"] for k in per_kill),
            },
            "log_tails": self.cluster.log_tail() if not cleanup["clean"] or stop["left_behind"] else {},
        }


def summary_lines(result: dict[str, Any]) -> list[str]:
    c = result["config"]
    lines = [f"chaos {c['seconds'] / 60:g} min, a kill every {c['every']:g} s: {c['gateways']} gateways, "
             f"{c['media']} media nodes; 1 WHIP publisher, {c['whep']} WHEP + {c['sdk']} SDK viewers"]
    for n, k in enumerate(result["kills"], 1):
        rec = k["recovery_s"]
        worst = k["worst_recovery_s"]
        lines.append(
            f"  kill {n:2d} at {k['at_s']:6.1f} s: {k['role']:<7} {k['node']} (sessions {k['sessions_before']}): "
            f"worst back after {worst if worst is not None else 'NEVER'} s "
            f"[{', '.join(f'{name} {v}' for name, v in rec.items())}]; fresh join media {k['probe_join_media_s']} s; "
            f"processes gone {k['processes_gone_after_s']} s; ready again {k['restarted_ready_s']} s; "
            f"load average {k.get('loadavg_1m')}"
        )
    v = result["verdicts"]
    cl = result["cleanup"]
    lines.append(f"every client back with media within {c['target_s']:g} s of each kill: "
                 f"{'MET' if v['every_client_back_within_target'] else 'MISSED'}")
    lines.append(f"no stuck registry entries (sessions, rooms, registry entries, channels, gateway directory): "
                 f"{'MET' if v['no_stuck_registry_entries'] else 'MISSED'} (clean {cl['clean_after_s']} s after "
                 f"the clients left)")
    lines.append(f"no process left behind ({result['processes']['processes_started']} started): "
                 f"{'MET' if v['no_process_left_behind'] else 'MISSED ' + str(result['processes']['left_behind'])}")
    return lines


async def run_chaos(cfg: ChaosConfig) -> dict[str, Any]:
    return await ChaosRun(cfg, load(None)).run()
