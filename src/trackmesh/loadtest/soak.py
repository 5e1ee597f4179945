"""The soak run: one publisher, a steady audience at 70 % of capacity, and churn, for a long time.

    trackmesh-bench soak --minutes 30 --capacity 375      # 262 steady viewers (70 %), churn 1/s
    trackmesh-bench soak --minutes 30 --viewers 200
    trackmesh-bench soak --minutes 30                     # measures the capacity first (an S1 ramp)

A ``trackmesh standalone`` (one media worker, pinned with taskset like S1) gets one WHIP publisher
replaying the recording and ``viewers`` WHEP viewers that stay the whole run (the *steady* viewers,
whose delivery is measured). On top, one *churn* viewer joins every ``1/churn`` s, must get media,
and leaves ``churn_life`` s later: every other one with a WHEP ``DELETE``, the others by just
going silent (the server reaps them when consent expires), so both ways out are exercised.

Every ``sample_every`` s a sample records: the server tree's RSS, CPU share, threads and open fds;
the node's own loop lag (``trackmesh_loop_lag_seconds`` from /metrics: how late the worker's timer
fired) and endpoints; the latency of ``GET /api/node/health`` probed every 0.5 s (the HTTP layer
and worker 0 share the loop); per steady viewer the share of the packets sent in the interval that
arrived (payload hashes against the send log, as S1; only packets sent >= 300 ms before the sample
count); latency percentiles; churn joins/leaves; the generator's own CPU and loop lag and the load
of other processes on the box (``foreign_cores``: busy cores minus server minus generator).

The summary judges drift after the warm-up (default: the first 20 % of the run, at most 3 min):
RSS flat within 5 % of the first post-warm-up sample, no fd growth, delivery >= 99.9 %.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.media import Publisher, SendLog, Sink
from trackmesh.loadtest.probes import HealthProber, LoopLagMonitor, percentile, scrape_metrics
from trackmesh.loadtest.recording import Recording
from trackmesh.loadtest.runner import _core_busy, _core_times
from trackmesh.loadtest.sessions import Resource, WhipWhepSessions
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate

__all__ = ["SoakConfig", "run_soak", "summarize"]

RSS_FLAT = 0.05
DELIVERY_TARGET = 0.999
FD_SLACK = 3  # HTTP connections of probes and churn that happen to be open at the instant of a sample
SETTLE = 0.3  # a packet counts once it was sent this long before the sample
SETTLE_AFTER_JOINS = 3.0


@dataclass
class SoakConfig:
    seconds: float
    viewers: int
    profile: SrtpProfile = SrtpProfile.AEAD_AES_128_GCM
    churn_per_s: float = 1.0
    churn_life: float = 10.0
    sample_every: float = 10.0
    warmup: float | None = None
    storm_rate: float = 20.0
    join_timeout: float = 15.0
    pacing_bps: float = 2.5e6
    gen_cores: list[int] = field(default_factory=list)
    server_cores: list[int] = field(default_factory=list)

    def warmup_s(self) -> float:
        return self.warmup if self.warmup is not None else min(180.0, 0.2 * self.seconds)


@dataclass
class Viewer:
    tr: Transport
    sink: Sink
    started: float
    res: Resource | None = None
    joined: float | None = None
    error: str | None = None
    got: int = 0
    expected: int = 0


class SoakRun:
    def __init__(self, cfg: SoakConfig, server: Any, rec: Recording, local_ip: str) -> None:
        self.cfg = cfg
        self.server = server
        self.rec = rec
        self.local_ip = local_ip
        self.loop = asyncio.get_running_loop()
        self.cert = DtlsCertificate.generate(datetime.now(UTC).replace(microsecond=0))
        self.log = SendLog()
        self.sig = WhipWhepSessions(server.port, server.secret, "soak")
        self.steady: list[Viewer] = []
        self.churn_tasks: set[asyncio.Task[None]] = set()
        self.churn = {"joins": 0, "join_failures": 0, "leaves_delete": 0, "leaves_silent": 0, "delete_errors": 0}
        self.churn_join_ms: list[float] = []
        self.churn_errors: list[str] = []
        self._churn_n = 0
        self.steady_retries = 0

    async def _join(self, timeout: float) -> Viewer:
        tr = Transport(self.loop, self.local_ip, self.cfg.profile, self.cert)
        pt_kind: dict[int, int] = {}
        sink = Sink(self.log, pt_kind)
        tr.on_rtp = sink.on_rtp
        v = Viewer(tr, sink, time.time())
        try:
            v.res = await self.sig.view(tr)
            assert tr.remote is not None
            pt_kind.update(tr.remote.pt_kind)
            deadline = v.started + timeout
            while sink.first_arrival is None:
                if time.time() > deadline:
                    raise TimeoutError("no media within the join timeout")
                await asyncio.sleep(0.01)
            v.joined = sink.first_arrival
        except Exception as exc:
            v.error = f"{type(exc).__name__}: {exc}"
        return v

    async def _steady_joins(self) -> None:
        tasks = []
        for _ in range(self.cfg.viewers):
            tasks.append(asyncio.create_task(self._join(self.cfg.join_timeout)))
            await asyncio.sleep(1.0 / self.cfg.storm_rate)
        self.steady = list(await asyncio.gather(*tasks))
        # A join that failed in the storm (a busy box) is retried one at a time, at most twice per viewer.
        for _attempt in range(2):
            for n, v in enumerate(self.steady):
                if v.error is not None:
                    v.tr.close()
                    self.steady_retries += 1
                    self.steady[n] = await self._join(self.cfg.join_timeout)

    async def _churn_one(self, silent: bool) -> None:
        v = await self._join(self.cfg.join_timeout)
        self.churn["joins"] += 1
        if v.error is not None or v.joined is None:
            self.churn["join_failures"] += 1
            if len(self.churn_errors) < 10:
                self.churn_errors.append(v.error or "?")
        else:
            self.churn_join_ms.append((v.joined - v.started) * 1000)
            await asyncio.sleep(self.cfg.churn_life)
        if silent:
            self.churn["leaves_silent"] += 1
        elif v.res is not None:
            try:
                status = await self.sig.end(v.res)
                self.churn["leaves_delete"] += 1
                if status != 200:
                    self.churn["delete_errors"] += 1
            except Exception as exc:
                self.churn["delete_errors"] += 1
                if len(self.churn_errors) < 10:
                    self.churn_errors.append(f"DELETE {type(exc).__name__}: {exc}")
        v.tr.close()

    async def _churn(self, until: float) -> None:
        if self.cfg.churn_per_s <= 0:
            return
        period = 1.0 / self.cfg.churn_per_s
        next_at = time.monotonic()
        while time.monotonic() < until:
            self._churn_n += 1
            task = self.loop.create_task(self._churn_one(silent=self._churn_n % 2 == 0))
            self.churn_tasks.add(task)
            task.add_done_callback(self.churn_tasks.discard)
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _server_metrics(self) -> dict[str, Any]:
        try:
            m = await scrape_metrics(self.server.port)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

        def total(name: str) -> float | None:
            vals = m.get(name)
            return sum(v for _, v in vals) if vals else None

        lag = m.get("trackmesh_loop_lag_seconds")
        return {
            "loop_lag_max_ms": round(max(v for _, v in lag) * 1000, 2) if lag else None,
            "endpoints": total("trackmesh_endpoints"),
            "udp_tx_errors": total("trackmesh_udp_tx_errors_total"),
            "handler_errors": total("trackmesh_handler_errors_total"),
        }

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        tree = self.server.tree
        pub_tr = Transport(self.loop, self.local_ip, cfg.profile, self.cert)
        ssrcs = (random.getrandbits(31) | 1, random.getrandbits(31) | 2)
        await self.sig.publish_as(pub_tr, ssrcs, "soak-publisher")
        await asyncio.wait_for(asyncio.shield(pub_tr.connected), 15)
        pub = Publisher(pub_tr, self.rec, self.log, ssrcs=ssrcs, pacing_bps=cfg.pacing_bps)
        t_media = time.monotonic()
        pub.start(until=t_media + cfg.seconds + 600)
        rss_before = tree.rss_kb()
        await self._steady_joins()
        alive = [v for v in self.steady if v.error is None]
        join_ms = sorted((v.joined - v.started) * 1000 for v in alive if v.joined is not None)
        print(f"soak: publisher + {len(alive)}/{cfg.viewers} steady viewers joined "
              f"(join ms p50 {percentile(join_ms, 50)}, p99 {percentile(join_ms, 99)}); "
              f"sampling every {cfg.sample_every:g} s for {cfg.seconds:g} s", flush=True)
        # A new viewer gets audio at once but video from the next key frame (every 2 s): measure
        # from when every viewer has had one (as S1 settles before its windows).
        await asyncio.sleep(SETTLE_AFTER_JOINS)
        # The generator makes few cycles; keep full collections off its hot path (as S1 does).
        gc.freeze()
        prober = HealthProber(self.server.port)
        prober.start()
        gen_lag = LoopLagMonitor()
        gen_lag.start()
        t0 = time.monotonic()
        churn_task = self.loop.create_task(self._churn(t0 + cfg.seconds))
        samples: list[dict[str, Any]] = []
        wall_prev = time.time()
        i_prev = self.log.index_at(wall_prev - SETTLE)
        for v in alive:
            v.sink.open_window(wall_prev)
        cpu_prev, gcpu_prev, mono_prev, cores_prev = tree.cpu(), time.process_time(), time.monotonic(), _core_times()
        n_samples = max(1, int(cfg.seconds // cfg.sample_every))
        try:
            for k in range(1, n_samples + 1):
                await asyncio.sleep(max(0.0, t0 + k * cfg.sample_every - time.monotonic()))
                wall = time.time()
                cpu, gcpu, mono, cores = tree.cpu(), time.process_time(), time.monotonic(), _core_times()
                dt = mono - mono_prev
                i1 = self.log.index_at(wall - SETTLE)
                row = self._delivery(alive, i_prev, i1, wall)
                threads, fds = tree.threads_fds()
                health = prober.take()
                glags = gen_lag.take()
                server_share = (cpu - cpu_prev) / dt
                gen_share = (gcpu - gcpu_prev) / dt
                all_cores = sorted(cores)
                row.update({
                    "t_s": round(mono - t0, 1),
                    "rss_kb": tree.rss_kb(),
                    "fds": fds,
                    "threads": threads,
                    "server_cpu": round(server_share, 4),
                    "generator_cpu": round(gen_share, 4),
                    "foreign_cores": round(max(0.0, _core_busy(cores_prev, cores, all_cores)
                                               - server_share - gen_share), 3),
                    "health_ms": {"n": len(health), "p50": _ms(percentile(health, 50)),
                                  "max": _ms(max(health) if health else None)},
                    "health_failures": prober.failures,
                    "generator_lag_max_ms": _ms(max(glags) if glags else None),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                    "publisher_late_ms": round(pub.late * 1000, 1),
                    "churn": dict(self.churn),
                    "churn_in_flight": len(self.churn_tasks),
                })
                pub.late = 0.0
                row.update(await self._server_metrics())
                samples.append(row)
                _print_sample(row)
                cpu_prev, gcpu_prev, mono_prev, cores_prev, i_prev = cpu, gcpu, mono, cores, i1
        finally:
            churn_task.cancel()
            for task in list(self.churn_tasks):
                task.cancel()
            await asyncio.gather(churn_task, *self.churn_tasks, return_exceptions=True)
            await prober.stop()
            await gen_lag.stop()
            await pub.stop()
            for v in self.steady:
                v.tr.close()
            pub_tr.close()
        per_viewer = [v.got / v.expected for v in alive if v.expected]
        return {
            "config": {"seconds": cfg.seconds, "viewers": cfg.viewers, "churn_per_s": cfg.churn_per_s,
                       "churn_life_s": cfg.churn_life, "sample_every_s": cfg.sample_every,
                       "warmup_s": cfg.warmup_s(), "profile": cfg.profile.value,
                       "server_cores": cfg.server_cores, "generator_cores": cfg.gen_cores},
            "rss_before_viewers_kb": rss_before,
            "steady_joined": len(alive),
            "steady_join_failures": [v.error for v in self.steady if v.error is not None][:10],
            "steady_join_retries": self.steady_retries,
            "steady_join_ms": {"p50": percentile(join_ms, 50), "p99": percentile(join_ms, 99)},
            "delivery_per_viewer": [round(x, 6) for x in per_viewer],
            "delivered": sum(v.got for v in alive),
            "expected": sum(v.expected for v in alive),
            "generator_rx_dropped": sum(v.tr.counters["rx_dropped"] for v in alive),
            "churn": dict(self.churn),
            "churn_join_ms": {"n": len(self.churn_join_ms), "p50": percentile(self.churn_join_ms, 50),
                              "p99": percentile(self.churn_join_ms, 99)},
            "churn_errors": self.churn_errors,
            "publisher_sent": pub.sent,
            "samples": samples,
        }

    def _delivery(self, alive: list[Viewer], i0: int, i1: int, wall: float) -> dict[str, Any]:
        worst, got_all, exp_all, worst_gap = 1.0, 0, 0, 0.0
        lat: list[float] = []
        for n, v in enumerate(alive):
            sk = v.sink
            sk.close_window(wall)
            worst_gap = max(worst_gap, sk.max_gap)
            expected = max(0, i1 - max(i0, sk.first_index))
            got = sk.received_between(i0, i1)
            v.got += got
            v.expected += expected
            got_all += got
            exp_all += expected
            if expected:
                worst = min(worst, got / expected)
            if n < 25:  # latency from a subset: sorting every packet of every viewer costs the generator
                lat.extend(sk.lat)
            sk.open_window(wall)
        return {
            "steady": len(alive),
            "delivery": round(got_all / exp_all, 6) if exp_all else None,
            "delivery_worst_viewer": round(worst, 6),
            "freeze_max_s": round(worst_gap, 3),
            "latency_ms": {"p50": _ms(percentile(lat, 50)), "p99": _ms(percentile(lat, 99))},
        }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def _print_sample(r: dict[str, Any]) -> None:
    print(
        f"  t={r['t_s']:7.1f}s rss {r['rss_kb'] / 1024:6.1f} MB fds {r['fds']:3d} cpu {r['server_cpu']:5.1%} "
        f"lag {r.get('loop_lag_max_ms')} ms health p50/max {r['health_ms']['p50']}/{r['health_ms']['max']} ms "
        f"deliv {r['delivery']} worst {r['delivery_worst_viewer']} p99 {r['latency_ms']['p99']} ms "
        f"endpoints {r.get('endpoints')} churn {r['churn']['joins']}/{r['churn']['join_failures']} failed "
        f"gen {r['generator_cpu']:4.0%} foreign {r['foreign_cores']:.2f} load {r['loadavg_1m']}",
        flush=True,
    )


def _slope_per_hour(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    if den == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den * 3600


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Drift and delivery verdicts over the samples after the warm-up."""
    samples = result["samples"]
    warm = result["config"]["warmup_s"]
    after = [s for s in samples if s["t_s"] >= warm] or samples[-1:]
    rss = [s["rss_kb"] for s in after]
    fds = [s["fds"] for s in after]
    base = rss[0]
    dev = max((abs(x - base) / base for x in rss), default=0.0)
    tail = rss[-3:]
    rss_drift = (sum(tail) / len(tail) - base) / base
    fd_growth = min(fds[-3:]) - min(fds[:3])
    expected = result["expected"]
    delivery = result["delivered"] / expected if expected else 0.0
    per_viewer = result["delivery_per_viewer"]
    lags = [s["loop_lag_max_ms"] for s in samples if s.get("loop_lag_max_ms") is not None]
    health = [s["health_ms"]["max"] for s in samples if s["health_ms"]["max"] is not None]
    health50 = [s["health_ms"]["p50"] for s in samples if s["health_ms"]["p50"] is not None]
    endpoints = [s["endpoints"] for s in after if s.get("endpoints") is not None]
    out = {
        "samples_after_warmup": len(after),
        "rss_mb_first_after_warmup": round(base / 1024, 1),
        "rss_mb_last": round(rss[-1] / 1024, 1),
        "rss_drift_pct": round(rss_drift * 100, 2),
        "rss_max_deviation_pct": round(dev * 100, 2),
        "rss_slope_mb_per_h": _round(_slope_per_hour([s["t_s"] for s in after], [x / 1024 for x in rss])),
        "fds_first_last_min_max": [fds[0], fds[-1], min(fds), max(fds)],
        "fd_growth": fd_growth,
        "endpoints_min_max": [min(endpoints), max(endpoints)] if endpoints else None,
        "delivery_pct": round(delivery * 100, 4),
        "delivery_worst_viewer_pct": round(min(per_viewer) * 100, 4) if per_viewer else None,
        "delivery_worst_sample_pct": round(min(s["delivery_worst_viewer"] for s in samples) * 100, 4),
        "freeze_max_s": max(s["freeze_max_s"] for s in samples),
        "server_loop_lag_ms": {"p50_of_samples": percentile(lags, 50), "max": max(lags) if lags else None},
        "health_ms": {"p50_of_samples": percentile(health50, 50), "max": max(health) if health else None},
        "server_cpu_mean": round(sum(s["server_cpu"] for s in samples) / len(samples), 4),
        "generator_cpu_max": max(s["generator_cpu"] for s in samples),
        "foreign_cores_mean_max": [round(sum(s["foreign_cores"] for s in samples) / len(samples), 3),
                                   max(s["foreign_cores"] for s in samples)],
        "loadavg_1m_mean_max": [round(sum(s.get("loadavg_1m", 0.0) for s in samples) / len(samples), 2),
                                max(s.get("loadavg_1m", 0.0) for s in samples)],
        "churn": result["churn"],
    }
    out["verdicts"] = {
        "rss_flat_within_5pct": dev <= RSS_FLAT,
        "no_fd_growth": fd_growth <= FD_SLACK,
        "delivery_at_least_99_9pct": delivery >= DELIVERY_TARGET,
        "churn_joins_all_ok": result["churn"]["join_failures"] == 0,
    }
    return out


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def summary_lines(result: dict[str, Any]) -> list[str]:
    s = result["summary"]
    v = s["verdicts"]

    def ok(flag: bool) -> str:
        return "MET" if flag else "MISSED"

    c = result["config"]
    return [
        f"soak {c['seconds'] / 60:g} min, {result['steady_joined']} steady viewers + churn {c['churn_per_s']:g}/s "
        f"(life {c['churn_life_s']:g} s), warm-up {c['warmup_s']:g} s, {s['samples_after_warmup']} samples after it",
        f"RSS {s['rss_mb_first_after_warmup']} -> {s['rss_mb_last']} MB: drift {s['rss_drift_pct']} %, max deviation "
        f"{s['rss_max_deviation_pct']} %, slope {s['rss_slope_mb_per_h']} MB/h (target flat within 5 %): "
        f"{ok(v['rss_flat_within_5pct'])}",
        f"fds first/last/min/max {s['fds_first_last_min_max']}, growth {s['fd_growth']} (target none): "
        f"{ok(v['no_fd_growth'])}",
        f"delivery {s['delivery_pct']} % (worst viewer {s['delivery_worst_viewer_pct']} %, worst 10 s window "
        f"{s['delivery_worst_sample_pct']} %; target >= 99.9 %): {ok(v['delivery_at_least_99_9pct'])}",
        f"server loop lag (timer lateness) p50 of samples {s['server_loop_lag_ms']['p50_of_samples']} ms, max "
        f"{s['server_loop_lag_ms']['max']} ms; /api/node/health p50 {s['health_ms']['p50_of_samples']} ms, max "
        f"{s['health_ms']['max']} ms; longest video gap {s['freeze_max_s']} s",
        f"churn: {s['churn']['joins']} joins ({s['churn']['join_failures']} failed, join ms p50/p99 "
        f"{result['churn_join_ms']['p50'] and round(result['churn_join_ms']['p50'])}/"
        f"{result['churn_join_ms']['p99'] and round(result['churn_join_ms']['p99'])}), "
        f"{s['churn']['leaves_delete']} DELETE + {s['churn']['leaves_silent']} silent leaves; endpoints min/max "
        f"{s['endpoints_min_max']}: {ok(v['churn_joins_all_ok'])}",
        f"server CPU mean {s['server_cpu_mean']:.1%}; generator CPU max {s['generator_cpu_max']:.0%}; "
        f"foreign load mean/max {s['foreign_cores_mean_max']} cores, load average (1 min) mean/max "
        f"{s['loadavg_1m_mean_max']}",
    ]


async def run_soak(cfg: SoakConfig, server: Any, rec: Recording, local_ip: str) -> dict[str, Any]:
    result = await SoakRun(cfg, server, rec, local_ip).run()
    result["summary"] = summarize(result)
    result["generator_pid"] = os.getpid()
    return result
