"""RFC 4028 session timers with a real client (sipp), on a node whose Min-SE is lowered to 2 s
(``--dev --sip-min-se 2``: production keeps RFC 4028's floor of 90 s, docs/sip.md) so an interval
of a few seconds is agreed:

- sipp asks ``refresher=uas``: the node refreshes at half the interval (UPDATE when sipp allows
  it, else a re-INVITE it ACKs), sipp answers each refresh, and the call outlives the interval
  (sipp's BYE gets 200, not 481).
- sipp takes ``refresher=uac`` and then never refreshes (it vanished), or ``refresher=uas`` and
  never answers the node's refresh: the node's timer ends the call with a BYE toward it, and the
  caller's peer leaves the room.

Loopback only, inside the private network namespace (scripts/test.sh); sipp always gets -timeout.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.sipp_scenarios import PCMU, TELEPHONE_EVENT, check, recv, request, response, scenario, sdp_audio
from tests.e2e.test_sip_calls import free_port, run_sipp, sip_calls

pytestmark = pytest.mark.e2e

MIN_SE = 2


def _call(user: str, expires: int, refresher: str, allow: str) -> list[str]:
    """An INVITE asking for a session timer (RFC 4028 s7.1) and its ACK; the 200 must agree."""
    return [
        request("INVITE", user=user, cseq=1,
                headers=[f"Allow: {allow}", "Supported: timer", f"Session-Expires: {expires};refresher={refresher}"],
                sdp=sdp_audio(PCMU, TELEPHONE_EVENT, direction="sendrecv")),
        recv(response=100, optional=True),
        recv(response=180, optional=True),
        recv(response=200, rrs=True, checks=[check(f"Session-Expires: {expires};refresher={refresher}", "se")]),
        request("ACK", user=user, cseq=1, in_dialog=True),
    ]  # fmt: skip


def _answer_refresh(method: str, var: str, timeout: int = 4000, expires: int = 4) -> list[str]:
    """The node's refresh (RFC 4028 s9), answered 200. Without UPDATE in the caller's Allow the
    refresh is a re-INVITE with the node's SDP: sipp answers 200 with its own, and the node ACKs it
    (RFC 3261 s13.2.2.4)."""
    reinvite = method == "INVITE"
    return [
        recv(request=method, timeout=timeout, checks=[check(f"Session-Expires: {expires};refresher=uas", var)]),
        response("200 OK", headers=["Contact: <sip:refreshed@[local_ip]:[local_port]>",
                                    f"Session-Expires: {expires};refresher=uas", "Require: timer"],
                 sdp=sdp_audio(PCMU, TELEPHONE_EVENT, version=2353687638, direction="sendrecv") if reinvite else None),
        *([recv(request="ACK")] if reinvite else []),
    ]  # fmt: skip


def refreshed_scenario(method: str) -> str:
    """refresher=uas: two refreshes answered (at ~2 s and ~4 s, past the 4 s interval), then our
    BYE: its 200 (not 481) says the node still holds the call."""
    allow = "INVITE, ACK, BYE, CANCEL, OPTIONS" + (", UPDATE" if method == "UPDATE" else "")
    return scenario(
        "session refreshed by the uas",
        *_call("refreshed", 4, "uas", allow),
        *_answer_refresh(method, "r1"),
        *_answer_refresh(method, "r2"),
        request("BYE", user="refreshed", cseq=2, in_dialog=True),
        recv(response=200),
        references=["se", "r1", "r2"],
    )


# refresher=uac and then silence: no refresh, no answer. The node's BYE (RFC 4028 s10: at the
# interval minus min(32, interval/3), so ~2 s for 3 s) is the last thing sipp waits for; it never
# answers it (gone), so the node's BYE transaction just times out.
VANISHED_SCENARIO = scenario(
    "caller vanishes",
    *_call("vanished", 3, "uac", "INVITE, ACK, BYE"),
    recv(request="BYE", timeout=6000, checks=[check("session timer expired", "why")]),
    references=["se", "why"],
)

# refresher=uas and then silence: the node's UPDATE at ~2 s is never answered, so when the next
# refresh is due (~4 s, the session's expiry) the node ends the call with BYE (RFC 4028 s10). Over
# TCP, where the unanswered UPDATE is not retransmitted at sipp (which would abort on it).
UNANSWERED_SCENARIO = scenario(
    "refresh unanswered",
    *_call("silent", 4, "uas", "INVITE, ACK, BYE, UPDATE"),
    recv(request="UPDATE", timeout=4000),
    recv(request="BYE", timeout=6000, checks=[check("session refresh unanswered", "why")]),
    references=["se", "why"],
)


@pytest.fixture(scope="module")
def timer_node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    port = free_port()
    node = TrackmeshNode("--dev", "--sip-min-se", str(MIN_SE), "--sip-port", str(port),
                         "--sip-rtp-ports", "42100-42149")  # fmt: skip
    try:
        yield node, port
    finally:
        rc = node.stop()
        tail = node.log_tail(200)
        assert "Traceback" not in "\n".join(node.lines), tail
        assert rc == 0, f"trackmesh exited {rc}:\n{tail}"


def sip_stats(node: TrackmeshNode) -> dict[str, int]:
    status, body = node.proc.json("GET", "/api/sip/calls", token=node.secret)
    assert status == 200, body
    return dict(body["data"]["sip"])


def rooms_with_peers(node: TrackmeshNode) -> int:
    """Rooms with a peer on the node (GET /api/node/info, summed over its workers)."""
    return sum(int(w["rooms"]) for w in node.info()["workers"])


@pytest.mark.parametrize("method", ["UPDATE", "INVITE"])
def test_the_node_refreshes_the_session_and_the_call_stays_up(
    timer_node: tuple[TrackmeshNode, int], tmp_path: Path, method: str
) -> None:
    node, sip_port = timer_node
    before = sip_stats(node)
    (tmp_path / "refreshed.xml").write_text(refreshed_scenario(method))
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "refreshed.xml", "-s", node.token("sip", "sip-timer-refreshed"))
    assert rc == 0, out  # 200 with refresher=uas, two refreshes with Session-Expires, our BYE answered 200
    after = sip_stats(node)
    assert after["ended_by_phone"] == before["ended_by_phone"] + 1, after  # sipp's BYE, not a timer
    assert after["session_timer_expired"] == before["session_timer_expired"], after
    assert after["ended_by_us"] == before["ended_by_us"], after


@pytest.mark.parametrize(
    ("scenario", "peer", "transport", "earliest"),
    [(VANISHED_SCENARIO, "sip-vanished", "u1", 1.5), (UNANSWERED_SCENARIO, "sip-silent", "t1", 3.5)],
    ids=["refresher-uac-stops-refreshing", "refresher-uas-refresh-unanswered"],
)
def test_a_vanished_caller_is_ended_by_the_session_timer(
    timer_node: tuple[TrackmeshNode, int], tmp_path: Path, scenario: str, peer: str, transport: str, earliest: float
) -> None:
    node, sip_port = timer_node
    room = f"sip-timer-{peer}"
    before = sip_stats(node)
    (tmp_path / "vanished.xml").write_text(scenario)
    started = time.monotonic()
    sipp = ThreadPoolExecutor(1)
    run = sipp.submit(
        run_sipp, tmp_path, sip_port, "-sf", "vanished.xml", "-s", node.token("sip", room), "-t", transport
    )
    during: list[tuple[list[str], int]] = []
    while not run.done():  # the call and its room, as the node reports them while it lasts
        during.append(([c["peer"] for c in sip_calls(node)], rooms_with_peers(node)))
        time.sleep(0.2)
    rc, out = run.result()
    sipp.shutdown()
    took = time.monotonic() - started
    assert rc == 0, out  # the node's BYE arrived, with its reason
    assert took >= earliest, took  # not at once: when the interval ran out (s10)
    assert ([peer], 1) in during, during  # the caller was a peer of the room
    after = sip_stats(node)
    assert after["session_timer_expired"] == before["session_timer_expired"] + 1, after
    assert after["ended_by_us"] == before["ended_by_us"] + 1, after
    deadline = time.monotonic() + 3
    while (sip_calls(node) or rooms_with_peers(node)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sip_calls(node) == [] and rooms_with_peers(node) == 0  # the call and its peer left the room
