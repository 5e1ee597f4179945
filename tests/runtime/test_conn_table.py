"""The worker's connection tables (runtime/conn_table.py) under both WebRTC transports, in memory (no socket):
attach and routes, WHIP/WHEP resource calls through the table, the drain path and the ordered close."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.transports.sdk.test_renegotiation import ALICE0, offer, tracks
from trackmesh.config import resolve
from trackmesh.connector.source import EventSource
from trackmesh.rpc import RpcError
from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.transports.sdk.protocol import gateway_pb2
from trackmesh.transports.webrtc.demux import SharedPortDemux
from trackmesh.transports.webrtc.ice import stun
from trackmesh.transports.whip_whep.session import PeerMode

FIXTURES = Path(__file__).parents[1] / "sdp" / "fixtures"
WHIP_OFFER = (FIXTURES / "chrome_whip_simulcast.sdp").read_text()
K = TypeVar("K")
RESTART = "a=ice-ufrag:new1\r\na=ice-pwd:newclientpassword0000001\r\n"


def _routed(demux: SharedPortDemux[K], ufrag: str) -> K | None:
    """Where the shared port sends a client's ICE check for our ``ufrag``."""
    check = stun.build_message(
        stun.METHOD_BINDING, stun.StunClass.REQUEST, stun.new_transaction_id(),
        [(stun.ATTR_USERNAME, f"{ufrag}:client".encode())],
    )  # fmt: skip
    routed = demux.route(check, ("127.0.0.1", 50000))
    return None if routed is None else routed[0]


def _worker() -> tuple[WorkerRuntime, WebRtcTransport, SdkTransport]:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    runtime.udp_port = 40000  # not started: no socket, but answers need a port
    return runtime, WebRtcTransport(runtime), SdkTransport(runtime)


def _whip(t: WebRtcTransport, now: float, token_hash: str = "h1") -> dict[str, str]:
    out = t.create(now, {"offer": WHIP_OFFER, "room": "r1", "peer": "pub", "token_hash": token_hash}, PeerMode.WHIP)
    return {k: str(v) for k, v in out.items()}


def _status(fn: Callable[..., object], *args: object, **kw: object) -> int:
    with pytest.raises(RpcError) as info:
        fn(*args, **kw)
    return info.value.status


def test_whip_session_lives_in_the_table_and_its_resource_calls_go_through_it() -> None:
    runtime, whip, _ = _worker()
    made = _whip(whip, 1.0)
    [session] = whip.table.conns.values()
    assert whip.table.lookup(made["conn_id"]) is session and len(whip.table) == 1
    assert runtime.counters["webrtc_sessions_created"] == 1
    assert _routed(whip.demux, session.ufrags[0]) == session.key  # routed on the shared port
    base = {"conn_id": made["conn_id"], "token_hash": "h1"}
    # 404 from the WHEP side, 403 with another token, 412 with a stale ETag.
    assert _status(whip.patch, 2.0, {**base, "frag": RESTART}, mode=PeerMode.WHEP) == 404
    assert _status(whip.patch, 2.0, {**base, "token_hash": "h2", "frag": RESTART}, mode=PeerMode.WHIP) == 403
    assert _status(whip.patch, 2.0, {**base, "frag": RESTART, "if_match": "stale"}, mode=PeerMode.WHIP) == 412
    # An ICE restart: a new local ufrag routed to the same session, a new ETag.
    out = whip.patch(2.0, {**base, "frag": RESTART, "if_match": made["etag"]}, mode=PeerMode.WHIP)
    assert out["etag"] != made["etag"] and "a=ice-ufrag:" in out["sdpfrag"]
    assert len(session.ufrags) == 2 and _routed(whip.demux, session.ufrags[1]) == session.key
    assert session.peer.ice.local_credentials.ufrag == session.ufrags[1]
    # DELETE with the session's token closes it; it is gone from the table and the port.
    whip.delete(3.0, base, mode=PeerMode.WHIP)
    assert whip.table.lookup(made["conn_id"]) is None and len(whip.table) == 0
    assert _routed(whip.demux, session.ufrags[0]) is None
    assert runtime.counters["webrtc_sessions_closed"] == 1
    assert _status(whip.delete, 4.0, base, mode=PeerMode.WHIP) == 404  # deleted by the client: no tombstone


