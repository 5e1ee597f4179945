"""Session limits before work (issue 17): node and per-token caps, and the connect deadline that
reaps sessions whose client never completes ICE and DTLS. Driven on a virtual clock: the worker's
transports and scheduler are sans-IO, no socket is opened."""

from __future__ import annotations

import pytest

from tests.transports.webrtc.peer_client import certificate, make_offer
from trackmesh.config import ConfigError, resolve
from trackmesh.rpc import RpcError
from trackmesh.runtime.admission import SessionAdmission
from trackmesh.runtime.sdk_worker import SdkTransport
from trackmesh.runtime.webrtc_worker import WebRtcTransport
from trackmesh.runtime.worker import WorkerRuntime
from trackmesh.transports.webrtc.ice.agent import generate_credentials
from trackmesh.transports.whip_whep.session import PeerMode

FINGERPRINT = certificate().fingerprint_sha256()


def runtime(**flags: str) -> tuple[WorkerRuntime, WebRtcTransport]:
    rt = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345", **flags}, {}), 0)
    rt.udp_port = 40000  # never bound: nothing is sent, the answer only names it
    return rt, WebRtcTransport(rt)


def create(t: WebRtcTransport, now: float, token_hash: str, mode: PeerMode = PeerMode.WHIP) -> str:
    creds = generate_credentials()
    offer = make_offer("publish" if mode is PeerMode.WHIP else "view", creds.ufrag, creds.pwd, FINGERPRINT)
    params = {"room": "r", "peer": None, "offer": offer, "token_hash": token_hash}
    return str(t.create(now, params, mode=mode)["conn_id"])


def test_one_token_holds_at_most_its_share() -> None:
    rt, t = runtime(max_sessions_per_token="3")
    for _ in range(3):
        create(t, 1.0, "token-a")
    with pytest.raises(RpcError) as refused:
        create(t, 1.0, "token-a", PeerMode.WHEP)
    assert refused.value.status == 503
    assert "--max-sessions-per-token" in refused.value.message
    assert rt.counters["sessions_refused_token_full"] == 1
    create(t, 1.0, "token-b")  # another token is not affected
    assert len(t.table.conns) == 4 and len(rt.core.endpoints) == 4  # the refusal created nothing
    # Closing one of token-a's sessions frees a slot for it.
    conn_id = next(iter(t.table.conns.values())).peer.endpoint.conn_id
    t.delete(2.0, {"conn_id": conn_id, "token_hash": "token-a"}, PeerMode.WHIP)
    create(t, 2.0, "token-a")


def test_the_node_refuses_past_max_sessions_with_a_reason() -> None:
    rt, t = runtime(max_sessions="5")
    for i in range(5):
        create(t, 1.0, f"token-{i}")
    with pytest.raises(RpcError) as refused:
        create(t, 1.0, "token-new")
    assert refused.value.status == 503 and "--max-sessions" in refused.value.message
    assert rt.counters["sessions_refused_node_full"] == 1
    assert t.stats()["admission"] == {"sessions": 5, "limit": 5, "per_token": 100, "tokens": 5}


def test_the_limit_is_shared_by_the_sdk_transport_and_split_between_workers() -> None:
    rt, t = runtime(max_sessions="10", workers="3")
    sdk = SdkTransport(rt)
    assert sdk.table.admission is t.table.admission is SessionAdmission.of(rt)
    assert t.table.admission.limit == 4  # ceil(10 / 3)


def test_sessions_that_never_connect_are_reaped_at_the_connect_deadline() -> None:
    rt, t = runtime(connect_timeout="5", max_sessions_per_token="1000")
    for _ in range(200):  # one token, 200 sessions whose client never sends a check
        create(t, 100.0, "token-a")
    assert len(t.table.conns) == 200
    assert rt.scheduler.next_deadline() == 105.0
    rt.scheduler.run_due(104.9)
    assert len(t.table.conns) == 200
    rt.scheduler.run_due(105.0)
    assert len(t.table.conns) == 0 and len(rt.core.endpoints) == 0 and len(rt.scheduler) == 0
    assert rt.counters["sessions_connect_timeout"] == 200
    assert rt.counters["webrtc_sessions_closed"] == 200
    assert t.table.admission.live == 0 and t.table.admission.by_token == {}
    # The client's DELETE after the reaping still gets its answer (a tombstone), not 404.
    assert len(t.tombstones) == 200


@pytest.mark.parametrize(
    ("flag", "value"),
    [("connect_timeout", "0"), ("max_sessions", "0"), ("max_sessions_per_token", "-1"), ("max_sessions", "x")],
)
def test_bad_limit_flags_are_refused_by_name(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match="--" + flag.replace("_", "-")):
        resolve("standalone", {"secret": "test-secret-12345", flag: value}, {})


def test_limit_flags_have_environment_variables() -> None:
    cfg = resolve("media", {"secret": "test-secret-12345"}, {"TRACKMESH_CONNECT_TIMEOUT": "7.5",
                                                        "TRACKMESH_MAX_SESSIONS": "42"})  # fmt: skip
    assert cfg.connect_timeout == 7.5 and cfg.max_sessions == 42 and cfg.max_sessions_per_token == 100
