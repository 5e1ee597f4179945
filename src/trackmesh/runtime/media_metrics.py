"""MediaMetrics: a worker's media counters by transport, for the node's ``/metrics``.

Nothing here runs per packet. The peers already count what they receive and send (plain integer
increments in ``WebRtcPeer``, ``InboundMedia``, ``OutboundTrack``); this module reads those counters
when the node is scraped (:meth:`MediaMetrics.snapshot`), summing the live connections of every
:class:`~.conn_table.ConnTable` of the worker with what closed connections had counted (folded in
once, at their close), so every total only ever grows. Per-session facts are recorded once per
session: the join (request to connected, when SRTP keys exist and media can flow), the time to the
first media packet (:class:`FirstMediaWatch`), its outcome and the close reason, each under a small
fixed set of labels (transport, reason): no per-peer or per-track label, so the series count does not
grow with the number of peers.

Viewer loss, RTT and jitter come from the receiver reports (RFC 3550 s6.4) viewers send about
the streams we forward: each scrape observes, once, every report that arrived since the previous
scrape (one sample per viewer stream and scrape at most).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .room_metrics import RoomMetrics

if TYPE_CHECKING:
    from trackmesh.transports.webrtc.peer import WebRtcPeer

__all__ = [
    "CLOSE_REASONS",
    "FirstMediaWatch",
    "Histogram",
    "MediaMetrics",
    "close_reason_label",
    "peer_totals",
]

#: Seconds from the request (offer) to connected (ICE and DTLS done).
JOIN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0)
#: How often sessions waiting for their first media packet are looked at (the measure's resolution),
#: and how long after its request a session stops being waited for (a viewer of an empty room).
FIRST_MEDIA_POLL = 0.02
FIRST_MEDIA_GIVE_UP = 30.0
#: Fraction of packets lost, as a viewer reports it (RFC 3550 s6.4.1 fraction lost / 256).
LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
RTT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 2.0)
JITTER_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)

#: The per-peer totals summed by transport (their meaning: docs/observability.md).
TOTALS = (
    "packets_received",
    "bytes_received",
    "rtp_packets_received",
    "forwarded_packets",
    "forwarded_bytes",
    "retransmitted_packets",
    "nacked_packets_received",
    "nacks_sent",
    "keyframe_requests_received",
    "keyframe_requests_sent",
    "err_srtp",
    "err_srtcp",
    "err_rtp_malformed",
    "err_rtcp_malformed",
    "err_media_before_dtls",
    "err_unknown_packet",
    "err_rtp_unknown_ssrc",
    "err_rtp_bad_payload",
    "err_handler",
)

#: The close reasons a session is counted under (``close_reason_label``): a fixed set.
CLOSE_REASONS = ("client", "connect_timeout", "ice", "dtls", "kicked", "node_stopping", "setup", "other")


def close_reason_label(reason: str) -> str:
    """The bounded label of a transport's free-text close reason."""
    text = reason.lower()
    if text.startswith("connect timeout"):
        return "connect_timeout"
    if text.startswith("ice"):
        return "ice"
    if text.startswith("dtls"):
        return "dtls"
    if "kick" in text or "room ended" in text:
        return "kicked"
    if "stopping" in text or "shutdown" in text:
        return "node_stopping"
    if text.startswith("setup"):
        return "setup"
    if "client" in text or "bye" in text or "leave" in text:
        return "client"
    return "other"


