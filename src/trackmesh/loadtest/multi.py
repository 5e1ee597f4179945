"""Scenarios S2 (meeting) and S3 (audio only) against one server, ramped like S1.

S2: rooms of ``room_size`` (6) participants; each publishes VP8 + Opus from the recording and
receives the other five. A step adds ``step`` rooms. Per room: participants 1-5 join in a storm at
``storm_rate``, wait until they are connected and sending, then participant 6 joins; its join (first
signalling request -> first decrypted packet, and -> a packet from every one of the five others) is
the join time of "someone entering a meeting in progress".

S3: ``speakers`` (10) publishers of Opus only in one room, then listeners that each receive all ten;
``sequential_joins`` listeners join one by one (idle join time), the rest of the first step and every
later step join in a storm at ``storm_rate`` (storm join time). A step adds ``step`` listeners.

trackmesh: every participant/speaker/listener is one SDK connection (``POST /webrtc/connect``, data
channel, receivers attached on ``track_started``, see sdk_client.py). The Janus comparison (not
installed: bench/janus/multi.py in the repository) overrides the ``_join_*`` hooks with VideoRoom: a
publisher PeerConnection per publishing participant plus a multistream subscriber PeerConnection per
receiving participant.

Each step: settle, hold ``duration`` s, evaluate the same SLOs as S1 per (subscriber, stream): loss
< 1 %, added p99 one-way latency < 50 ms, no stream silent > 500 ms, all joins done (every expected
stream flowing). Payloads are tagged per publisher (streams.py) so a subscriber attributes every
packet to its (publisher, track). Every loop is bounded (steps, timeouts, ``max_wall``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trackmesh.loadtest.client import HeaderReceiver, Transport
from trackmesh.loadtest.headers import HeaderSink, VerifyPolicy, pooled_latencies
from trackmesh.loadtest.join_trace import join_phases, summarize
from trackmesh.loadtest.media import AUDIO_PT, VIDEO_PT, Publisher, SendLog
from trackmesh.loadtest.recording import AUDIO, VIDEO, Recording
from trackmesh.loadtest.runner import (
    DISTURBED,
    GEN_SATURATED,
    LOSS_SLO,
    MAX_EXTRA_HOLDS,
    _at_load,
    _core_busy,
    _core_times,
    _ms,
    _pct,
    foreign_load,
    hold_window,
    latency_and_freeze_failures,
    mb,
    pct,
    per_peer_kb,
    reference_path,
    server_seconds,
)
from trackmesh.loadtest.sdk_client import SdkClient, SdkPlan
from trackmesh.loadtest.servers import StealMeter
from trackmesh.loadtest.streams import MultiSink, StreamLog, stream_id
from trackmesh.rtp.srtp import SrtpProfile
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate

__all__ = ["MultiConfig", "run_multi"]

#: Generator event-loop lag (p99 of a 10 ms timer) above which its publishers are late and bursty.
GEN_LAG_P99_MS = 20.0


@dataclass
class MultiConfig:
    scenario: str  # "s2" or "s3"
    profile: SrtpProfile
    duration: float = 30.0
    step: int = 1  # S2: rooms per step; S3: listeners per step
    max_units: int = 40  # S2: rooms; S3: listeners
    room_size: int = 6
    speakers: int = 10
    sequential_joins: int = 5
    storm_rate: float = 20.0
    settle: float = 3.0
    join_timeout: float = 15.0
    max_wall: float = 1800.0
    gen_cores: list[int] = field(default_factory=list)
    pacing_bps: float = 2.5e6
    #: Publishers answer PLI/FIR with the recording's next key frame at most once per this many seconds
    #: (keyframes.py; libwebrtc's 300 ms); None: they ignore them (the recording's fixed 2 s GOP).
    keyframe_interval: float | None = 0.3
    #: Which receiving members (S2 participants, S3 listeners, in join order) decrypt and verify every
    #: packet; the others count RTP headers (headers.py).
    verify: VerifyPolicy = field(default_factory=VerifyPolicy)


@dataclass
class Member:
    name: str
    pid: int | None  # publisher id (streams 2*pid, 2*pid+1) or None for a listener
    sink: MultiSink | HeaderSink | None
    started: float = 0.0
    error: str | None = None
    transports: list[Transport] = field(default_factory=list)
    publisher: Publisher | None = None
    sdk: SdkClient | None = None
    receiver_index: int = -1  # join order among the members that receive (VerifyPolicy)

    def close(self) -> None:
        if self.sdk is not None:
            self.sdk.close()
        for tr in self.transports:
            tr.close()


class MultiRun:
    def __init__(self, cfg: MultiConfig, server: Any, sig: Any, rec: Recording, local_ip: str) -> None:
        self.cfg = cfg
        self.server = server
        self.sig = sig
        self.rec = rec
        self.local_ip = local_ip
        self.audio_only = cfg.scenario == "s3"
        self.log = StreamLog()
        self.dummy = SendLog()
        self.cert = DtlsCertificate.generate(datetime.now(UTC).replace(microsecond=0))
        self.loop = asyncio.get_running_loop()
        self.members: list[Member] = []
        self.publishers: list[Publisher] = []
        self.next_pid = 0
        self.join: dict[str, list[float]] = {"idle": [], "storm": [], "idle_all": [], "storm_all": []}
        self.join_failures: list[str] = []
        #: Per joining member, where its join's time went (join_trace.py), by kind ("idle", "storm").
        self.join_phases: dict[str, list[dict[str, float | None]]] = {"idle": [], "storm": []}
        self.by_pid: dict[int, Publisher] = {}
        self.server_cores: list[int] = []
        self.ref_sink = MultiSink(self.log, {AUDIO_PT: AUDIO, VIDEO_PT: VIDEO})
        self.ref_sock: socket.socket | None = None
        self.lags: list[float] = []
        self.until = time.monotonic() + cfg.max_wall + 300
        self.rooms = 0
        self.headers = HeaderReceiver(self.loop)
        self.receiving = 0  # receiving members created so far

    # -- helpers ------------------------------------------------------------------------------

    def _transport(self, sink: MultiSink | HeaderSink | None) -> Transport:
        if isinstance(sink, HeaderSink):
            tr = Transport(self.loop, self.local_ip, self.cfg.profile, self.cert)
            tr.count_headers_only(self.headers, sink)
            return tr
        return Transport(self.loop, self.local_ip, self.cfg.profile, self.cert,
                         sink.on_rtp if sink is not None else None)

    def _receiver(self, name: str, pid: int | None, expected: list[int]) -> Member:
        """A member that receives: it verifies every packet or counts headers, by its join order (cfg.verify)."""
        index = self.receiving
        self.receiving += 1
        verified = self.cfg.verify.verified(index)
        sink: MultiSink | HeaderSink = MultiSink(self.log, {}, expected) if verified else HeaderSink({}, expected)
        return Member(name, pid, sink, receiver_index=index)

    def _start_publisher(self, m: Member, tr: Transport, ssrcs: tuple[int, int], mids: tuple[str, str]) -> None:
        assert m.pid is not None
        # Spread the publishers over the 10 s loop so their key frames do not coincide.
        offset = (m.pid * 0.37) % self.rec.loop
        pub = Publisher(tr, self.rec, self.dummy, ssrcs=ssrcs, mids=(mids[0] or "0", mids[1] or "1"),
                        audio_only=self.audio_only, start_loop_offset=offset, pacing_bps=self.cfg.pacing_bps,
                        tag=m.pid, stream_log=self.log, keyframe_interval=self.cfg.keyframe_interval)
        if not self.publishers:
            self._reference_path(pub)
        self.publishers.append(pub)
        self.by_pid[m.pid] = pub
        m.publisher = pub
        pub.start(self.until)

    def _reference_path(self, pub: Publisher) -> None:
        """The first publisher also sends every packet unencrypted straight to a local socket."""
        self.ref_sink.expect([stream_id(0, AUDIO), stream_id(0, VIDEO)])
        self.ref_sock = reference_path(self.loop, self.local_ip, pub, self.ref_sink)

    def _streams_of(self, pids: list[int]) -> list[int]:
        kinds = (AUDIO,) if self.audio_only else (AUDIO, VIDEO)
        return [stream_id(p, k) for p in pids for k in kinds]

    async def _connected(self, tr: Transport) -> None:
        await asyncio.wait_for(asyncio.shield(tr.connected), self.cfg.join_timeout)

    async def _wait_media(self, m: Member, kind: str | None) -> None:
        """Until the first packet (join sample) and a packet of every expected stream, or time out."""
        assert m.sink is not None
        deadline = m.started + self.cfg.join_timeout
        sink = m.sink
        while sink.all_streams_at() is None:
            if time.time() > deadline:
                got = len(sink.first_at)
                raise TimeoutError(f"{got}/{len(sink.expected)} streams within the join timeout")
            await asyncio.sleep(0.005)
        if kind is not None and sink.first_arrival is not None:
            self.join[kind].append((sink.first_arrival - m.started) * 1000)
            all_at = sink.all_streams_at()
            assert all_at is not None
            self.join[kind + "_all"].append((all_at - m.started) * 1000)
            if isinstance(sink, MultiSink):  # a header-only member has no key-frame view of its streams
                self.join_phases[kind].append(self._phases(m, sink))

    def _phases(self, m: Member, sink: MultiSink) -> dict[str, float | None]:
        """Where ``m``'s join went (join_trace.py): its receiving transport, SDK client, and the key-frame
        logs of the publishers whose video it expects (verified members only: the first cfg.verify ones)."""
        tr = next((t for t in m.transports if t.on_rtp == sink.on_rtp), None)
        kfs = []
        for s in sorted(sink.expected):
            pub = self.by_pid.get(s // 2)
            if s % 2 == VIDEO and pub is not None and pub.keyframes is not None:
                kfs.append(pub.keyframes)
        return join_phases(m.started, sink, tr, m.sdk, kfs)

    def _fail(self, m: Member, exc: BaseException) -> None:
        m.error = f"{m.name}: {type(exc).__name__}: {exc}"
        self.join_failures.append(m.error)

    # -- trackmesh: one SDK connection per member ------------------------------------------

    async def _tm_join(self, m: Member, room: str, plan: SdkPlan) -> None:
        tr = self._transport(m.sink)
        m.transports.append(tr)
        ssrcs = (random.getrandbits(31) | 1, random.getrandbits(31) | 2)
        m.started = time.time()
        m.sdk, mids = await self.sig.connect(tr, room, m.name, plan, ssrcs)
        if m.sink is not None and tr.remote is not None:
            m.sink.pt_kind.update(tr.remote.pt_kind)
        await self._connected(tr)
        if m.pid is not None:
            self._start_publisher(m, tr, ssrcs, mids)

    # -- S2 -------------------------------------------------------------------------------------

    def _new_members(self, n: int, room_tag: str) -> list[Member]:
        out = []
        for i in range(n):
            pid = self.next_pid
            self.next_pid += 1
            out.append(self._receiver(f"{room_tag}-p{i}", pid, []))
        pids = [m.pid for m in out if m.pid is not None]
        for m in out:
            assert m.sink is not None
            m.sink.expect(self._streams_of([p for p in pids if p != m.pid]))
        self.members.extend(out)
        return out

    async def _guard(self, m: Member, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:
            self._fail(m, exc)

    async def _storm(self, items: list[tuple[Member, Any]]) -> None:
        tasks = []
        for m, coro in items:
            tasks.append(asyncio.create_task(self._guard(m, coro)))
            await asyncio.sleep(1.0 / self.cfg.storm_rate)
        await asyncio.gather(*tasks)

    async def _add_room(self) -> None:
        self.rooms += 1
        tag = f"r{self.rooms}"
        ms = self._new_members(self.cfg.room_size, tag)
        await self._join_room(ms, tag)
        await asyncio.gather(*(self._guard(m, self._wait_media(m, None)) for m in ms[:-1] if m.error is None))

    async def _join_room(self, ms: list[Member], tag: str) -> None:
        """Members 1-5 join in a storm, then the last one joins (its join is the "idle" sample).

        One SDK connection per member; bench/janus/multi.py overrides the three ``_join_*`` hooks for Janus.
        """
        first, last = ms[:-1], ms[-1]
        plan = SdkPlan(True, True, self.cfg.room_size - 1, self.cfg.room_size - 1)
        await self._storm([(m, self._tm_join(m, tag, plan)) for m in first])

        async def last_join() -> None:
            await self._tm_join(last, tag, plan)
            await self._wait_media(last, "idle")

        await self._guard(last, last_join())

    # -- S3 -------------------------------------------------------------------------------------

    async def _add_speakers(self) -> None:
        speakers = [Member(f"s{i}", i, None) for i in range(self.cfg.speakers)]
        self.next_pid = self.cfg.speakers
        self.members.extend(speakers)
        await self._join_speakers(speakers)
        failed = [m.error for m in speakers if m.error]
        if failed:
            raise RuntimeError(f"speakers failed to join: {failed[:3]}")

    async def _join_speakers(self, speakers: list[Member]) -> None:
        await self._storm([(m, self._tm_join(m, "s3", SdkPlan(True, False, 0, 0))) for m in speakers])

    async def _listener(self, kind: str) -> None:
        cfg = self.cfg
        m = self._receiver(f"l{len(self.members)}", None, self._streams_of(list(range(cfg.speakers))))
        self.members.append(m)
        try:
            await self._join_listener(m)
            await self._wait_media(m, kind)
        except Exception as exc:
            self._fail(m, exc)

    async def _join_listener(self, m: Member) -> None:
        await self._tm_join(m, "s3", SdkPlan(False, False, self.cfg.speakers, 0))

    async def _add_listeners(self, n: int) -> None:
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(self._listener("storm")))
            await asyncio.sleep(1.0 / self.cfg.storm_rate)
        await asyncio.gather(*tasks)

    # -- measuring ------------------------------------------------------------------------------

    async def _lag_monitor(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - t - 0.01)

    def _receivers(self) -> list[Member]:
        return [m for m in self.members if m.sink is not None and m.error is None]

    def units(self) -> int:
        return self.rooms if self.cfg.scenario == "s2" else len([m for m in self.members if m.pid is None])

    async def _window(self) -> dict[str, Any]:
        cfg = self.cfg
        tree = self.server.tree
        await asyncio.sleep(cfg.settle)
        subs = self._receivers()
        now = time.time()
        for m in subs:
            assert m.sink is not None
            m.sink.open_window(now)
        self.ref_sink.open_window(now)
        self.lags = []

        def totals(sk: MultiSink | HeaderSink) -> tuple[int, int, int, int]:
            if isinstance(sk, HeaderSink):
                return (sk.duplicated, sk.reordered, 0, 0)
            return (sum(sk.duplicated.values()), sum(sk.reordered.values()), sk.corrupted, sk.misrouted)

        before = {id(m): totals(m.sink) for m in subs if m.sink is not None}
        srtp0 = {id(m): sum(t.counters["srtp_errors"] for t in m.transports) for m in subs}
        drops0 = sum(t.counters["rx_dropped"] for m in subs for t in m.transports) + self.headers.drops()
        sent0 = self.log.total
        dup0 = {id(m): (dict(m.sink.duplicated), dict(m.sink.reordered)) for m in subs
                if isinstance(m.sink, MultiSink)}
        cores0 = _core_times()
        cpu0, gcpu0, wall0 = tree.cpu(), time.process_time(), time.monotonic()
        steal = StealMeter()
        cut = await hold_window(cfg.duration, [m.sink for m in subs])
        cpu1, gcpu1, wall1 = tree.cpu(), time.process_time(), time.monotonic()
        cores1 = _core_times()
        real1 = time.time()
        sent1 = self.log.total
        rss = tree.rss_kb()
        threads, fds = tree.threads_fds()
        lags = sorted(self.lags)
        ref = sorted(self.ref_sink.lat)
        per_sub_loss: list[float] = []
        worst_stream_loss = 0.0
        stream_stats: dict[int, dict[str, float]] = {}
        gaps: list[float] = []
        delivered = verified = 0
        # Each verified receiver's latencies stand for its group (headers.pooled_latencies).
        group: dict[int, int] = {}
        for m in subs:
            g = cfg.verify.group(m.receiver_index)
            group[g] = group.get(g, 0) + 1
        samples = []
        dup = reord = corrupt = misrouted = srtp_err = 0
        for m in subs:
            sk = m.sink
            assert sk is not None
            gaps.append(sk.close_window(real1))
            if isinstance(sk, HeaderSink):
                # Per incoming SSRC: it cannot be attributed to a publisher's stream without the payload tag.
                stream_losses = sk.loss_streams()
                per_sub_loss.append(sum(stream_losses) / len(stream_losses) if stream_losses else 1.0)
                worst_stream_loss = max([worst_stream_loss, *stream_losses])
                delivered += sk.window_received()
            else:
                losses = sk.loss(self.log, now, cut)
                per_sub_loss.append(sum(losses.values()) / len(losses) if losses else 1.0)
                d0, r0 = dup0[id(m)]
                for s, v in losses.items():
                    st = stream_stats.setdefault(s, {"loss_worst": 0.0, "duplicated": 0, "reordered": 0})
                    st["loss_worst"] = max(st["loss_worst"], v)
                    st["duplicated"] += sk.duplicated.get(s, 0) - d0.get(s, 0)
                    st["reordered"] += sk.reordered.get(s, 0) - r0.get(s, 0)
                    worst_stream_loss = max(worst_stream_loss, v)
                samples.append((sk.lat, group.get(m.receiver_index, 1)))
                delivered += len(sk.lat)
                verified += 1
            b = before[id(m)]
            t = totals(sk)
            dup += t[0] - b[0]
            reord += t[1] - b[1]
            corrupt += t[2] - b[2]
            misrouted += t[3] - b[3]
            srtp_err += sum(tr.counters["srtp_errors"] for tr in m.transports) - srtp0[id(m)]
        gen_drops = sum(t.counters["rx_dropped"] for m in subs for t in m.transports) + self.headers.drops() - drops0
        lat = pooled_latencies(samples)
        wall = wall1 - wall0
        lat_ms = [_ms(_pct(lat, q)) for q in (50, 95, 99)]
        gen_share = (gcpu1 - gcpu0) / wall / max(1, len(cfg.gen_cores))
        server_s = server_seconds(cpu0, cpu1)
        server_share = None if server_s is None else server_s / wall
        ref_ms = {"p50": _ms(_pct(ref, 50)), "p99": _ms(_pct(ref, 99)), "max": _ms(ref[-1] if ref else None)}
        added_p99 = lat_ms[2] - ref_ms["p99"] if lat_ms[2] is not None and ref_ms["p99"] is not None else None
        server_core_busy = _core_busy(cores0, cores1, self.server_cores)
        gen_core_busy = _core_busy(cores0, cores1, cfg.gen_cores)
        failures = len([m for m in self.members if m.error is not None])
        publishers = len([m for m in self.members if m.pid is not None and m.error is None])
        row: dict[str, Any] = {
            "units": self.units(),
            "subscribers": len(subs),
            "verified": verified,
            "publishers": publishers,
            "peers": len([m for m in self.members if m.error is None]),
            "streams_expected": sum(len(m.sink.expected) for m in subs if m.sink is not None),
            "window_s": round(wall, 2),
            "pkts_in_per_s": round((sent1 - sent0) / wall, 1),
            "pkts_out_per_s": round(delivered / wall, 1),
            "server_cpu": None if server_share is None else round(server_share, 4),
            "server_us_per_pkt": round(server_s / delivered * 1e6, 2) if delivered and server_s is not None else None,
            "generator_cpu": round(gen_share, 4),
            # Generator CPU per packet its subscribers received (it also publishes: S1's one publisher is ~1 %).
            "generator_us_per_pkt": round((gcpu1 - gcpu0) / delivered * 1e6, 2) if delivered else None,
            "publisher_late_ms": round(max((p.late for p in self.publishers), default=0.0) * 1000, 1),
            "steal": round(steal.share(), 4),
            "loss_worst": round(worst_stream_loss, 5),
            "loss_worst_subscriber": round(max(per_sub_loss), 5) if per_sub_loss else None,
            "loss_mean": round(sum(per_sub_loss) / len(per_sub_loss), 5) if per_sub_loss else None,
            "latency_ms": {"p50": lat_ms[0], "p95": lat_ms[1], "p99": lat_ms[2],
                           "max": lat[-1] * 1000 if lat else None},
            "direct_path_ms": ref_ms,
            "added_p99_ms": added_p99,
            "generator_loop_lag_ms": {"p99": _ms(_pct(lags, 99)), "max": _ms(lags[-1] if lags else None)},
            "foreign_load_server_cores": foreign_load(server_core_busy, server_share, self.server_cores),
            "foreign_load_generator_cores": round(max(0.0, gen_core_busy - gen_share * len(cfg.gen_cores)), 3),
            "freeze_max_s": round(max(gaps), 3) if gaps else None,
            "duplicated": dup,
            "reordered": reord,
            "corrupted": corrupt,
            "misrouted": misrouted,
            "srtp_errors": srtp_err,
            "generator_socket_drops": gen_drops,
            "streams_with_loss": sum(1 for s in stream_stats.values() if s["loss_worst"] > 0),
            "per_stream": {str(k): {kk: round(vv, 5) for kk, vv in v.items()} for k, v in sorted(stream_stats.items())},
            "rss_kb": rss,
            "threads": threads,
            "fds": fds,
            "join_failures": failures,
        }
        for p in self.publishers:
            p.late = 0.0
        reasons = []
        if failures:
            reasons.append(f"{failures} joins failed")
        if not subs:
            reasons.append("no subscriber")
        if worst_stream_loss >= LOSS_SLO:
            reasons.append(f"loss {worst_stream_loss:.2%}")
        reasons += latency_and_freeze_failures(added_p99, lat_ms[2], ref_ms["p99"], gaps)
        row["slo_ok"] = not reasons
        row["slo_fail"] = reasons
        row["generator_saturated"] = gen_share > GEN_SATURATED
        # Not the server's doing: other processes on its core, the generator's own loop stalled (its
        # publishers then send late and in bursts), or datagrams dropped at the generator's sockets.
        lag_p99 = row["generator_loop_lag_ms"]["p99"]
        row["disturbed"] = bool((row["foreign_load_server_cores"] or 0.0) > DISTURBED or gen_drops
                                or (lag_p99 is not None and lag_p99 > GEN_LAG_P99_MS))
        if gen_drops and not row["slo_ok"]:
            reasons.append(f"({gen_drops} datagrams dropped at the generator's sockets)")
        return row

    def _print(self, row: dict[str, Any]) -> None:
        lat = row["latency_ms"]
        unit = "rooms" if self.cfg.scenario == "s2" else "listeners"
        print(
            f"  [{self.sig.name} {self.cfg.scenario}] {unit}={row['units']:3d} subs={row['subscribers']:4d} "
            f"(verified {row['verified']} of {row['subscribers']}) "
            f"srv {pct(row['server_cpu'])} {row['server_us_per_pkt']} us/pkt out {row['pkts_out_per_s']:.0f}/s "
            f"gen {row['generator_cpu']:6.1%} loss {row['loss_worst']:.3%} "
            f"p50/p99 {lat['p50'] and round(lat['p50'], 2)}/{lat['p99'] and round(lat['p99'], 2)} ms "
            f"freeze {row['freeze_max_s']} s foreign srv/gen "
            f"{row['foreign_load_server_cores']}/{row['foreign_load_generator_cores']} "
            f"rss {mb(row['rss_kb'])} MB "
            f"{'OK' if row['slo_ok'] else 'FAIL ' + ';'.join(row['slo_fail'])}"
            f"{' GENERATOR SATURATED' if row['generator_saturated'] else ''}",
            flush=True,
        )

    async def _hold(self) -> list[dict[str, Any]]:
        """One step: hold; a failure is held again (once, more while others load the core)."""
        rows = []
        row = await self._window()
        holds = 1
        while (not row["slo_ok"] and not row["generator_saturated"] and row["join_failures"] == 0
               and holds < 1 + MAX_EXTRA_HOLDS and (holds == 1 or row["disturbed"])):
            row["retried"] = True
            rows.append(row)
            self._print(row)
            row = await self._window()
            holds += 1
        rows.append(row)
        self._print(row)
        return rows

    async def _grow(self, first: bool) -> None:
        cfg = self.cfg
        if cfg.scenario == "s2":
            for _ in range(cfg.step):
                await self._add_room()
            return
        n = cfg.step
        if first:
            for _ in range(min(cfg.sequential_joins, n)):
                await self._listener("idle")
                await asyncio.sleep(0.2)
            n -= min(cfg.sequential_joins, n)
        await self._add_listeners(n)

    async def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.monotonic()
        await self.sig.setup()
        await asyncio.sleep(0.5)
        tree = self.server.tree
        rss0 = tree.rss_kb()
        lag_task = self.loop.create_task(self._lag_monitor())
        gc.freeze()  # as S1: no full collection over the generator's long-lived objects mid-window
        steps: list[dict[str, Any]] = []
        try:
            if cfg.scenario == "s3":
                await self._add_speakers()
            await self._grow(True)
            while True:
                rows = await self._hold()
                steps.extend(rows)
                row = rows[-1]
                if not row["slo_ok"] or row["generator_saturated"]:
                    break
                if self.units() + cfg.step > cfg.max_units or time.monotonic() - t_start > cfg.max_wall:
                    break
                await self._grow(False)
        finally:
            lag_task.cancel()
            if self.ref_sock is not None:
                self.loop.remove_reader(self.ref_sock.fileno())
                self.ref_sock.close()
            for p in self.publishers:
                await p.stop()
            for m in self.members:
                m.close()
            self.headers.close()
            await self.sig.close()
        return self._result(steps, rss0)

    def _keyframe_counts(self) -> dict[str, Any]:
        """PLI/FIR the publishers received and how they answered (keyframes.py), summed over publishers."""
        kfs = [p.keyframes for p in self.publishers if p.keyframes is not None]
        return {
            "min_interval_ms": None if self.cfg.keyframe_interval is None else self.cfg.keyframe_interval * 1000,
            "received": sum(k.requests for k in kfs), "honoured": sum(k.honoured for k in kfs),
            "ignored_rate_limit": sum(k.ignored for k in kfs), "jumps": sum(k.jumps for k in kfs),
        }

    def _result(self, steps: list[dict[str, Any]], rss0: int) -> dict[str, Any]:
        passing = [r for r in steps if r["slo_ok"] and not r["generator_saturated"]]
        final = [r for r in steps if not r.get("retried")]
        last = final[-1] if final else None
        limited_by = None
        if last is not None:
            if last["generator_saturated"]:
                limited_by = "generator saturated (result refused beyond this step)"
            elif not last["slo_ok"] and last.get("disturbed"):
                limited_by = (f"INCONCLUSIVE: failed while other processes used "
                              f"{_share(last['foreign_load_server_cores'])} of the server core and "
                              f"{last['foreign_load_generator_cores']:.0%} of the generator's (its loop lag p99 "
                              f"{last['generator_loop_lag_ms']['p99']} ms): " + "; ".join(last["slo_fail"]))
            elif not last["slo_ok"]:
                limited_by = "server: " + "; ".join(last["slo_fail"])
            else:
                limited_by = "max units or time limit reached (capacity is at least this)"
        best = max(passing, key=lambda r: r["units"]) if passing else None

        def stats(v: list[float]) -> dict[str, Any]:
            s = sorted(v)
            return {"n": len(s), "p50": _pct(s, 50), "p99": _pct(s, 99)}

        sdk = [m.sdk for m in self.members if m.sdk is not None]
        return {
            "server": self.sig.name,
            "scenario": self.cfg.scenario,
            "unit": f"rooms of {self.cfg.room_size}" if self.cfg.scenario == "s2" else "listeners",
            "capacity": best["units"] if best else 0,
            "capacity_subscribers": best["subscribers"] if best else 0,
            "capacity_peers": best["peers"] if best else 0,
            "inconclusive": bool(last is not None and not last["slo_ok"] and last.get("disturbed")),
            "limited_by": limited_by,
            "rss_base_kb": rss0,
            "rss_per_peer_kb": per_peer_kb(rss0, best["rss_kb"], best["peers"]) if best else None,
            "join_ms": {
                "idle": stats(self.join["idle"]),
                "storm": {**stats(self.join["storm"]), "rate_per_s": self.cfg.storm_rate},
                "idle_all_streams": stats(self.join["idle_all"]), "storm_all_streams": stats(self.join["storm_all"]),
                "phases": {k: summarize(v) for k, v in self.join_phases.items()},
                "phases_all": {k: v[:200] for k, v in self.join_phases.items()},
                "failures": self.join_failures[:10],
                "idle_all": [round(x, 1) for x in self.join["idle"]],
                "storm_all": [round(x, 1) for x in self.join["storm"]],
            },
            "at_load": _at_load_units(steps),
            "steps": steps,
            "publishers": len(self.publishers),
            "publisher_sent": self.log.total,
            "lengthened_payloads": self.log.lengthened,
            "keyframe_requests": self._keyframe_counts(),
            "sdk": {
                "attach_ok": sum(c.counters["attach_ok"] for c in sdk),
                "attach_err": sum(c.counters["attach_err"] for c in sdk),
                "tracks_ignored": sum(c.counters["tracks_ignored"] for c in sdk),
                "errors": [e for c in sdk for e in c.errors][:10],
            } if sdk else None,
            "client_dtls_early_resends": sum(
                t.counters["dtls_early_resend"] for m in self.members for t in m.transports),
            "generator_pid": os.getpid(),
        }


def _share(v: float | None) -> str:
    return "an unknown share" if v is None else f"{v:.0%}"


def _at_load_units(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """As S1's: us per forwarded packet at the steps nearest 25/50/75 % of one core, with their units."""
    out = _at_load(steps)
    for entry in out.values():
        match = next((r for r in steps if r["subscribers"] == entry["subscribers"]
                      and r["server_cpu"] == entry["server_cpu"]), None)
        entry["units"] = match["units"] if match else None
    return out


async def run_multi(
    cfg: MultiConfig, server: Any, sig: Any, rec: Recording, local_ip: str, server_cores: list[int],
    run_type: type[MultiRun] | None = None,
) -> dict[str, Any]:
    """Run S2 or S3; ``run_type`` is a MultiRun subclass for another server's signalling (bench/janus)."""
    run = (run_type or MultiRun)(cfg, server, sig, rec, local_ip)
    run.server_cores = server_cores
    return await run.run()
