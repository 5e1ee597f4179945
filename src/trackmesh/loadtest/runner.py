"""Scenario S1 (broadcast: 1 publisher -> N subscribers, ramped) against one server.

Order of a run: start the server pinned to its cores; pin ourselves to the others; connect
the publisher (no media yet); connect ``idle`` subscribers and measure RSS per idle peer;
start the media; join 5 subscribers one by one (idle join time); fill the first step with a
join storm at ``storm_rate`` joins/s; then per step: settle, hold ``duration`` s, evaluate;
add ``step`` subscribers in a storm and go on, stopping at the first step that fails an SLO,
when the generator itself is saturated, or at ``max_subs``. Every loop here is bounded.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from trackmesh.loadtest.client import SO_TIMESTAMPNS, HeaderReceiver, Transport, kernel_timestamp
from trackmesh.loadtest.headers import HeaderSink, VerifyPolicy, pooled_latencies
from trackmesh.loadtest.media import AUDIO_PT, VIDEO_PT, Publisher, SendLog, Sink
from trackmesh.loadtest.recording import AUDIO, VIDEO, Recording
from trackmesh.loadtest.servers import StealMeter
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate

__all__ = ["S1Config", "run_s1"]

LOSS_SLO = 0.01
P99_SLO_MS = 50.0
FREEZE_SLO_S = 0.5
GEN_SATURATED = 0.70
#: A failed step during which other processes used more than this share of the server's core
#: is not the server's failure: it is held again (at most MAX_EXTRA_HOLDS times in all).
DISTURBED = 0.15
MAX_EXTRA_HOLDS = 3


@dataclass
class S1Config:
    profile: SrtpProfile
    duration: float = 30.0
    step: int = 25
    max_subs: int = 400
    idle_peers: int = 10
    sequential_joins: int = 5
    storm_rate: float = 20.0
    settle: float = 3.0
    join_timeout: float = 15.0
    max_wall: float = 1800.0
    gen_cores: list[int] = field(default_factory=list)
    pacing_bps: float = 2.5e6
    #: Which subscribers decrypt and verify every packet; the others count RTP headers (headers.py).
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)


#: Packets sent in the last this many seconds of a window are not expected yet (loss is judged without them).
LATE_S = 0.3


async def hold_window(duration: float, sinks: Iterable[object]) -> float:
    """Hold a step's window of ``duration`` seconds. LATE_S before its end the header-only subscribers stop
    counting (HeaderSink.cut); returns that cut (unix time): what was sent after it is not expected yet."""
    await asyncio.sleep(max(0.0, duration - LATE_S))
    cut = time.time()
    for sink in sinks:
        if isinstance(sink, HeaderSink):
            sink.cut()
    await asyncio.sleep(min(LATE_S, duration))
    return cut


@dataclass
class Sub:
    tr: Transport
    sink: Sink | HeaderSink
    started: float
    joined: float | None = None  # first decrypted packet
    error: str | None = None


class _RtpSink(Protocol):
    def on_rtp(self, plain: bytes, now: float) -> None: ...


def reference_path(loop: asyncio.AbstractEventLoop, local_ip: str, pub: Publisher, sink: _RtpSink) -> socket.socket:
    """A local socket to which ``pub`` also sends every packet unencrypted, drained into ``sink`` with kernel
    timestamps: the direct path whose latency is subtracted from what subscribers see."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((local_ip, 0))
    sock.setblocking(False)

    def drain() -> None:
        for _ in range(64):
            try:
                data, anc, _f, _a = sock.recvmsg(2048, 64)
            except OSError:
                return
            sink.on_rtp(data, kernel_timestamp(anc))

    loop.add_reader(sock.fileno(), drain)
    pub.reference = (sock, sock.getsockname())
    return sock


def latency_and_freeze_failures(
    added_p99: float | None, raw_p99: float | None, direct_p99: float | None, gaps: list[float]
) -> list[str]:
    """The SLO failures every scenario shares: added p99 latency, and the longest gap in what a subscriber got."""
    reasons = []
    if added_p99 is None or added_p99 >= P99_SLO_MS:
        reasons.append(f"added p99 {_r(added_p99)} ms (raw {_r(raw_p99)}, direct {_r(direct_p99)})")
    if not gaps or max(gaps) > FREEZE_SLO_S:
        reasons.append(f"freeze {_r(max(gaps)) if gaps else None} s")
    return reasons


def server_seconds(cpu0: float | None, cpu1: float | None) -> float | None:
    """Server CPU seconds over a window; None when the server's CPU is not known (a ``--url`` deployment
    whose /metrics has no process collector)."""
    return None if cpu0 is None or cpu1 is None else cpu1 - cpu0