def test_a_session_that_ended_on_its_own_can_still_be_deleted_once() -> None:
    _, whip, _ = _worker()
    made = _whip(whip, 1.0)
    [session] = whip.table.conns.values()
    whip.table.close(2.0, session, "consent expired")
    whip.table.close(2.5, session, "again")  # closing twice is a no-op
    base = {"conn_id": made["conn_id"], "token_hash": "h1"}
    assert _status(whip.delete, 3.0, {**base, "token_hash": "h2"}, mode=PeerMode.WHIP) == 403
    assert _status(whip.delete, 3.0, base, mode=PeerMode.WHEP) == 404
    whip.delete(3.0, base, mode=PeerMode.WHIP)
    assert _status(whip.delete, 3.5, base, mode=PeerMode.WHIP) == 404


def test_drain_tells_sdk_clients_only_and_shutdown_closes_every_connection() -> None:
    runtime, whip, sdk = _worker()
    _whip(whip, 1.0)
    req = gateway_pb2.ConnectRequest(sdp=offer(ALICE0), tracks=tracks([("camera", "video", True)], []))
    out = sdk.connect(1.0, {"request": req.SerializeToString(), "token_hash": "s1"})
    assert out["response"] and len(sdk.table) == 1 and runtime.counters["sdk_sessions_created"] == 1
    [conn] = sdk.table.conns.values()
    # The drain path: every transport is asked, WHIP/WHEP has no goaway, the SDK connection is told and stays.
    assert runtime.drain(2.0, "node draining", 30) == 1
    assert not conn.closing and len(sdk.table) == 1 and len(whip.table) == 1
    runtime.shutdown("node stopping")
    assert len(sdk.table) == 0 and len(whip.table) == 0 and conn.closing
    assert runtime.counters["sdk_sessions_closed"] == 1 and runtime.counters["webrtc_sessions_closed"] == 1
    assert runtime.drain(3.0, "node draining", 30) == 0



def _funnel(source: EventSource) -> list[tuple[int, str, str]]:
    """(session, event name, app) of every event the connector's source recorded, in order."""
    return [(e.session_id or 0, e.name, e.app) for e in source.take(10_000)]


def test_both_transports_report_their_sessions_to_the_connector_through_the_table() -> None:
    runtime, whip, sdk = _worker()
    runtime.core.audit = source = EventSource(1, 7, 0.0)
    made = whip.create(1.0, {"offer": WHIP_OFFER, "room": "r1", "peer": "pub", "token_hash": "h1",
                             "remote_ip": "127.0.0.9", "app": "acme"}, PeerMode.WHIP)  # fmt: skip
    [session] = whip.table.conns.values()
    req = gateway_pb2.ConnectRequest(sdp=offer(ALICE0), tracks=tracks([("camera", "video", True)], []))
    sdk.connect(1.0, {"request": req.SerializeToString(), "token_hash": "s1", "app": "acme"})
    [conn] = sdk.table.conns.values()
    whip.delete(2.0, {"conn_id": made["conn_id"], "token_hash": "h1"}, mode=PeerMode.WHIP)
    runtime.shutdown("node stopping")
    events = _funnel(source)
    # Connecting before the Join (the table makes the endpoint, then it joins), Disconnected after
    # the Leave, once per session and under the token's app, for WHIP/WHEP and the SDK alike.
    assert [name for key, name, _ in events if key == session.key] == ["Connecting", "Join", "Leave", "Disconnected"]
    assert [name for key, name, _ in events if key == conn.key] == ["Connecting", "Disconnected"]
    assert {app for _, _, app in events} == {"acme"}


def test_a_session_whose_setup_fails_is_closed_in_the_connectors_log() -> None:
    runtime, _, sdk = _worker()
    runtime.core.audit = source = EventSource(1, 7, 0.0)
    # A join the token's claims allow but the room refuses (a bad peer name): the table's abort.
    req = gateway_pb2.ConnectRequest(sdp=offer(ALICE0), tracks=tracks([("camera", "video", True)], []))
    req.join.room, req.join.peer = "r1", "bad\x00peer"
    assert _status(sdk.connect, 1.0, {"request": req.SerializeToString(), "token_hash": "s1"}) == 400
    names = [name for _, name, _ in _funnel(source)]
    assert names == ["Connecting", "Disconnected"] and len(sdk.table) == 0 and not runtime.core.endpoints
