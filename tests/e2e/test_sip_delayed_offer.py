"""Delayed offers with a real client (sipp), RFC 3261 s13.2.1 and RFC 3264:

- sipp INVITEs without SDP: the node's 200 carries its offer (Opus, G.722, PCMU, PCMA and
  telephone-event, in that order), sipp's ACK carries the answer (PCMA), and the call joins the room
  with PCMA: sipp's pcap arrives (RTP in, Opus into the room) and the node sends RTP to the port of
  the ACK's answer. Then a re-INVITE without SDP: the node offers the call's codec (sendrecv), sipp's
  ACK answers ``a=sendonly`` (it holds) and the node's side of the call becomes ``recvonly``. sipp's
  BYE ends it.
- sipp INVITEs without SDP and ACKs without an answer: the node ends the call with BYE.

Loopback only, inside the private network namespace (scripts/test.sh); sipp always gets -timeout.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.test_sip_calls import SIPP_PCAPS, free_port, run_sipp, sip_calls

pytestmark = pytest.mark.e2e

_INVITE = """  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="100" optional="true"/>
"""

_ACK = """  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
{body}]]></send>
"""

_ANSWER = """Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 {version} IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [auto_media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a={direction}
"""

# Our offer in the 200: opus/48000/2 first, then G.722, PCMU, PCMA, telephone-event at 48 and 8 kHz.
DELAYED_OFFER_SCENARIO = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="delayed offer">\n'
    + _INVITE.format(user="late", to_tag="", cseq=1)
    + """  <recv response="180" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 111 9 0 8 110 101" search_in="body" check_it="true" assign_to="m1"/>
      <ereg regexp="a=rtpmap:111 opus/48000/2" search_in="body" check_it="true" assign_to="opus"/>
    </action>
  </recv>
"""
    + _ACK.format(user="late", cseq=1, body=_ANSWER.format(version=1, direction="sendrecv"))
    + """  <nop><action><exec play_pcap_audio="pcap/g711a.pcap"/></action></nop>
  <pause milliseconds="2000"/>
"""
    + _INVITE.format(user="late", to_tag="[peer_tag_param]", cseq=2)
    + """  <recv response="200">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 8 101" search_in="body" check_it="true" assign_to="m2"/>
      <ereg regexp="a=sendrecv" search_in="body" check_it="true" assign_to="d2"/>
    </action>
  </recv>
"""
    + _ACK.format(user="late", cseq=2, body=_ANSWER.format(version=2, direction="sendonly"))
    + """  <pause milliseconds="1500"/>
  <send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:late@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 3 BYE
Contact: <sip:late@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0
]]></send>
  <recv response="200"/>
  <Reference variables="m1,opus,m2,d2"/>
</scenario>
"""
)

# The ACK brings no answer: the node cannot start the call and ends it (RFC 3261 s13.2.1).
NO_ANSWER_SCENARIO = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="delayed offer, no answer">\n'
    + _INVITE.format(user="mute", to_tag="", cseq=1)
    + """  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
"""
    + _ACK.format(user="mute", cseq=1, body="Content-Length: 0\n")
    + """  <recv request="BYE" timeout="5000">
    <action>
      <ereg regexp="no SDP answer in the ACK" search_in="msg" check_it="true" assign_to="why"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
  <Reference variables="why"/>
</scenario>
"""
)


@pytest.fixture(scope="module")
def delayed_node(netns_guard: None) -> Iterator[tuple[TrackmeshNode, int]]:
    if shutil.which("sipp") is None:
        pytest.fail("sipp is missing: scripts/test.sh installs sip-tester (scripts/system-packages.txt)")
    port = free_port()
    node = TrackmeshNode("--sip-port", str(port), "--sip-rtp-ports", "42200-42249")
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


def wait_for_no_calls(node: TrackmeshNode) -> None:
    deadline = time.monotonic() + 10
    while sip_calls(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sip_calls(node) == []


def test_a_delayed_offer_call_takes_its_codec_from_the_ack_and_media_flows(
    delayed_node: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    node, sip_port = delayed_node
    room = "sip-delayed-room"
    (tmp_path / "delayed.xml").write_text(DELAYED_OFFER_SCENARIO)
    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)
    before = sip_stats(node)
    during: list[dict[str, Any]] = []
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_sipp, tmp_path, sip_port, "-sf", "delayed.xml", "-s", node.token("sip", room))
        while not run.done():  # the call as the node reports it, while it lasts
            during += sip_calls(node)
            time.sleep(0.2)
        rc, out = run.result()
    assert rc == 0, out  # every check_it matched: our offer's order, then our re-offer of PCMA, sendrecv
    assert during, "the call never showed up in /api/sip/calls"
    assert {(c["room"], c["peer"], c["codec"]) for c in during} == {(room, "sip-late", "PCMA")}, during
    # Held by sipp's second ACK (it only sends): our side receives only.
    assert [c["direction"] for c in during][:1] == ["sendrecv"], during
    assert any(c["direction"] == "recvonly" for c in during), during
    most = max(during, key=lambda c: c["rtp_in"] + c["rtp_out"])
    assert most["rtp_in"] > 20 and most["uplink_packets"] > 20, most  # sipp's PCMA, as Opus into the room
    assert most["rtp_out"] > 20, most  # toward the port of the ACK's answer
    wait_for_no_calls(node)  # sipp's BYE ended it
    after = sip_stats(node)
    assert after["delayed_offers"] == before["delayed_offers"] + 1, after
    assert after["ended_by_phone"] == before["ended_by_phone"] + 1, after
    assert after["ack_without_answer"] == before["ack_without_answer"], after


def test_a_delayed_offer_whose_ack_has_no_answer_is_ended_with_bye(
    delayed_node: tuple[TrackmeshNode, int], tmp_path: Path
) -> None:
    node, sip_port = delayed_node
    (tmp_path / "mute.xml").write_text(NO_ANSWER_SCENARIO)
    before = sip_stats(node)
    rc, out = run_sipp(tmp_path, sip_port, "-sf", "mute.xml", "-s", node.token("sip", "sip-delayed-mute"))
    assert rc == 0, out  # the node's BYE came, with its reason
    wait_for_no_calls(node)
    after = sip_stats(node)
    assert after["ack_without_answer"] == before["ack_without_answer"] + 1, after
    assert after["ended_by_us"] == before["ended_by_us"] + 1, after
