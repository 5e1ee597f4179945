"""Events at the source: ids, the bounded queue, give-back order, reasons, wall-clock stamps."""

from __future__ import annotations

from trackmesh.connector import events as ev
from trackmesh.connector.source import EventSource, disconnect_reason
from trackmesh.core.ids import SessionId
from trackmesh.core.model import TrackKind


def test_session_funnel_and_queue() -> None:
    src = EventSource(node=7, boot=1, wall_offset=1_000.0, max_queued=100)
    woke = []
    src.on_ready = lambda: woke.append(1)
    s = SessionId(42)
    src.connecting(10.0, s, "127.0.0.9")
    src.joined(10.1, s, "r", "p")
    src.track_started(10.2, s, "video_main", TrackKind.VIDEO)
    src.connected(10.5, s, "")
    src.disconnected(70.0, s, "deleted by the client")
    assert woke == [1]
    batch = src.take(3)
    assert [e.name for e in batch] == ["Connecting", "Join", "RemoteTrackStarted"]
    src.give_back(batch)
    everything = src.take()
    assert [e.name for e in everything] == ["Connecting", "Join", "RemoteTrackStarted", "Connected", "Disconnected"]
    assert len({e.id for e in everything}) == 5 and all(e.id.startswith("evt_7_") for e in everything)
    assert everything[0].hook.ts == 1_010_000
    connected = everything[3].hook.event
    assert isinstance(connected, ev.PeerEvent) and connected.event == ev.Connected(500, "127.0.0.9")
    gone = everything[4].hook.event
    assert isinstance(gone, ev.PeerEvent) and gone.event == ev.Disconnected(60_000, ev.DisconnectReason.USER_ACTION)


def test_a_track_muted_by_the_operator_is_an_event_of_its_session() -> None:
    src = EventSource(node=7, boot=1, wall_offset=0.0, max_queued=10)
    src.track_muted(3.0, SessionId(5), "video_main", True)
    src.track_muted(4.0, SessionId(5), "video_main", False)
    events = [e.hook.event for e in src.take()]
    assert [e.event for e in events if isinstance(e, ev.PeerEvent)] == [
        ev.RemoteTrackMuted("video_main", True), ev.RemoteTrackMuted("video_main", False)]  # fmt: skip


def test_full_queue_drops_and_counts() -> None:
    src = EventSource(1, 1, 0.0, max_queued=3)
    for i in range(5):
        src.joined(1.0, SessionId(i), "r", "p")
    assert src.queued == 3 and src.dropped == 2 and src.emitted == 3


def test_disconnect_reasons() -> None:
    assert disconnect_reason("node stopping") is ev.DisconnectReason.NODE_SHUTDOWN
    assert disconnect_reason("ICE consent expired") is ev.DisconnectReason.TIMEOUT
    assert disconnect_reason("deleted by the client") is ev.DisconnectReason.USER_ACTION
    assert disconnect_reason("kicked by the API") is ev.DisconnectReason.KICK_BY_API
