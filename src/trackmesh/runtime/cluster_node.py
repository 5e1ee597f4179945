"""The media role in a cluster: zenoh membership of every worker, node presence, load reports, drain.

- Every worker process is a cluster member of its own (``WorkerCluster``, runtime/worker_cluster.py):
  one zenoh session (peer mode, scouting off, usrpwd from the secret: ``cluster/zenoh_session.py``), a
  :class:`~trackmesh.cluster.zenoh_registry.ZenohRegistry` and a
  :class:`~trackmesh.cluster.zenoh_channels.ZenohChannelHub`. Worker *i* listens on
  ``tcp/<cluster-ip>:<cluster-port + i>`` and dials the node's seeds plus its lower-index siblings,
  so the workers of a node form a full mesh with each other and with the seeds.
- The node (:class:`ClusterMediaNode`, the main process, which also runs worker 0) declares the
  liveliness token ``tm/node/<zone>/<index>`` (refusing to start when it is already alive: a
  duplicated node id) and puts a load report on ``tm/load/<zone>/<index>`` every second.
- ``SIGTERM`` drains: new sessions are refused (503), the load reports say ``draining`` (gateways
  stop routing new sessions here but still route follow-up calls), SDK clients get ``goaway``, and
  the node exits when its sessions are gone or after ``--shutdown-timeout``. ``SIGINT`` stops at once.

Key roots and member settings shared with gateways are in ``cluster/membership.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import resource
import signal
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from trackmesh.cluster.membership import LOAD_ROOT, NODE_ROOT, REPORT_INTERVAL, http_url, node_index
from trackmesh.cluster.topology import links_wanted
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.config import NodeConfig
from trackmesh.rpc import RpcError

from .cluster_apps import AppListFollower, follow_zone_apps
from .connector_link import ConnectorLink
from .console_query import ConsoleQueryable
from .node import Node, StartupError
from .worker import WorkerRuntime
from .worker_cluster import WorkerCluster

if TYPE_CHECKING:
    from .moq_listener import MoqListener

log = logging.getLogger("trackmesh.cluster")

AFFINITY_GRACE = 10.0  # a room routed to a worker stays with it this long before the worker reports it
PEER_WAIT = 1.5  # at start, how long to wait for the seeds before checking for a duplicated node id


class RoomAffinity:
    """Which worker of this node hosts each room: every session of a room on a node goes to one
    worker, so the node's inter-node traffic for that room is the worker's (the mixer's bound of
    N+1 imported voices per room and worker is then N+1 per node: docs/mixer.md, docs/cluster.md).
    With ``--room-spread`` a big room's viewers go to other workers too (:meth:`ClusterMediaNode.
    worker_for_viewer`); the worker found here stays the room's *home*, where its publishers go.

    Learnt from two sources: the rooms each worker reports (``cluster.rooms``, every report
    interval, with their session counts) and the routing decisions themselves, kept for
    :data:`AFFINITY_GRACE` seconds so a session routed but not yet joined pins its room too. No
    clock read here: callers pass ``now``.
    """

    __slots__ = ("_hosted", "_routed", "_sessions")

    def __init__(self) -> None:
        self._hosted: dict[str, int] = {}  # room -> worker, from the workers' reports
        self._routed: dict[str, tuple[int, float]] = {}  # room -> (worker, when routed)
        self._sessions: dict[str, int] = {}  # room -> its sessions on the node: reported + routed since

    def get(self, room: str) -> int | None:
        routed = self._routed.get(room)
        if routed is not None:
            return routed[0]
        return self._hosted.get(room)

    def routed(self, room: str, worker: int, now: float) -> None:
        self._routed[room] = (worker, now)

    def joined(self, room: str) -> None:
        """A session of ``room`` was routed to some worker of the node (counted until the next report)."""
        self._sessions[room] = self._sessions.get(room, 0) + 1

    def sessions(self, room: str) -> int:
        """The room's sessions on the node: the last reports' count plus the sessions routed since."""
        return self._sessions.get(room, 0)

    def reported(self, rooms: Mapping[int, Iterable[str] | Mapping[str, int]], now: float) -> None:
        """``rooms``: worker index -> the rooms it has endpoints in, or ``{room: endpoints}``. A room
        two workers report (a spread room, or sessions routed before a restart of the node's
        routing) stays where it was routed, else where it was hosted."""
        self._routed = {r: (w, t) for r, (w, t) in self._routed.items() if now - t < AFFINITY_GRACE}
        hosted: dict[str, int] = {}
        sessions: dict[str, int] = {}
        for worker in sorted(rooms):
            listed = rooms[worker]
            counts = listed if isinstance(listed, Mapping) else dict.fromkeys(listed, 1)
            for room, n in counts.items():
                sessions[room] = sessions.get(room, 0) + n
                prev = self.get(room)
                if room not in hosted or prev == worker:
                    hosted[room] = worker
        self._hosted = hosted
        self._sessions = sessions


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)


class ClusterMediaNode(Node):
    """``trackmesh media``: a Node whose workers are cluster members, with presence and load reports."""

    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.cluster: WorkerCluster | None = None
        self.index = node_index(config)
        self.url = http_url(config)
        self._token: Any = None
        self._reporter: asyncio.Task[None] | None = None
        self._sessions: dict[int, int] = {}
        self.affinity = RoomAffinity()
        self.spread_viewers = 0  # viewers --room-spread sent to another worker than their room's home
        self._cpu_at = (time.monotonic(), time.process_time())
        self.last_report: dict[str, Any] = {}
        self.link: ConnectorLink | None = None  # events to the zone's connector (runtime/connector_link.py)
        self.console_queries: ConsoleQueryable | None = None
        self.apps_follower: AppListFollower | None = None  # the zone connector's app list (cluster_apps.py)

    # ---- start -----------------------------------------------------------------------------

    def new_runtime(self, index: int) -> WorkerRuntime:
        assert self.cluster is not None
        runtime = WorkerRuntime(self.config, index, self.cluster.registry, self.cluster.hub)
        return runtime

    async def _start_workers(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        try:
            cluster = await loop.run_in_executor(None, WorkerCluster, cfg, 0, loop)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the cluster session: {exc}") from None
        self.cluster = cluster
        try:
            await self._join(cluster)
            await super()._start_workers()
        except BaseException:
            await self.after_stop()
            raise
        assert self.workers
        cluster.attach(self.workers[0].runtime)  # type: ignore[attr-defined]
        try:
            self.link = ConnectorLink(cluster.node.session, self.config.node_id, self.config.zone,
                                      self.config.data_dir)
        except OSError as exc:
            await self.after_stop()
            raise StartupError(f"--data-dir: cannot keep the connector spill file: {exc}") from None
        self.link.attach(self.workers)
        self.link.start()
        # The console role's queries (rooms, kick, end room): runtime/console_query.py.
        self.console_queries = ConsoleQueryable(cluster.node.session, self.config.zone, self.index,
                                                self.call_workers, asyncio.get_running_loop(),
                                                self.config.record_dir,
                                                lambda room, m, p: self.worker_for_room(room).call(m, p))
        # Multi-tenancy: the zone connector's apps, so tenants' tokens verify here (docs/connector.md).
        self.apps_follower = await follow_zone_apps(self, cluster.node.session)
        self._reporter = asyncio.create_task(self._report_loop())

    async def _join(self, cluster: WorkerCluster) -> None:
        cfg = self.config
        seeds = cluster.member_config.seeds
        deadline = time.monotonic() + PEER_WAIT
        wanted = links_wanted(cluster.member_config)
        while cluster.node.links() < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if seeds and not cluster.node.links():
            log.warning(
                "no cluster seed answers; starting anyway (zenoh keeps retrying), not ready until one does",
                extra={"fields": {"seeds": ",".join(seeds)}},
            )
        key = f"{NODE_ROOT}{cfg.zone}/{self.index}"
        session = cluster.node.session
        replies = await asyncio.get_running_loop().run_in_executor(
            None, lambda: list(session.liveliness().get(key, timeout=1.0))
        )
        if any(r.ok is not None for r in replies):
            raise StartupError(
                f"--node-id: node {self.index} of zone {cfg.zone} is already running in the cluster "
                f"(liveliness {key} is alive); give this node another --node-id"
            )
        self._token = session.liveliness().declare_token(key)
        log.info(
            "joined the cluster",
            extra={"fields": {"zone": cfg.zone, "node": self.index, "member": cluster.registry.member,
                              "listen": ",".join(cluster.member_config.listen), "links": cluster.node.links()}},
        )  # fmt: skip

    def moq_room_here(self, room: str) -> bool:
        """Every room, whichever worker or node hosts it: worker 0 (where the MoQ bridges run) is a
        cluster member of its own, so its registry lists every room's tracks and its hub imports a
        room track of worker 1 over the track's cluster channel, as it would one of another node."""
        return True

    def moq_ingest_here(self, room: str) -> bool:
        """Every room, as :meth:`moq_room_here`: the MoQ publisher's peers join on worker 0, and the
        room's viewers on another worker (or node) get their tracks over the tracks' cluster channels.
        A room not yet routed on this node is pinned to worker 0, so its later sessions join it there."""
        if self.affinity.get(room) is None and self.workers and not self.draining:
            self.affinity.routed(room, 0, time.monotonic())
        return True

    def moq_started(self, listener: MoqListener) -> None:
        """The MoQ relay joins the cluster's (docs/moq.md "Cluster"): on worker 0's zenoh registry and
        hub, in this process and loop, so a namespace published here is subscribable on every node."""
        from trackmesh.transports.moq.cluster_relay import ClusterRelay

        cluster = self.cluster
        assert cluster is not None
        listener.cluster = ClusterRelay(
            listener.relay, cluster.registry, cluster.hub, cluster.registry.member, time.monotonic()
        )

    # ---- routing and readiness ---------------------------------------------------------------

    def worker_for_room(self, room: str) -> Any:
        """Room affinity: a room already on this node goes to the worker hosting it (one worker
        per room and node keeps the room's inter-node traffic per node, see :class:`RoomAffinity`);
        a new room goes to the worker with the fewest sessions, ties broken by the room hash."""
        self._check_routable()
        n = len(self.workers)
        index = self.affinity.get(room)
        if index is None or index >= n:
            digest = int.from_bytes(hashlib.blake2b(room.encode(), digest_size=8).digest(), "big")
            index = min(range(n), key=lambda i: (self._sessions.get(i, 0), (i - digest) % n))
        self.affinity.routed(room, index, time.monotonic())
        self._count(room, index)
        return self.workers[index]

    def worker_for_viewer(self, room: str) -> Any:
        """``--room-spread K``: once ``room`` has K sessions on this node, a new viewer goes to the
        worker with the fewest sessions (the room's home worker on ties), so one broadcast uses every
        core. The viewer's worker imports the room's tracks over their cluster channels like any other
        member: one copy per packet and worker with viewers, feedback (key-frame requests) back to the
        publisher's worker; retransmissions are answered from the viewer's worker's own ring. Below K,
        or with ``--room-spread 0``, viewers join the room's worker (:meth:`worker_for_room`)."""
        spread = self.config.room_spread
        home = self.affinity.get(room)
        if not spread or home is None or self.affinity.sessions(room) < spread or len(self.workers) < 2:
            return self.worker_for_room(room)
        self._check_routable()
        n = len(self.workers)
        index = min(range(n), key=lambda i: (self._sessions.get(i, 0), i != home, i))
        self._count(room, index)
        self.spread_viewers += index != home
        return self.workers[index]

    def _check_routable(self) -> None:
        if self.draining:
            raise RpcError(503, f"media node {self.index} of zone {self.config.zone} is draining")
        if not self.workers:
            raise RpcError(503, f"no media node available in zone {self.config.zone}")

    def _count(self, room: str, index: int) -> None:
        """A session routed: counted on its worker and its room until the next load report says."""
        self._sessions[index] = self._sessions.get(index, 0) + 1
        self.affinity.joined(room)

    def link_metrics(self) -> dict[str, float]:
        out: dict[str, float] = dict(self.link.metrics()) if self.link is not None else {}
        if self.apps_follower is not None:  # app lists taken from the zone's connector, and refused
            out.update(self.apps_follower.counters)
        return out

    def connected(self) -> bool:
        cluster = self.cluster
        if cluster is None:
            return False
        return not cluster.member_config.seeds or cluster.node.links() > 0

    def readiness(self) -> tuple[bool, str]:
        ready, reason = super().readiness()
        if ready and not self.connected():
            assert self.cluster is not None
            seeds = ",".join(self.cluster.member_config.seeds)
            return False, f"not connected to any cluster seed ({seeds}); zenoh keeps retrying"
        return ready, reason

    async def stats(self, media: bool = False) -> list[dict[str, Any]]:
        out = await super().stats(media)
        for worker, st in zip(self.workers, out, strict=False):
            if "error" in st:
                continue
            try:
                st["cluster"] = await worker.call("cluster.stats", {})
            except RpcError as exc:
                st["cluster"] = {"error": exc.message}
        return out

    # ---- load reports ------------------------------------------------------------------------

    def _cpu_percent(self) -> float:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_at
        self._cpu_at = (now, cpu)
        return round(100.0 * (cpu - cpu_then) / max(now - then, 1e-3), 1)

    def _rtmp_address(self) -> str | None:
        """Worker 0's RTMP listener ("host:port"), when it listens (any worker takes any room here)."""
        from .handles import InProcessWorker
        from .rtmp_worker import RtmpTransport

        first = self.workers[0] if self.workers else None
        if not isinstance(first, InProcessWorker) or RtmpTransport not in first.runtime.services:
            return None
        host = self.config.node_ip
        return f"{f'[{host}]' if ':' in host else host}:{self.config.rtmp_listen_port}"

    async def report(self) -> dict[str, Any]:
        cfg = self.config
        stats = await super().stats()
        self._sessions = {st.get("worker", i): int(st.get("endpoints", 0)) for i, st in enumerate(stats)}
        rooms: dict[int, dict[str, int]] = {}
        for worker in self.workers:
            with contextlib.suppress(RpcError):
                listed = await worker.call("cluster.rooms", {})  # {room: endpoints}
                rooms[worker.index] = {str(r): int(n) for r, n in dict(listed).items()}
        self.affinity.reported(rooms, time.monotonic())
        sessions = sum(self._sessions.values())
        ready, reason = self.readiness()
        report = {
            "zone": cfg.zone,
            "node": self.index,
            "node_id": cfg.node_id,
            "http": self.url,
            "sessions": sessions,
            "capacity": cfg.capacity,
            "cpu": self._cpu_percent(),
            "mem_mb": _rss_mb(),
            "workers": len(self.workers),
            "ready": ready or self.draining,
            "draining": self.draining,
            "reason": reason,
            "ts": time.time(),
        }
        rtmp = self._rtmp_address()
        if rtmp is not None:
            report["rtmp"] = rtmp  # where a gateway splices encoders to (gateway/rtmp_splice.py)
        if self.sip is not None:  # where a gateway's SIP proxy sends new dialogs (gateway/sip_proxy.py)
            host = cfg.node_ip
            report["sip"] = f"{f'[{host}]' if ':' in host else host}:{self.sip.port}"
        cluster = self.cluster
        if cluster is not None and not cluster.node.session.is_closed():
            cluster.node.session.put(f"{LOAD_ROOT}{cfg.zone}/{self.index}", json.dumps(report))
        self.last_report = report
        return report

    async def _report_loop(self) -> None:
        while True:
            try:
                await self.report()
            except Exception:
                log.exception("load report failed")
            await asyncio.sleep(REPORT_INTERVAL)

    # ---- drain and stop ----------------------------------------------------------------------

    async def on_stop_requested(self) -> None:
        if self.stop_reason != signal.Signals.SIGTERM.name:
            return
        self.draining = True
        timeout = self.config.shutdown_timeout
        log.info("draining", extra={"fields": {"timeout_s": timeout}})
        with contextlib.suppress(Exception):
            await self.report()  # gateways learn at once that no new session may come here
        for worker in self.workers:
            with contextlib.suppress(RpcError):
                await worker.call("cluster.goaway", {"reason": "node draining", "remain": int(timeout)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = await self.report()
            if report["sessions"] == 0:
                log.info("drained: no session left")
                return
            await asyncio.sleep(0.2)
        log.info("drain timeout: closing the remaining sessions")

    async def after_stop(self) -> None:
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self._reporter = None
        queries, self.console_queries = self.console_queries, None
        if queries is not None:
            queries.close()
        follower, self.apps_follower = self.apps_follower, None
        if follower is not None:
            follower.close()
        link, self.link = self.link, None
        if link is not None:
            await link.stop()  # before the liveliness token goes: the connector would close our sessions
        cluster, self.cluster = self.cluster, None
        if cluster is None:
            return
        if self._token is not None:
            undeclare(self._token)
            self._token = None
        with contextlib.suppress(Exception):
            cluster.node.session.delete(f"{LOAD_ROOT}{self.config.zone}/{self.index}")
        cluster.close()
