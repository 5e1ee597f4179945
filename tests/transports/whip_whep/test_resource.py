"""WHIP/WHEP resource semantics (transports/whip_whep/resource.py), in memory: who may act on a
session (404/403), If-Match (412), trickle versus ICE restart, the new ETag of a restart, and the
tombstones that let a client DELETE a session that already ended on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.sdp.model import Candidate
from trackmesh.transports.whip_whep.resource import (
    IceRestart,
    Resource,
    ResourceError,
    Tombstones,
    authorize,
    ice_restart_answer,
)
from trackmesh.transports.whip_whep.sdpfrag import parse_sdpfrag

CANDIDATES_ONLY = (
    "a=ice-ufrag:cli1\r\na=ice-pwd:clientpassword0000000001\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    "a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n"
)
RESTART = "a=ice-ufrag:cli2\r\na=ice-pwd:clientpassword0000000002\r\n"


def _resource(kind: str = "whip") -> Resource:
    return Resource(kind, "hash-a", "cli1", "clientpassword0000000001", etag="e1")


def _status(fn: Callable[..., object], *args: object) -> int:
    with pytest.raises(ResourceError) as info:
        fn(*args)
    return info.value.status


def test_authorize_unknown_other_kind_and_other_token() -> None:
    res = _resource("whip")
    assert authorize(res, "whip", "hash-a") is res
    assert _status(authorize, None, "whip", "hash-a") == 404
    assert _status(authorize, res, "whep", "hash-a") == 404  # a WHEP URL never reaches a WHIP session
    assert _status(authorize, res, "whip", "hash-b") == 403


def test_patch_with_candidates_of_the_current_generation_needs_nothing() -> None:
    res = _resource()
    assert res.patch(CANDIDATES_ONLY, None) is None
    assert res.patch(CANDIDATES_ONLY, "e1") is None
    assert res.etag == "e1"


def test_patch_if_match_of_another_etag_is_412_before_the_body_is_read() -> None:
    res = _resource()
    assert _status(res.patch, "not a fragment", "stale") == 412
    assert _status(res.patch, "not a fragment", None) == 400


def test_ice_restart_then_a_new_etag_and_the_new_credentials_are_current() -> None:
    res = _resource()
    restart = res.patch(RESTART, "e1")
    assert restart == IceRestart("cli2", "clientpassword0000000002")
    assert res.etag == "e1"  # nothing changes until the agent restarted
    assert res.restarted(restart, "e2") == "e2"
    assert (res.remote_ufrag, res.remote_pwd, res.etag) == ("cli2", "clientpassword0000000002", "e2")
    assert _status(res.patch, RESTART, "e1") == 412  # the old ETag is stale now
    assert res.patch(RESTART, "e2") is None  # the same credentials again: no new generation
    assert res.restarted(IceRestart("cli3", "clientpassword0000000003")) not in ("e1", "e2")  # random by default


def test_ice_restart_answer_carries_new_credentials_and_our_candidate_in_the_first_section() -> None:
    cand = Candidate("1", 1, "udp", 2130706431, "127.0.0.1", 40000, "host")
    text = ice_restart_answer("srv2", "serverpassword0000000002", cand, ("1", "video"))
    frag = parse_sdpfrag(text)
    assert frag.credentials() == ("srv2", "serverpassword0000000002")
    assert frag.media[0].mid == "1" and frag.media[0].kind == "video"
    [(mid, got)] = frag.candidates()
    assert mid == "1" and (got.address, got.port) == ("127.0.0.1", 40000)
    assert frag.complete
    assert parse_sdpfrag(ice_restart_answer("srv3", "p" * 22, cand, None)).media[0].mid == "0"


def test_tombstone_answers_one_delete_of_its_kind_with_its_token_within_the_ttl() -> None:
    graves = Tombstones(ttl=120.0)
    graves.bury("c1", _resource("whep"), now=10.0)
    assert not graves.claim("c1", "whip", "hash-a", now=11.0)  # other kind: not this one
    assert _status(graves.claim, "c1", "whep", "hash-b", 11.0) == 403
    assert graves.claim("c1", "whep", "hash-a", now=11.0)
    assert not graves.claim("c1", "whep", "hash-a", now=12.0)  # used up
    graves.bury("c2", _resource("whep"), now=10.0)
    assert not graves.claim("c2", "whep", "hash-a", now=130.0)  # expired
    assert not graves.claim("never", "whep", "hash-a", now=11.0)


def test_tombstones_drop_expired_ones_above_the_limit() -> None:
    graves = Tombstones(ttl=1.0, limit=3)
    for i in range(4):
        graves.bury(f"old{i}", _resource(), now=0.0)
    graves.bury("new", _resource(), now=5.0)
    assert len(graves) == 1
    assert graves.claim("new", "whip", "hash-a", now=5.5)


def test_expired_tombstones_go_long_before_the_limit_and_the_limit_evicts_the_oldest() -> None:
    graves = Tombstones(ttl=120.0, limit=10_000)
    for i in range(500):  # one ending a second for 500 s: only the last 120 s are remembered
        graves.bury(f"c{i}", _resource(), now=float(i))
    assert len(graves) == 120  # c380..c499; c379 expired at 499.0
    assert not graves.claim("c379", "whip", "hash-a", now=499.0)
    assert graves.claim("c380", "whip", "hash-a", now=499.0)
    full = Tombstones(ttl=120.0, limit=3)
    for i in range(5):  # a burst inside the TTL: memory stays at the limit, the oldest go first
        full.bury(f"b{i}", _resource(), now=1.0)
    assert len(full) == 3
    assert not full.claim("b1", "whip", "hash-a", now=2.0)
    assert full.claim("b4", "whip", "hash-a", now=2.0)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=20)))
def test_any_patch_body_is_judged_or_refused_with_a_status(body: str, if_match: str | None) -> None:
    res = _resource()
    try:
        out = res.patch(body, if_match)
    except ResourceError as exc:
        assert exc.status in (400, 412)
    else:
        assert out is None or isinstance(out, IceRestart)