def foreign_load(busy: float, server_share: float | None, server_cores: list[int]) -> float | None:
    """Other processes' use of the server's cores, in cores; None when the server is not on our cores."""
    if not server_cores or server_share is None:
        return None
    return round(max(0.0, busy - server_share), 3)


def per_peer_kb(rss0: int | None, rss1: int | None, peers: int) -> float | None:
    if rss0 is None or rss1 is None or not peers:
        return None
    return round((rss1 - rss0) / peers, 1)


def pct(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.1%}"


def mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def _core_times() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals]
                total = sum(v[:8])
                out[int(name[3:])] = (total - v[3] - v[4], total)
    return out


def _core_busy(a: dict[int, tuple[int, int]], b: dict[int, tuple[int, int]], cores: list[int]) -> float:
    """Busy share of ``cores`` between two samples, in cores (1.0 = one core fully busy)."""
    busy = 0.0
    for c in cores:
        if c in a and c in b:
            busy += (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1])
    return busy


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


class S1Run:
    def __init__(self, cfg: S1Config, server: Any, sig: Any, rec: Recording, local_ip: str) -> None:
        self.cfg = cfg
        self.server = server
        self.sig = sig
        self.rec = rec
        self.local_ip = local_ip
        self.log = SendLog()
        self.subs: list[Sub] = []
        self.cert = DtlsCertificate.generate(datetime.now(UTC).replace(microsecond=0))
        self.loop = asyncio.get_running_loop()
        self.join_idle: list[float] = []
        self.join_storm: list[float] = []
        self.join_failures: list[str] = []
        self.server_cores: list[int] = []
        self.ref_sink = Sink(self.log, {AUDIO_PT: 0, VIDEO_PT: 1})
        self.lags: list[float] = []
        self.headers = HeaderReceiver(self.loop)

    async def _lag_monitor(self) -> None:
        """Event-loop lag of the generator every 10 ms: a stalled generator inflates latency."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - t - 0.01)

    def _reference_path(self, pub: Publisher) -> socket.socket:
        return reference_path(self.loop, self.local_ip, pub, self.ref_sink)

    async def _join(self, storm: bool | None) -> Sub:
        tr = Transport(self.loop, self.local_ip, self.cfg.profile, self.cert)
        pt_kind: dict[int, int] = {}
        sink: Sink | HeaderSink
        if self.cfg.verify.verified(len(self.subs)):
            sink = Sink(self.log, pt_kind)
            tr.on_rtp = sink.on_rtp
        else:
            sink = HeaderSink(pt_kind, (AUDIO, VIDEO))
            tr.count_headers_only(self.headers, sink)
        sub = Sub(tr, sink, time.time())
        self.subs.append(sub)
        try:
            await self.sig.subscribe(tr)
            assert tr.remote is not None
            pt_kind.update(tr.remote.pt_kind)
            if storm is None:  # idle peer: no media yet, wait for DTLS only
                await asyncio.wait_for(asyncio.shield(tr.connected), self.cfg.join_timeout)
                return sub
            deadline = sub.started + self.cfg.join_timeout
            while sink.first_arrival is None:
                if time.time() > deadline:
                    raise TimeoutError("no media within the join timeout")
                await asyncio.sleep(0.005)
            sub.joined = sink.first_arrival
            (self.join_storm if storm else self.join_idle).append((sub.joined - sub.started) * 1000)
        except Exception as exc:
            sub.error = f"{type(exc).__name__}: {exc}"
            self.join_failures.append(sub.error)
        return sub

    async def _storm(self, count: int) -> None:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(self._join(True)))
            await asyncio.sleep(1.0 / self.cfg.storm_rate)
        await asyncio.gather(*tasks)

    def _alive(self) -> list[Sub]:
        return [s for s in self.subs if s.error is None and s.sink.first_arrival is not None]

    async def _window(self, n_target: int) -> dict[str, Any]:
        cfg = self.cfg
        tree = self.server.tree
        subs = self._alive()
        await asyncio.sleep(cfg.settle)
        now = time.time()
        for s in subs:
            s.sink.open_window(now)
        self.ref_sink.open_window(now)
        self.lags = []
        cores0 = _core_times()
        before = {id(s): (s.sink.duplicated, s.sink.reordered, s.sink.corrupted, s.tr.counters["srtp_errors"])
                  for s in subs}
        i0 = len(self.log.times)
        drops0 = self.headers.drops()
        cpu0, gcpu0, wall0 = tree.cpu(), time.process_time(), time.monotonic()
        steal = StealMeter()
        cut = await hold_window(cfg.duration, [s.sink for s in subs])
        cpu1, gcpu1, wall1 = tree.cpu(), time.process_time(), time.monotonic()
        cores1 = _core_times()
        lags = sorted(self.lags)
        ref = sorted(self.ref_sink.lat)
        rss = tree.rss_kb()
        threads, fds = tree.threads_fds()
        real1 = time.time()
        i1 = self.log.index_at(cut)  # everything sent >= LATE_S before the end
        worst_loss, delivered, verified = 0.0, 0, 0
        losses: list[float] = []
        samples = []
        alive = {id(s) for s in subs}
        # Each verified subscriber's latencies stand for its group (headers.pooled_latencies).
        group: dict[int, int] = {}
        for i, s in enumerate(self.subs):
            if id(s) in alive:
                g = cfg.verify.group(i)
                group[g] = group.get(g, 0) + 1
        gaps: list[float] = []
        dup = reord = corrupt = srtp_err = 0
        for i, s in enumerate(self.subs):
            if id(s) not in alive:
                continue
            sk = s.sink
            sk.close_window(real1)
            if isinstance(sk, HeaderSink):
                loss = sk.loss_total()
                delivered += sk.window_received()
            else:
                lo = max(i0, sk.first_index)
                expected = max(0, i1 - lo)
                got = sk.received_between(i0, i1)
                loss = 1 - got / expected if expected else 1.0
                delivered += len(sk.lat)
                verified += 1
                samples.append((sk.lat, group[i]))
            losses.append(loss)
            worst_loss = max(worst_loss, loss)
            gaps.append(sk.max_gap)
            b = before[id(s)]
            dup += sk.duplicated - b[0]
            reord += sk.reordered - b[1]
            corrupt += sk.corrupted - b[2]
            srtp_err += s.tr.counters["srtp_errors"] - b[3]
        lat = pooled_latencies(samples)
        wall = wall1 - wall0
        lat_ms = [_ms(_pct(lat, q)) for q in (50, 95, 99)]
        lat_max = lat[-1] * 1000 if lat else None
        gen_share = (gcpu1 - gcpu0) / wall / max(1, len(cfg.gen_cores))
        server_s = server_seconds(cpu0, cpu1)
        server_share = None if server_s is None else server_s / wall
        failed = len(subs) < n_target
        ref_ms = {"p50": _ms(_pct(ref, 50)), "p99": _ms(_pct(ref, 99)), "max": _ms(ref[-1] if ref else None)}
        added_p99 = lat_ms[2] - ref_ms["p99"] if lat_ms[2] is not None and ref_ms["p99"] is not None else None
        server_core_busy = _core_busy(cores0, cores1, self.server_cores)
        gen_core_busy = _core_busy(cores0, cores1, cfg.gen_cores)
        row: dict[str, Any] = {
            "subscribers": len(subs),
            "verified": verified,
            "target": n_target,
            "window_s": round(wall, 2),
            "pkts_in_per_s": round((i1 - i0) / wall, 1),
            "pkts_out_per_s": round(delivered / wall, 1),
            "mbps_out": None,
            "server_cpu": None if server_share is None else round(server_share, 4),
            "server_us_per_pkt": round(server_s / delivered * 1e6, 2) if delivered and server_s is not None else None,
            "generator_cpu": round(gen_share, 4),
            # Generator CPU per packet its subscribers received (it also publishes: S1's one publisher is ~1 %).
            "generator_us_per_pkt": round((gcpu1 - gcpu0) / delivered * 1e6, 2) if delivered else None,
            "publisher_late_ms": None,
            "steal": round(steal.share(), 4),
            "loss_worst": round(worst_loss, 5),
            "loss_mean": round(sum(losses) / len(losses), 5) if losses else None,
            "latency_ms": {"p50": lat_ms[0], "p95": lat_ms[1], "p99": lat_ms[2], "max": lat_max},
            "direct_path_ms": ref_ms,
            "added_p99_ms": added_p99,
            "generator_loop_lag_ms": {"p99": _ms(_pct(lags, 99)), "max": _ms(lags[-1] if lags else None)},
            "foreign_load_server_cores": foreign_load(server_core_busy, server_share, self.server_cores),
            "foreign_load_generator_cores": round(max(0.0, gen_core_busy - gen_share * len(cfg.gen_cores)), 3),
            "freeze_max_s": round(max(gaps), 3) if gaps else None,
            "duplicated": dup,
            "reordered": reord,
            "corrupted": corrupt,
            "srtp_errors": srtp_err,
            "generator_socket_drops": self.headers.drops() - drops0,
            "rss_kb": rss,
            "threads": threads,
            "fds": fds,
            "join_failures": n_target - len(subs),
        }
        if delivered:
            row["mbps_out"] = round(delivered / wall * self._bytes_per_pkt * 8 / 1e6, 2)
        reasons = []
        if failed:
            reasons.append(f"{n_target - len(subs)} joins failed")
        if worst_loss >= LOSS_SLO:
            reasons.append(f"loss {worst_loss:.2%}")
        reasons += latency_and_freeze_failures(added_p99, lat_ms[2], ref_ms["p99"], gaps)
        row["slo_ok"] = not reasons
        row["slo_fail"] = reasons
        row["generator_saturated"] = gen_share > GEN_SATURATED
        return row

    def _print(self, row: dict[str, Any]) -> None:
        lat = row["latency_ms"]
        print(
            f"  [{self.sig.name}] N={row['subscribers']:4d} (verified {row['verified']} of {row['subscribers']}) "
            f"srv {pct(row['server_cpu'])} "
            f"{row['server_us_per_pkt']} us/pkt gen {row['generator_cpu']:6.1%} "
            f"loss {row['loss_worst']:.3%} p50/p99 {lat['p50'] and round(lat['p50'], 2)}/"
            f"{lat['p99'] and round(lat['p99'], 2)} ms (direct p99 {row['direct_path_ms']['p99']}, "
            f"lag max {row['generator_loop_lag_ms']['max']}, foreign srv/gen "
            f"{row['foreign_load_server_cores']}/{row['foreign_load_generator_cores']}) freeze {row['freeze_max_s']} s "
            f"rss {mb(row['rss_kb'])} MB {'OK' if row['slo_ok'] else 'FAIL ' + ';'.join(row['slo_fail'])}"
            f"{' GENERATOR SATURATED' if row['generator_saturated'] else ''}",
            flush=True,
        )

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.monotonic()
        self._bytes_per_pkt = sum(len(p.payload) + 12 + 16 for p in self.rec.packets) / len(self.rec.packets)
        await self.sig.setup()
        pub_tr = Transport(self.loop, self.local_ip, cfg.profile, self.cert)
        ssrcs = (random.getrandbits(31) | 1, random.getrandbits(31) | 2)
        await self.sig.publish(pub_tr, ssrcs)
        await asyncio.wait_for(asyncio.shield(pub_tr.connected), 15)
        await asyncio.sleep(1.0)
        tree = self.server.tree
        rss0 = tree.rss_kb()
        # Idle peers: ICE + DTLS done, no media anywhere yet.
        idle = await asyncio.gather(*(self._join(None) for _ in range(cfg.idle_peers)))
        idle_ok = [s for s in idle if s.error is None]
        await asyncio.sleep(2.0)
        rss_idle = tree.rss_kb()
        result: dict[str, Any] = {
            "server": self.sig.name,
            "rss_base_kb": rss0,
            "idle_peers": len(idle_ok),
            "rss_per_idle_peer_kb": per_peer_kb(rss0, rss_idle, len(idle_ok)),
        }
        pub = Publisher(pub_tr, self.rec, self.log, ssrcs=ssrcs, pacing_bps=cfg.pacing_bps)
        ref_sock = self._reference_path(pub)
        lag_task = self.loop.create_task(self._lag_monitor())
        # The generator makes few cycles; a full collection over its objects mid-window would
        # show up as latency, so freeze what exists and collect only the young generations.
        gc.freeze()
        pub.start(until=t_start + cfg.max_wall + 120)
        # Idle subscribers get their first packet once media starts (not a join-time sample).
        deadline = time.monotonic() + cfg.join_timeout
        while time.monotonic() < deadline and not all(s.sink.first_arrival for s in idle_ok):
            await asyncio.sleep(0.05)
        for _ in range(cfg.sequential_joins):
            await self._join(False)
            await asyncio.sleep(0.2)
        await self._storm(max(0, cfg.step - cfg.idle_peers - cfg.sequential_joins))
        steps: list[dict[str, Any]] = []
        n = cfg.step
        try:
            while True:
                row = await self._window(n)
                row["publisher_late_ms"] = round(pub.late * 1000, 1)
                pub.late = 0.0
                holds = 1
                while (
                    not row["slo_ok"] and not row["generator_saturated"] and row["join_failures"] == 0
                    and holds < 1 + MAX_EXTRA_HOLDS
                    and (holds == 1 or (row["foreign_load_server_cores"] or 0.0) > DISTURBED)
                ):
                    # This box is shared: one scheduling hiccup can sink a p99 or open a gap. A
                    # failure counts only if the same step fails again, and a failure while other
                    # processes took > DISTURBED of the server's core is held again (bounded).
                    row["retried"] = True
                    steps.append(row)
                    self._print(row)
                    row = await self._window(n)
                    row["publisher_late_ms"] = round(pub.late * 1000, 1)
                    pub.late = 0.0
                    holds += 1
                row["disturbed"] = (row["foreign_load_server_cores"] or 0.0) > DISTURBED
                steps.append(row)
                self._print(row)
                if not row["slo_ok"] or row["generator_saturated"]:
                    break
                if n + cfg.step > cfg.max_subs or time.monotonic() - t_start > cfg.max_wall:
                    break
                n += cfg.step
                await self._storm(cfg.step)
        finally:
            lag_task.cancel()
            self.loop.remove_reader(ref_sock.fileno())
            ref_sock.close()
            await pub.stop()
            for s in self.subs:
                s.tr.close()
            self.headers.close()
            pub_tr.close()
            await self.sig.close()
        passing = [r for r in steps if r["slo_ok"] and not r["generator_saturated"]]
        final = [r for r in steps if not r.get("retried")]
        capacity = max((r["subscribers"] for r in passing), default=0)
        last = final[-1] if final else None
        limited_by = None
        if last is not None:
            if last["generator_saturated"]:
                limited_by = "generator saturated (result refused beyond this step)"
            elif not last["slo_ok"] and last.get("disturbed"):
                busy = last["foreign_load_server_cores"]
                limited_by = (f"INCONCLUSIVE: failed while other processes used {busy:.0%} "
                              "of the server core: " + "; ".join(last["slo_fail"]))
            elif not last["slo_ok"]:
                limited_by = "server: " + "; ".join(last["slo_fail"])
            else:
                limited_by = "max_subs or time limit reached (capacity is at least this)"
        active = [r for r in passing if r["subscribers"]]
        result.update(
            {
                "capacity": capacity,
                "inconclusive": bool(last is not None and not last["slo_ok"] and last.get("disturbed")),
                "limited_by": limited_by,
                "rss_per_active_peer_kb": per_peer_kb(rss0, active[-1]["rss_kb"], active[-1]["subscribers"])
                if active else None,
                "join_ms": {
                    "idle": {"n": len(self.join_idle), "p50": _pct(sorted(self.join_idle), 50),
                             "p99": _pct(sorted(self.join_idle), 99)},
                    "storm": {"n": len(self.join_storm), "rate_per_s": cfg.storm_rate,
                              "p50": _pct(sorted(self.join_storm), 50), "p99": _pct(sorted(self.join_storm), 99)},
                    "failures": self.join_failures[:10],
                    "idle_all": [round(x, 1) for x in self.join_idle],
                    "storm_all": [round(x, 1) for x in self.join_storm],
                },
                "at_load": _at_load(steps),
                "cpu_bound_estimate": _cpu_bound(steps),
                "steps": steps,
                "publisher_sent": pub.sent,
                "client_dtls_early_resends": sum(s.tr.counters["dtls_early_resend"] for s in self.subs),
                "client_dtls_retransmissions": sum(s.tr.dtls.retransmissions for s in self.subs if s.tr.dtls),
                "generator_pid": os.getpid(),
            }
        )
        return result


def _cpu_bound(steps: list[dict[str, Any]]) -> int | None:
    """Subscribers at 85 % of one server core, extrapolated linearly from the busiest clean step."""
    ok = [r for r in steps if (r["server_cpu"] or 0.0) > 0.05 and r["loss_worst"] < LOSS_SLO]
    if not ok:
        return None
    r = max(ok, key=lambda r: r["server_cpu"])
    return int(r["subscribers"] * 0.85 / r["server_cpu"])


def _at_load(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """us of server CPU per forwarded packet at the steps nearest 25/50/75 % of one server core."""
    out: dict[str, Any] = {}
    valid = [r for r in steps if r["server_us_per_pkt"] is not None]
    for target in (0.25, 0.5, 0.75):
        if not valid:
            break
        best = min(valid, key=lambda r: abs(r["server_cpu"] - target))
        out[f"{int(target * 100)}%"] = {"subscribers": best["subscribers"], "server_cpu": best["server_cpu"],
                                        "us_per_pkt": best["server_us_per_pkt"],
                                        "latency_ms": best["latency_ms"]}
    return out


async def run_s1(
    cfg: S1Config, server: Any, sig: Any, rec: Recording, local_ip: str, server_cores: list[int]
) -> dict[str, Any]:
    run = S1Run(cfg, server, sig, rec, local_ip)
    run.server_cores = server_cores
    return await run.run()


def save(path: Path, data: dict[str, Any]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
