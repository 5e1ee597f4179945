"""Prometheus exposition of a media or standalone node (built per scrape, docs/observability.md).

Everything is read from what the node and its workers already count (``worker.stats``): the
workers' plain counters, their media totals by transport (``runtime/media_metrics.py``), the
embedded connector's queues and the HTTP limits. Labels are bounded: ``worker`` (one per
process), ``transport`` (whip, whep, sdk...), ``reason`` and ``kind`` (small fixed sets); never a
peer, track or room.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from trackmesh import __version__

from .exposition import Exposition

if TYPE_CHECKING:
    from trackmesh.security.throttle import FailureThrottle

    from .api import NodeApi

#: Per-transport media totals: (metric name without _total, help). Keys of media_metrics.TOTALS.
MEDIA_COUNTERS: dict[str, tuple[str, str]] = {
    "packets_received": ("trackmesh_packets_received", "UDP datagrams received by the transport's sessions (STUN, "
                         "DTLS, SRTP, SRTCP)"),
    "bytes_received": ("trackmesh_bytes_received", "Bytes of the UDP datagrams received by the transport's sessions"),
    "rtp_packets_received": ("trackmesh_rtp_packets_received", "Media (RTP) packets accepted from publishers "
                             "(decrypted, parsed, not duplicates)"),
    "forwarded_packets": ("trackmesh_forwarded_packets", "RTP packets forwarded to viewers (retransmissions not "
                          "included)"),
    "forwarded_bytes": ("trackmesh_forwarded_bytes", "RTP payload bytes forwarded to viewers"),
    "retransmitted_packets": ("trackmesh_retransmitted_packets", "Packets re-sent to viewers in answer to NACKs"),
    "nacked_packets_received": ("trackmesh_nacks_received", "Packets viewers asked for again by generic NACK "
                                "(RFC 4585 s6.2.1)"),
    "nacks_sent": ("trackmesh_nacks_sent", "Generic NACK packets sent to publishers"),
    "keyframe_requests_received": ("trackmesh_plis_received", "Key frame requests (PLI, FIR) received from viewers"),
    "keyframe_requests_sent": ("trackmesh_plis_sent", "Key frame requests (PLI, FIR) sent to publishers"),
}
#: Worker "counters" that are levels (they go down too): exposed as gauges, since rate() over a counter
#: that decreases reads a reset.
WORKER_LEVELS = frozenset({"rtmp_sessions", "rtmp_publishers", "rtmp_video_transcodes_running", "recording_tracks"})
#: The transports every media node has (others appear with their first session).
DEFAULT_TRANSPORTS = ("whip", "whep", "sdk")
#: Dropped-input kinds: media_metrics.TOTALS "err_<kind>".
ERROR_KINDS = ("srtp", "srtcp", "rtp_malformed", "rtcp_malformed", "media_before_dtls", "unknown_packet",
               "rtp_unknown_ssrc", "rtp_bad_payload", "handler")


def render_metrics(
    node: NodeApi, stats: list[dict[str, Any]], auth: FailureThrottle | None = None
) -> tuple[str, str]:
    exp = Exposition()
    exp.gauge("trackmesh_info", "Build and role of this node", 1,
              {"version": __version__, "role": node.config.role})
    exp.gauge("trackmesh_ready", "1 when the node takes new sessions (GET /api/node/health)",
              1 if node.readiness()[0] else 0)
    if auth is not None:
        add_auth_metrics(exp, auth)
    medias = []
    for st in stats:
        if "error" in st:
            continue
        worker = {"worker": str(st["worker"])}
        exp.gauge("trackmesh_endpoints", "Live endpoints (connections)", st["endpoints"], worker)
        exp.gauge("trackmesh_rooms", "Rooms with endpoints on this worker", st["rooms"], worker)
        if "loop_lag" in st:
            lag = st["loop_lag"]
            exp.gauge("trackmesh_loop_lag_seconds",
                      "Worst lateness of the worker's timer over the last 10-20 s (event-loop lag)",
                      lag["recent_max_s"], worker)
            exp.counter("trackmesh_loop_lateness_seconds", "Summed lateness of the worker's timer", lag["late_total_s"],
                        worker)
            exp.counter("trackmesh_timer_fires", "Times the worker's timer fired", lag["timer_fires"], worker)
        for name, value in st["counters"].items():
            if name in WORKER_LEVELS:
                exp.gauge(f"trackmesh_{name}", f"Worker level {name}", value, worker)
            else:
                exp.counter(f"trackmesh_{name}", f"Worker counter {name}", value, worker)
        if "media" in st:
            medias.append(st["media"])
        cluster = st.get("cluster")
        if isinstance(cluster, dict) and "error" not in cluster:
            add_cluster_metrics(exp, worker, cluster)
        spread_links = st.get("spread")  # a standalone node's --room-spread links (runtime/worker_spread.py)
        if isinstance(spread_links, dict):
            add_spread_metrics(exp, worker, spread_links)
    if node.config.role in ("standalone", "media"):
        add_media_metrics(exp, merge_snapshots(medias))
        limit = node.config.metrics_room_labels
        if limit:  # opt-in (--metrics-room-labels): the only series labelled by room
            add_room_metrics(exp, merge_rooms([m["rooms"] for m in medias if "rooms" in m], limit))
    connector = node.connector
    if connector is not None:
        add_connector_metrics(exp, connector.metrics())
    for name, value in node.link_metrics().items():
        exp.gauge("trackmesh_connector_link", "Events to the zone's connector: pending (queued, spilled or "
                  "unacknowledged), batches sent, resent and acknowledged, events spilled to disk or dropped; "
                  "app lists taken from the zone's connector and refused (app_lists, app_list_rejected)",
                  value, {"what": name})
    spread = getattr(node, "spread_viewers", None)  # a media node's --room-spread (runtime/cluster_node.py)
    routing = getattr(node, "spread_routing", None)  # a standalone node's (runtime/spread_routing.py)
    if spread is None and routing is not None:
        spread = routing.spread_viewers
    if spread is not None:
        exp.counter("trackmesh_spread_viewers", "Viewers --room-spread placed on another worker than their "
                    "room's (the room's tracks cross to that worker once, over its cluster channels or, "
                    "standalone, the links between its workers)", spread)
    console = getattr(node, "console_metrics", None)  # the console role (runtime/console_node.py)
    if console is not None:
        for name, value in console().items():
            exp.gauge("trackmesh_console", "The console role: cluster members by state (members_up, members_stale, "
                      "members_gone), zenoh links, whether the rooms view is stale, and running totals (*_total) of "
                      "cluster queries, failed queries, failed connector log calls, bad reports, and the zones' app "
                      "lists taken and refused", value,
                      {"what": name})  # fmt: skip
    moq = getattr(node, "moq", None)  # runtime/moq_listener.py, when --moq-port is not 0
    if moq is not None:
        for name, value in moq.metrics().items():
            exp.gauge("trackmesh_moq", "Media over QUIC: sessions, relay namespaces/tracks/subscriptions and "
                      "counters (*_total) of sessions, refusals, objects and streams", value, {"what": name})
    add_http_metrics(exp, node.http_counters)
    return exp.render()


def add_media_metrics(exp: Exposition, media: dict[str, Any]) -> None:
    """The workers' media totals, summed (``media_metrics.merge_snapshots``)."""
    for name, doc in (
        ("trackmesh_join_requests", "Sessions requested (offer accepted or setup started), by transport"),
        ("trackmesh_join_connected", "Sessions that connected (ICE and DTLS up), by transport"),
    ):
        exp.declare_counter(name, doc, ["transport"])
    exp.declare_counter("trackmesh_join_failed", "Sessions that ended before they connected, by transport and reason",
                        ["transport", "reason"])
    exp.declare_counter("trackmesh_sessions_closed", "Sessions closed, by transport and reason",
                        ["transport", "reason"])
    for kind, n in sorted(media["requested"].items()):
        exp.counter("trackmesh_join_requests", "", n, {"transport": kind})
    for kind, n in sorted(media["connected"].items()):
        exp.counter("trackmesh_join_connected", "", n, {"transport": kind})
    for (kind, reason), n in sorted(media["failed"].items()):
        exp.counter("trackmesh_join_failed", "", n, {"transport": kind, "reason": reason})
    for (kind, reason), n in sorted(media["closed"].items()):
        exp.counter("trackmesh_sessions_closed", "", n, {"transport": kind, "reason": reason})
    for kind in DEFAULT_TRANSPORTS:  # present from the start: a rate() over them never sees a missing series
        media["totals"].setdefault(kind, {})
    kinds = sorted(set(media["totals"]) | set(media["sessions"]) | set(media["requested"]))
    for kind in kinds:
        exp.gauge("trackmesh_sessions", "Live sessions by transport", media["sessions"].get(kind, 0),
                  {"transport": kind})
    for kind in sorted(media["totals"]):
        totals = media["totals"][kind]
        label = {"transport": kind}
        for key, (name, doc) in MEDIA_COUNTERS.items():
            exp.counter(name, doc, totals.get(key, 0), label)
        for err in ERROR_KINDS:
            exp.counter("trackmesh_media_errors", "Input dropped and counted, by transport and kind (srtp, srtcp: "
                        "failed authentication; *_malformed: unparsable)", totals.get(f"err_{err}", 0),
                        {"transport": kind, "kind": err})
    for kind, hist in sorted(media["join_seconds"].items()):
        exp.histogram("trackmesh_join_duration_seconds", "Time from the session request (offer) to connected "
                      "(ICE and DTLS up: media can flow), by transport", hist, {"transport": kind})
    for kind, hist in sorted(media["first_media_seconds"].items()):
        exp.histogram("trackmesh_first_media_seconds", "Time from the session request (offer) to the first media "
                      "packet received from or forwarded to the peer, by transport", hist, {"transport": kind})
    exp.declare_counter("trackmesh_first_media_missing", "Connected sessions with no media packet within 30 s of "
                        "their request (a viewer of an empty room), by transport", ["transport"])
    for kind, n in sorted(media["first_media_missing"].items()):
        exp.counter("trackmesh_first_media_missing", "", n, {"transport": kind})
    docs = {
        "viewer_loss_ratio": "Fraction lost that viewers report about forwarded streams (RTCP receiver reports, one "
                             "sample per viewer stream and scrape)",
        "viewer_rtt_seconds": "Round-trip time to viewers from their receiver reports (LSR/DLSR, RFC 3550 s6.4.1)",
        "viewer_jitter_seconds": "Interarrival jitter viewers report about forwarded streams",
    }
    for name, doc in docs.items():
        if name in media:
            exp.histogram(f"trackmesh_{name}", doc, media[name])