class Histogram:
    """A cumulative histogram with fixed upper bounds (Prometheus ``le``; +Inf implied)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


def peer_totals(peer: WebRtcPeer) -> dict[str, int]:
    """What one connection counted so far, as :data:`TOTALS` (read, never reset)."""
    c = peer.counters
    inbound = peer.inbound
    ic = inbound.counters
    forwarded = c["removed_out_packets"]
    octets = c["removed_out_octets"]
    nacked = c["removed_out_nacked"]
    retransmitted = c["removed_out_retransmitted"]
    for out in peer.outbound.values():
        forwarded += out.packets
        octets += out.octets
        oc = out.counters
        nacked += oc["nack_hits"] + oc["nack_misses"]
        retransmitted += oc["nack_hits"]
    return {
        "packets_received": c["datagrams"],
        "bytes_received": peer.bytes_received,
        "rtp_packets_received": ic["packets"],
        "forwarded_packets": forwarded,
        "forwarded_bytes": octets,
        "retransmitted_packets": retransmitted,
        "nacked_packets_received": nacked,
        "nacks_sent": inbound.nacks_sent,
        "keyframe_requests_received": c["keyframe_requests_received"],
        "keyframe_requests_sent": inbound.keyframe_requests,
        "err_srtp": c["srtp_dropped"],
        "err_srtcp": c["srtcp_dropped"],
        "err_rtp_malformed": c["rtp_malformed"],
        "err_rtcp_malformed": c["rtcp_malformed"],
        "err_media_before_dtls": c["media_before_dtls"],
        "err_unknown_packet": c["unknown_kind"] + c["empty"],
        "err_rtp_unknown_ssrc": ic["unknown_ssrc"] + ic["unknown_pt"],
        "err_rtp_bad_payload": ic["bad_payload"] + ic["bad_rtx"],
        "err_handler": c["handler_errors"],
    }


class MetricConn(Protocol):
    """What the metrics read of a connection (``conn_table.TableConn`` satisfies it)."""

    @property
    def kind(self) -> str: ...

    @property
    def peer(self) -> WebRtcPeer: ...


class ConnSource(Protocol):
    def live_conns(self) -> Iterable[MetricConn]: ...


class HasServices(Protocol):
    """A worker runtime's per-worker singletons, keyed by class (``WorkerRuntime.services``)."""

    services: dict[type, object]


class MediaMetrics:
    """One per worker (:meth:`of`); the worker's ConnTables report joins and closes to it."""

    def __init__(self) -> None:
        self.sources: list[ConnSource] = []
        self.retired: dict[str, dict[str, int]] = {}
        self.requested: dict[str, int] = {}
        self.connected: dict[str, int] = {}
        self.failed: dict[tuple[str, str], int] = {}
        self.closed: dict[tuple[str, str], int] = {}
        # The WebRTC transports every media worker installs (runtime/transports.py): their series exist
        # from the start, so a rate() or histogram_quantile() never sees them missing.
        self.join: dict[str, Histogram] = {kind: Histogram(JOIN_BUCKETS) for kind in ("whip", "whep", "sdk")}
        self.first_media: dict[str, Histogram] = {kind: Histogram(JOIN_BUCKETS) for kind in ("whip", "whep", "sdk")}
        self.first_media_missing: dict[str, int] = {}
        self.viewer_loss = Histogram(LOSS_BUCKETS)
        self.viewer_rtt = Histogram(RTT_BUCKETS)
        self.viewer_jitter = Histogram(JITTER_BUCKETS)
        self.rooms: RoomMetrics | None = None  # --metrics-room-labels N (runtime/room_metrics.py)

    @classmethod
    def of(cls, runtime: HasServices) -> MediaMetrics:
        found = runtime.services.get(cls)
        if found is None:
            found = runtime.services[cls] = cls()
        assert isinstance(found, MediaMetrics)
        return found

    # ---- per session (never per packet) -----------------------------------------------------

    def on_requested(self, kind: str) -> None:
        self.requested[kind] = self.requested.get(kind, 0) + 1

    def on_connected(self, kind: str, after: float) -> None:
        self.connected[kind] = self.connected.get(kind, 0) + 1
        hist = self.join.get(kind)
        if hist is None:
            hist = self.join[kind] = Histogram(JOIN_BUCKETS)
        hist.observe(max(after, 0.0))

    def on_first_media(self, kind: str, after: float) -> None:
        hist = self.first_media.get(kind)
        if hist is None:
            hist = self.first_media[kind] = Histogram(JOIN_BUCKETS)
        hist.observe(max(after, 0.0))

    def on_no_media(self, kind: str) -> None:
        """A connected session that neither sent nor got media within :data:`FIRST_MEDIA_GIVE_UP`."""
        self.first_media_missing[kind] = self.first_media_missing.get(kind, 0) + 1

    def on_failed(self, kind: str, reason: str) -> None:
        """A session that ended (or whose setup failed) before it ever connected."""
        key = (kind, close_reason_label(reason))
        self.failed[key] = self.failed.get(key, 0) + 1

    def on_closed(self, conn: MetricConn, reason: str, room: str | None = None) -> None:
        """``room``: the room the session was in (read before its endpoint left)."""
        kind = conn.kind
        key = (kind, close_reason_label(reason))
        self.closed[key] = self.closed.get(key, 0) + 1
        self._sample_viewers(conn.peer)  # its last reports count too
        totals = self.retired.get(kind)
        if totals is None:
            totals = self.retired[kind] = dict.fromkeys(TOTALS, 0)
        done = peer_totals(conn.peer)
        for name, value in done.items():
            totals[name] += value
        if self.rooms is not None:
            self.rooms.on_closed(room, done)

    # ---- at scrape time ---------------------------------------------------------------------

    def _sample_viewers(self, peer: WebRtcPeer) -> None:
        for out in peer.outbound.values():
            rep = out.reception
            if rep.blocks == rep.sampled:
                continue
            rep.sampled = rep.blocks
            self.viewer_loss.observe(rep.fraction_lost)
            self.viewer_jitter.observe(rep.jitter)
            if rep.rtt is not None:
                self.viewer_rtt.observe(rep.rtt)

    def snapshot(self) -> dict[str, Any]:
        """Every transport's totals (closed plus live), live sessions, the join funnel and the
        histograms, as plain JSON (a child worker sends it over its pipe)."""
        totals = {kind: dict(values) for kind, values in self.retired.items()}
        sessions: dict[str, int] = {}
        by_room: list[tuple[str | None, dict[str, int]]] | None = [] if self.rooms is not None else None
        for source in self.sources:
            for conn in source.live_conns():
                kind = conn.kind
                sessions[kind] = sessions.get(kind, 0) + 1
                self._sample_viewers(conn.peer)
                into = totals.get(kind)
                if into is None:
                    into = totals[kind] = dict.fromkeys(TOTALS, 0)
                live = peer_totals(conn.peer)
                for name, value in live.items():
                    into[name] += value
                if by_room is not None:
                    by_room.append((conn.peer.endpoint.room, live))
        out = {
            "totals": totals,
            "sessions": sessions,
            "requested": dict(self.requested),
            "connected": dict(self.connected),
            "failed": [[k, r, n] for (k, r), n in self.failed.items()],
            "closed": [[k, r, n] for (k, r), n in self.closed.items()],
            "join_seconds": {kind: h.to_dict() for kind, h in self.join.items()},
            "first_media_seconds": {kind: h.to_dict() for kind, h in self.first_media.items()},
            "first_media_missing": dict(self.first_media_missing),
            "viewer_loss_ratio": self.viewer_loss.to_dict(),
            "viewer_rtt_seconds": self.viewer_rtt.to_dict(),
            "viewer_jitter_seconds": self.viewer_jitter.to_dict(),
        }
        if self.rooms is not None and by_room is not None:
            out["rooms"] = self.rooms.snapshot(by_room)
        return out


