"""Time to the first media packet (runtime/media_metrics.py FirstMediaWatch), in memory on a virtual
clock, on real WHIP and WHEP sessions of a worker's connection table: the watch reads the counters the
media path keeps (set here as the media path would) and observes request-to-first-media per transport."""

from __future__ import annotations

from pathlib import Path

from trackmesh.config import resolve
from trackmesh.runtime.media_metrics import FIRST_MEDIA_GIVE_UP, FIRST_MEDIA_POLL, MediaMetrics
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.transports.whip_whep.session import PeerMode

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
WHIP_OFFER = (FIXTURES / "chrome_whip_simulcast.sdp").read_text()
WHEP_OFFER = (FIXTURES / "chrome_whep_recvonly.sdp").read_text()


def _worker() -> tuple[WorkerRuntime, WebRtcTransport]:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    runtime.udp_port = 40000  # not started: no socket, but answers need a port
    return runtime, WebRtcTransport(runtime)


def _params(offer: str, peer: str) -> dict[str, object]:
    return {"offer": offer, "room": "r1", "peer": peer, "token_hash": "h1"}


def _observed(metrics: MediaMetrics, kind: str) -> tuple[int, float]:
    hist = metrics.first_media[kind]
    return sum(hist.counts), hist.sum


def test_publisher_and_viewer_are_observed_at_their_first_media_packet_and_only_once() -> None:
    runtime, whip = _worker()
    whip.create(0.0, _params(WHIP_OFFER, "pub"), PeerMode.WHIP)
    whip.create(0.1, _params(WHEP_OFFER, "viewer"), PeerMode.WHEP)
    publisher = next(c for c in whip.table.conns.values() if not c.peer.outbound)
    viewer = next(c for c in whip.table.conns.values() if c.peer.outbound)
    publisher.on_connected(0.5)
    viewer.on_core_events(0.5)  # WHEP follows the room's new tracks
    watch, metrics = whip.table.first_media, whip.table.metrics
    watch.add(0.5, publisher.key, "whip", publisher.peer, 0.0)  # as the table does at their Connected
    watch.add(0.6, viewer.key, "whep", viewer.peer, 0.1)
    runtime.scheduler.run_due(1.0)
    assert _observed(metrics, "whip") == (0, 0.0) and len(watch.waiting) == 2  # no media yet
    publisher.peer.inbound.counters["packets"] = 1  # the first RTP packet accepted from the publisher
    runtime.scheduler.run_due(1.2)
    assert _observed(metrics, "whip") == (1, 1.2)
    assert _observed(metrics, "whep") == (0, 0.0)
    video = next(o for o in viewer.peer.outbound.values() if o.video)
    video.packets = 1  # the first packet forwarded to the viewer
    runtime.scheduler.run_due(1.3)
    count, total = _observed(metrics, "whep")
    assert count == 1 and abs(total - 1.2) < 1e-9
    assert not watch.waiting and watch.next_deadline() is None  # nothing polled once nobody waits
    runtime.scheduler.run_due(5.0)
    assert _observed(metrics, "whip")[0] == 1 and _observed(metrics, "whep")[0] == 1
    snap = metrics.snapshot()
    assert sum(snap["first_media_seconds"]["whip"]["counts"]) == 1
    assert snap["first_media_missing"] == {}


def test_a_viewer_with_nothing_to_watch_is_counted_missing_and_a_closed_session_is_forgotten() -> None:
    _, whip = _worker()
    whip.create(0.0, _params(WHEP_OFFER, "lonely"), PeerMode.WHEP)
    whip.create(0.0, _params(WHEP_OFFER, "leaver"), PeerMode.WHEP)
    lonely, leaver = list(whip.table.conns.values())
    watch, metrics = whip.table.first_media, whip.table.metrics
    watch.add(0.4, lonely.key, "whep", lonely.peer, 0.0)
    watch.add(0.4, leaver.key, "whep", leaver.peer, 0.0)
    whip.table.close(1.0, leaver, "deleted by the client")
    assert set(watch.waiting) == {lonely.key}
    t = 0.4
    while t < FIRST_MEDIA_GIVE_UP + 1:  # the watch's timer only (these sessions never connect for real)
        t += FIRST_MEDIA_POLL * 10
        watch.handle_timeout(t)
    assert not watch.waiting
    assert metrics.first_media_missing == {"whep": 1}
    assert _observed(metrics, "whep") == (0, 0.0)


def test_media_before_the_connected_event_is_observed_at_once() -> None:
    _, whip = _worker()
    whip.create(0.0, _params(WHIP_OFFER, "pub"), PeerMode.WHIP)
    [publisher] = whip.table.conns.values()
    publisher.peer.inbound.counters["packets"] = 3
    whip.table.first_media.add(0.3, publisher.key, "whip", publisher.peer, 0.0)
    assert _observed(whip.table.metrics, "whip") == (1, 0.3) and not whip.table.first_media.waiting