#: The per-room series (``--metrics-room-labels``), in the order of runtime/room_metrics.py ROOM_TOTALS.
ROOM_COUNTERS = {
    "rtp_packets_received": ("trackmesh_room_rtp_packets_received", "Media (RTP) packets accepted from the room's "
                             "publishers on this node (with --metrics-room-labels)"),
    "forwarded_packets": ("trackmesh_room_forwarded_packets", "RTP packets forwarded to the room's viewers on this "
                          "node (with --metrics-room-labels)"),
    "forwarded_bytes": ("trackmesh_room_forwarded_bytes", "RTP payload bytes forwarded to the room's viewers on "
                        "this node (with --metrics-room-labels)"),
}


def merge_rooms(snaps: Iterable[dict[str, Any]], limit: int) -> dict[str, Any]:
    """The workers' per-room rows (runtime/room_metrics.py ``RoomMetrics.snapshot``: ``[room, sessions,
    *totals]``) as the node's: summed by room, then the ``limit`` busiest kept (most sessions, then most
    forwarded packets, then the name), the rest counted in ``omitted``."""
    width = 1 + len(ROOM_COUNTERS)
    rows: dict[str, list[int]] = {}
    omitted = 0
    for snap in snaps:
        omitted += int(snap.get("omitted", 0))
        for room, *values in snap.get("rooms", []):
            have = rows.setdefault(str(room), [0] * width)
            for i, value in enumerate(values[:width]):
                have[i] += int(value)
    order = sorted(rows.items(), key=lambda item: (-item[1][0], -item[1][2], item[0]))
    kept = [[room, *values] for room, values in order[:limit]]
    return {"rooms": kept, "omitted": omitted + max(0, len(order) - limit)}