def media_started(peer: WebRtcPeer) -> bool:
    """Whether the connection received an accepted RTP packet or had one forwarded to it."""
    if peer.inbound.counters["packets"] or peer.counters["removed_out_packets"]:
        return True
    return any(out.packets for out in peer.outbound.values())


class FirstMediaWatch:
    """Connected sessions waiting for their first media packet, from or to the peer: every
    :data:`FIRST_MEDIA_POLL` seconds (while any waits, never otherwise) it reads the counters the media
    path keeps anyway (:func:`media_started`) and observes request-to-first-media in
    :attr:`MediaMetrics.first_media`. Nothing per packet; the measure is late by at most one poll."""

    __slots__ = ("_due", "metrics", "schedule", "waiting")

    def __init__(self, metrics: MediaMetrics, schedule: Callable[[FirstMediaWatch], None]) -> None:
        """``schedule(self)``: (re)arm the worker's timer for :meth:`next_deadline` (``WorkerRuntime.track``)."""
        self.metrics = metrics
        self.schedule = schedule
        self.waiting: dict[object, tuple[str, WebRtcPeer, float]] = {}
        self._due: float | None = None

    def add(self, now: float, key: object, kind: str, peer: WebRtcPeer, asked: float) -> None:
        """``key`` connected at ``now``; it was requested at ``asked``."""
        if media_started(peer):  # the connected event can come after the first packet
            self.metrics.on_first_media(kind, now - asked)
            return
        self.waiting[key] = (kind, peer, asked)
        if self._due is None:
            self._due = now + FIRST_MEDIA_POLL
            self.schedule(self)

    def forget(self, key: object) -> None:
        """The session closed: it is not waited for any more (and not counted as missing)."""
        self.waiting.pop(key, None)

    def next_deadline(self) -> float | None:
        return self._due

    def handle_timeout(self, now: float) -> None:
        done = []
        for key, (kind, peer, asked) in self.waiting.items():
            if media_started(peer):
                self.metrics.on_first_media(kind, now - asked)
                done.append(key)
            elif now - asked >= FIRST_MEDIA_GIVE_UP:
                self.metrics.on_no_media(kind)
                done.append(key)
        for key in done:
            del self.waiting[key]
        self._due = now + FIRST_MEDIA_POLL if self.waiting else None
