"""The connection table's connector events beyond the session funnel (runtime/conn_table.py), in
memory on a virtual clock: route events, ConnectError (refused offer, connect timeout), Reconnect /
Reconnected around an ICE restart, and the 1-s track sampler's RemoteTrackMuted and LocalTrackLayer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.transports.sdk.test_renegotiation import tracks
from trackmesh.config import resolve
from trackmesh.connector import events as ev
from trackmesh.connector.source import EventSource
from trackmesh.core.track_watch import LAYER_SETTLE, MIN_INTERVAL, MUTE_AFTER
from trackmesh.rpc import RpcError
from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.transports.sdk.protocol import gateway_pb2
from trackmesh.transports.webrtc.ice.agent import IceCredentials, IceLiteClient
from trackmesh.transports.whip_whep.session import PeerMode

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
WHIP_OFFER = (FIXTURES / "chrome_whip_simulcast.sdp").read_text()
WHEP_OFFER = (FIXTURES / "chrome_whep_recvonly.sdp").read_text()
CLIENT = IceCredentials("new1", "newclientpassword0000001")
RESTART = f"a=ice-ufrag:{CLIENT.ufrag}\r\na=ice-pwd:{CLIENT.pwd}\r\n"


def _worker(**flags: Any) -> tuple[WorkerRuntime, WebRtcTransport, SdkTransport, EventSource]:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345", **flags}, {}), 0)
    runtime.udp_port = 40000  # not started: no socket, but answers need a port
    whip, sdk = WebRtcTransport(runtime), SdkTransport(runtime)
    runtime.core.audit = source = EventSource(3, 7, 0.0)
    return runtime, whip, sdk, source


def _events(source: EventSource) -> list[tuple[int, ev.PeerEventBody]]:
    out = []
    for e in source.take(10_000):
        assert isinstance(e.hook.event, ev.PeerEvent)
        out.append((e.hook.event.session_id, e.hook.event.event))
    return out


def _params(offer_text: str, **extra: Any) -> dict[str, Any]:
    return {"offer": offer_text, "room": "r1", "peer": None, "token_hash": "h1", "remote_ip": "203.0.113.5",
            "app": "acme", **extra}


def test_a_routed_request_reports_route_begin_and_success_before_connecting() -> None:
    _, whip, _, source = _worker()
    whip.create(2.0, _params(WHIP_OFFER, routed_at=1.75), PeerMode.WHIP)
    events = _events(source)
    assert [type(b) for _, b in events[:3]] == [ev.RouteBegin, ev.RouteSuccess, ev.Connecting]
    assert events[0][1] == ev.RouteBegin("203.0.113.5") and events[1][1] == ev.RouteSuccess(250, 3)
    assert len({s for s, _ in events}) == 1
    # Without the arrival time (a direct worker call), no route events.
    whip.create(3.0, _params(WHIP_OFFER), PeerMode.WHIP)
    assert type(_events(source)[0][1]) is ev.Connecting


@pytest.mark.parametrize("transport", ["whip", "sdk"])
def test_a_refused_offer_is_a_connect_error_of_its_own_session(transport: str) -> None:
    runtime, whip, sdk, source = _worker()
    with pytest.raises(RpcError) as refused:
        if transport == "whip":
            whip.create(5.0, _params("v=0\r\nnot an offer\r\n", routed_at=5.0), PeerMode.WHIP)
        else:
            req = gateway_pb2.ConnectRequest(sdp="v=0\r\nnot an offer\r\n", tracks=tracks([], []))
            sdk.connect(5.0, {"request": req.SerializeToString(), "token_hash": "s1", "remote_ip": "203.0.113.5",
                              "routed_at": 5.0})
    assert refused.value.status == 400
    events = _events(source)
    assert [type(b) for _, b in events] == [ev.RouteBegin, ev.RouteSuccess, ev.Connecting, ev.ConnectError]
    assert events[-1][1] == ev.ConnectError(0, ev.ConnectErrorType.INVALID_SDP)
    assert len({s for s, _ in events}) == 1 and not runtime.core.endpoints and not whip.table.conns


def test_a_session_that_never_connects_ends_with_a_connect_timeout_error() -> None:
    runtime, whip, _, source = _worker(connect_timeout="2")
    whip.create(1.0, _params(WHIP_OFFER), PeerMode.WHIP)
    runtime.scheduler.run_due(10.0)
    assert not whip.table.conns
    events = _events(source)
    names = [type(b) for _, b in events]
    assert names[-1] is ev.ConnectError and ev.Disconnected not in names
    # The timer fired at 10.0 (run_due's now), 9 s after Connecting.
    assert events[-1][1] == ev.ConnectError(9000, ev.ConnectErrorType.TIMEOUT)


def test_an_ice_restart_reports_reconnect_then_reconnected_at_the_first_check_with_the_new_credentials() -> None:
    _, whip, _, source = _worker()
    made = whip.create(1.0, _params(WHIP_OFFER), PeerMode.WHIP)
    [session] = whip.table.conns.values()
    _events(source)
    whip.patch(2.0, {"conn_id": made["conn_id"], "token_hash": "h1", "frag": RESTART, "if_match": made["etag"],
                     "remote_ip": "198.51.100.9"}, mode=PeerMode.WHIP)
    assert _events(source) == [(session.key, ev.Reconnect("198.51.100.9"))]
    whip.table.after_input(2.25, session)
    assert _events(source) == []  # no check with the new credentials yet
    local = session.peer.ice.local_credentials
    client = IceLiteClient(local=CLIENT, remote_ufrag=local.ufrag, remote_pwd=local.pwd)
    assert session.peer.ice.handle_stun(2.5, client.create_check(2.5, use_candidate=True), ("198.51.100.9", 4000))
    whip.table.after_input(2.5, session)
    assert _events(source) == [(session.key, ev.Reconnected(500, "198.51.100.9"))]
    whip.table.after_input(3.0, session)
    assert _events(source) == []  # once


def _sample(runtime: WorkerRuntime, until: float) -> None:
    t = 0.0
    while t < until:
        t += 0.5
        runtime.scheduler.run_due(t)


def test_the_sampler_reports_a_publisher_that_stops_sending_and_resumes() -> None:
    runtime, whip, _, source = _worker()
    whip.create(0.0, _params(WHIP_OFFER), PeerMode.WHIP)
    [session] = whip.table.conns.values()
    session.on_connected(0.5)  # a WHIP client's tracks go live once it is connected
    tracks_of = session.peer.endpoint.remote_tracks
    assert tracks_of
    name, track = next(iter(tracks_of.items()))
    _events(source)
    track.packets = 100
    runtime.scheduler.run_due(1.0)
    runtime.scheduler.run_due(2.0)
    later = 2.0 + MUTE_AFTER + 1.0
    runtime.scheduler.run_due(later)
    assert (session.key, ev.RemoteTrackMuted(name, True)) in _events(source)
    track.packets = 101
    runtime.scheduler.run_due(later + MIN_INTERVAL + 1.0)
    assert _events(source) == [(session.key, ev.RemoteTrackMuted(name, False))]


def test_the_sampler_reports_a_viewers_settled_layer_change() -> None:
    runtime, whip, _, source = _worker()
    whip.create(0.0, _params(WHIP_OFFER, peer="pub"), PeerMode.WHIP)
    whip.create(0.0, _params(WHEP_OFFER, peer="viewer"), PeerMode.WHEP)
    publisher = next(c for c in whip.table.conns.values() if not c.peer.outbound)
    viewer = next(c for c in whip.table.conns.values() if c.peer.outbound)
    publisher.on_connected(0.5)
    viewer.on_core_events(0.5)  # WHEP follows the room's new tracks
    video = next(o for o in viewer.peer.outbound.values() if o.video)
    assert video.local.source is not None, "the viewer is fed from the publisher's video"
    _events(source)
    video.packets, video.current = 10, 0
    runtime.scheduler.run_due(1.0)  # baseline: layer 0
    video.current = 2
    runtime.scheduler.run_due(2.0)
    runtime.scheduler.run_due(2.0 + LAYER_SETTLE)
    got = [b for s, b in _events(source) if s == viewer.key and isinstance(b, ev.LocalTrackLayer)]
    assert got == [ev.LocalTrackLayer(video.local.name, 2, 0)]
