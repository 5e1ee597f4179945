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
from tests.e2e.test_sip_calls import free_port, run_sipp, sip_calls

pytestmark = pytest.mark.e2e

MIN_SE = 2

_INVITE = """  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Allow: {allow}
Supported: timer
Session-Expires: {expires};refresher={refresher}
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp="Session-Expires: {expires};refresher={refresher}" search_in="msg" check_it="true" assign_to="se"/>
    </action>
  </recv>
  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
"""

_ANSWER_UPDATE = """  <recv request="UPDATE" timeout="{timeout}">
    <action>
      <ereg regexp="Session-Expires: {expires};refresher=uas" search_in="msg" check_it="true" assign_to="{var}"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:refreshed@[local_ip]:[local_port]>
Session-Expires: {expires};refresher=uas
Require: timer
Content-Length: 0
]]></send>
"""

# Without UPDATE in the caller's Allow the refresh is a re-INVITE with the node's SDP: sipp
# answers 200 with its own, and the node ACKs it (RFC 3261 s13.2.2.4).
_ANSWER_REINVITE = """  <recv request="INVITE" timeout="{timeout}">
    <action>
      <ereg regexp="Session-Expires: {expires};refresher=uas" search_in="msg" check_it="true" assign_to="{var}"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:refreshed@[local_ip]:[local_port]>
Session-Expires: {expires};refresher=uas
Require: timer
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687638 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv
]]></send>
  <recv request="ACK"/>
"""


def refreshed_scenario(method: str) -> str:
    """refresher=uas: two refreshes answered (at ~2 s and ~4 s, past the 4 s interval), then our
    BYE: its 200 (not 481) says the node still holds the call."""
    allow = "INVITE, ACK, BYE, CANCEL, OPTIONS" + (", UPDATE" if method == "UPDATE" else "")
    answer = _ANSWER_UPDATE if method == "UPDATE" else _ANSWER_REINVITE
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="session refreshed by the uas">\n'
        + _INVITE.format(user="refreshed", expires=4, refresher="uas", allow=allow)
        + answer.format(timeout=4000, expires=4, var="r1")
        + answer.format(timeout=4000, expires=4, var="r2")
        + """  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:refreshed@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:refreshed@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <Reference variables="se,r1,r2"/>
</scenario>
"""
    )


# refresher=uac and then silence: no refresh, no answer. The node's BYE (RFC 4028 s10: at the
# interval minus min(32, interval/3), so ~2 s for 3 s) is the last thing sipp waits for; it never
# answers it (gone), so the node's BYE transaction just times out.
VANISHED_SCENARIO = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="caller vanishes">\n'
    + _INVITE.format(user="vanished", expires=3, refresher="uac", allow="INVITE, ACK, BYE")
    + """  <recv request="BYE" timeout="6000">
    <action>
      <ereg regexp="session timer expired" search_in="msg" check_it="true" assign_to="why"/>
    </action>
  </recv>
  <Reference variables="se,why"/>
</scenario>
"""
)

# refresher=uas and then silence: the node's UPDATE at ~2 s is never answered, so when the next
# refresh is due (~4 s, the session's expiry) the node ends the call with BYE (RFC 4028 s10). Over
# TCP, where the unanswered UPDATE is not retransmitted at sipp (which would abort on it).
UNANSWERED_SCENARIO = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="refresh unanswered">\n'
    + _INVITE.format(user="silent", expires=4, refresher="uas", allow="INVITE, ACK, BYE, UPDATE")
    + """  <recv request="UPDATE" timeout="4000"/>
  <recv request="BYE" timeout="6000">
    <action>
      <ereg regexp="session refresh unanswered" search_in="msg" check_it="true" assign_to="why"/>
    </action>
  </recv>
  <Reference variables="se,why"/>
</scenario>
"""
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