def add_room_metrics(exp: Exposition, rooms: dict[str, Any]) -> None:
    """The N busiest rooms (``runtime/room_metrics.py``), labelled ``room``; the others only counted."""
    # Declared first: HELP and TYPE appear even before the first room, so a dashboard's query finds them.
    exp.declare_gauge("trackmesh_room_sessions", "Live WebRTC sessions (WHIP, WHEP, SDK) of the room on this node "
                      "(with --metrics-room-labels)", ["room"])
    for name, doc in ROOM_COUNTERS.values():
        exp.declare_counter(name, doc, ["room"])
    exp.gauge("trackmesh_room_labels_omitted", "Rooms with live sessions on this node that are not labelled: "
              "beyond --metrics-room-labels N", rooms["omitted"])
    for room, sessions, *totals in rooms["rooms"]:
        label = {"room": str(room)}
        exp.gauge("trackmesh_room_sessions", "", sessions, label)
        for (name, _), value in zip(ROOM_COUNTERS.values(), totals, strict=True):
            exp.counter(name, "", value, label)


#: A cluster media node's per-worker traffic with the other nodes (runtime/worker_cluster.py, cluster.stats).
CLUSTER_COUNTERS = {
    "packets_out": ("trackmesh_cluster_packets_sent", "Media packets this worker published to other nodes"),
    "packets_in": ("trackmesh_cluster_packets_received", "Media packets this worker received from other nodes"),
    "bad_packets": ("trackmesh_cluster_bad_packets", "Malformed packets from other nodes, dropped"),
    "feedback_out": ("trackmesh_cluster_feedback_sent", "Feedback (key frame requests, bitrate hints) sent to "
                     "other nodes"),
    "feedback_in": ("trackmesh_cluster_feedback_received", "Feedback received from other nodes"),
    "messages_out": ("trackmesh_cluster_messages_sent", "Data-channel messages sent to other nodes"),
    "messages_in": ("trackmesh_cluster_messages_received", "Data-channel messages received from other nodes"),
    "bad_messages": ("trackmesh_cluster_bad_messages", "Malformed messages from other nodes, dropped"),
    "registry_members_lost": ("trackmesh_cluster_members_lost", "Cluster members whose registry entries were "
                              "dropped when their liveliness went"),
    "callback_errors": ("trackmesh_cluster_callback_errors", "Errors in zenoh callbacks, caught"),
}


def add_cluster_metrics(exp: Exposition, worker: dict[str, str], cluster: dict[str, Any]) -> None:
    for key, (name, doc) in CLUSTER_COUNTERS.items():
        if isinstance(cluster.get(key), int | float):
            exp.counter(name, doc, cluster[key], worker)
    exp.gauge("trackmesh_cluster_channels", "Channels (tracks) this worker exports to or imports from other nodes",
              cluster.get("channels_exported", 0), {**worker, "direction": "export"})
    exp.gauge("trackmesh_cluster_channels", "", cluster.get("channels_imported", 0), {**worker, "direction": "import"})
    exp.gauge("trackmesh_cluster_peers", "zenoh sessions this worker is linked to", cluster.get("peers", 0), worker)
    hop = cluster.get("hop")
    if isinstance(hop, dict) and "bounds" in hop:
        exp.histogram("trackmesh_cluster_hop_seconds", "Media packets from other nodes: their send stamp (sender's "
                      "wall clock) to their arrival on this worker's loop; between hosts it includes the clocks' "
                      "offset (docs/observability.md)", hop, worker)
        exp.counter("trackmesh_cluster_hop_clock_behind", "Media packets from other nodes stamped later than "
                    "their arrival by this worker's clock (the hosts' clocks differ by more than the hop): not "
                    "observed in trackmesh_cluster_hop_seconds", hop.get("behind", 0), worker)


#: A standalone node's per-worker traffic with its other workers, spreading rooms (runtime/worker_spread.py).
SPREAD_COUNTERS = {
    "packets_out": ("trackmesh_spread_packets_sent", "Media packets this worker sent to the node's other workers "
                    "(one copy per packet and worker with viewers of the track)"),
    "packets_in": ("trackmesh_spread_packets_received", "Media packets this worker received from the node's "
                   "other workers"),
    "packets_dropped": ("trackmesh_spread_packets_dropped", "Media packets not sent: the other worker was behind"),
    "feedback_out": ("trackmesh_spread_feedback_sent", "Feedback (key-frame requests, bitrate hints) sent to the "
                     "worker publishing the track"),
    "feedback_in": ("trackmesh_spread_feedback_received", "Feedback received from the node's other workers"),
    "messages_out": ("trackmesh_spread_messages_sent", "Channel messages sent to the node's other workers"),
    "messages_in": ("trackmesh_spread_messages_received", "Channel messages received from the node's other workers"),
    "bad_items": ("trackmesh_spread_bad_items", "Malformed items from the node's other workers, dropped"),
}


def add_spread_metrics(exp: Exposition, worker: dict[str, str], spread: dict[str, Any]) -> None:
    for key, (name, doc) in SPREAD_COUNTERS.items():
        if isinstance(spread.get(key), int | float):
            exp.counter(name, doc, spread[key], worker)
    exp.gauge("trackmesh_spread_channels", "Tracks this worker sends to or receives from the node's other workers",
              spread.get("channels_exported", 0), {**worker, "direction": "export"})
    exp.gauge("trackmesh_spread_channels", "", spread.get("channels_imported", 0), {**worker, "direction": "import"})


def add_connector_metrics(exp: Exposition, m: dict[str, float]) -> None:
    """The embedded connector: its event queue and webhook outbox (docs/connector.md)."""
    gauges = {
        "queued": ("trackmesh_hook_queue_depth", "Webhooks waiting to be delivered (queued and in flight)"),
        "oldest_undelivered_age_s": ("trackmesh_hook_oldest_undelivered_age_seconds",
                                     "Age of the oldest undelivered webhook"),
        "source_queued": ("trackmesh_connector_events_queued", "Events waiting for the connector's database"),
    }
    counters = {
        "delivered": ("trackmesh_hooks_delivered", "Webhooks delivered (2xx)"),
        "retried": ("trackmesh_hooks_retried", "Webhook attempts that failed and were scheduled again"),
        "gave_up": ("trackmesh_hooks_given_up", "Webhooks given up after --hook-retry-for"),
        "attempts": ("trackmesh_hook_attempts", "Webhook HTTP attempts"),
        "source_emitted": ("trackmesh_connector_events", "Events made by this node's workers"),
        "source_dropped": ("trackmesh_connector_events_dropped", "Events dropped: the queue to the connector was full"),
    }
    for key, (name, doc) in gauges.items():
        value = m.get(key, 0.0)
        if key == "queued":
            value = m.get("queued", 0.0) + m.get("in_flight", 0.0)
        exp.gauge(name, doc, value)
    for key, (name, doc) in counters.items():
        exp.counter(name, doc, m.get(key, 0.0))
    # The rest, a small fixed set of the service's and the connector role's own counters (events
    # stored and deduplicated, cluster link batches, malformed or bad items, failed nodes closed).
    for key in sorted(set(m) - set(gauges) - set(counters) - {"in_flight"}):
        exp.gauge("trackmesh_connector", "Connector counters and levels by name: events stored and duplicates, "
                  "link batches, malformed link messages and bad items, nodes whose sessions were closed",
                  m[key], {"what": key})


def add_http_metrics(exp: Exposition, counters: dict[str, int]) -> None:
    for name, value in sorted(counters.items()):  # the HTTP limits (trackmesh.http.serving)
        exp.counter(f"trackmesh_{name}", f"HTTP limit counter {name}", value)


def add_auth_metrics(exp: Exposition, auth: FailureThrottle) -> None:
    exp.counter("trackmesh_auth_failures", "Wrong app secrets presented (POST /token/*, console login)",
                auth.failures)
    exp.counter("trackmesh_auth_throttled", "Requests refused with 429 (too many wrong app secrets)", auth.throttled)
    exp.gauge("trackmesh_auth_throttled_sources", "Client addresses with a failed-secret bucket", len(auth))


def merge_snapshots(snaps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The node's view: the workers' ``media`` stats (``runtime/media_metrics.py``) added up, histograms
    bucket by bucket."""
    out: dict[str, Any] = {"totals": {}, "sessions": {}, "requested": {}, "connected": {}, "failed": {},
                           "closed": {}, "join_seconds": {}, "first_media_seconds": {}, "first_media_missing": {}}

    def add_hist(into: dict[str, Any], key: str, h: dict[str, Any]) -> None:
        have = into.get(key)
        if have is None:
            into[key] = {"bounds": list(h["bounds"]), "counts": list(h["counts"]), "sum": float(h["sum"])}
            return
        if have["bounds"] != h["bounds"]:
            return  # a worker of another version: never mix buckets
        have["counts"] = [a + b for a, b in zip(have["counts"], h["counts"], strict=True)]
        have["sum"] += float(h["sum"])

    for snap in snaps:
        for kind, values in snap.get("totals", {}).items():
            into = out["totals"].setdefault(kind, {})
            for name, value in values.items():
                into[name] = into.get(name, 0) + int(value)
        for what in ("sessions", "requested", "connected", "first_media_missing"):
            for kind, n in snap.get(what, {}).items():
                out[what][kind] = out[what].get(kind, 0) + int(n)
        for what in ("failed", "closed"):
            for kind, reason, n in snap.get(what, []):
                key = (str(kind), str(reason))
                out[what][key] = out[what].get(key, 0) + int(n)
        for what in ("join_seconds", "first_media_seconds"):
            for kind, h in snap.get(what, {}).items():
                add_hist(out[what], kind, h)
        for name in ("viewer_loss_ratio", "viewer_rtt_seconds", "viewer_jitter_seconds"):
            if name in snap:
                add_hist(out, name, snap[name])
    return out
