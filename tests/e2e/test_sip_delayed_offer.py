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
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TrackmeshNode
from tests.e2e.sipp_scenarios import (
    PCMA,
    TELEPHONE_EVENT,
    check,
    pause,
    play_pcap,
    recv,
    request,
    response,
    scenario,
    sdp_audio,
)
from tests.e2e.test_sip_calls import SIPP_PCAPS, free_port, run_sipp, sip_calls

pytestmark = pytest.mark.e2e

_late = partial(request, user="late")


def _answer(version: int, direction: str) -> str:
    """sipp's answer in its ACK: PCMA of the node's offer, to the port sipp plays its pcap from."""
    return sdp_audio(PCMA, TELEPHONE_EVENT, version=version, port="[auto_media_port]", fmtp=["101 0-15"],
                     direction=direction)  # fmt: skip


# Our offer in the 200: opus/48000/2 first, then G.722, PCMU, PCMA, telephone-event at 48 and 8 kHz.
DELAYED_OFFER_SCENARIO = scenario(
    "delayed offer",
    _late("INVITE", cseq=1),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True, checks=[
        check("m=audio [0-9]+ RTP/AVP 111 9 0 8 110 101", "m1", search_in="body"),
        check("a=rtpmap:111 opus/48000/2", "opus", search_in="body"),
    ]),
    _late("ACK", cseq=1, in_dialog=True, sdp=_answer(1, "sendrecv")),
    play_pcap("pcap/g711a.pcap"),
    pause(2000),
    _late("INVITE", cseq=2, in_dialog=True),
    recv(response=100, optional=True),
    recv(response=200, checks=[
        check("m=audio [0-9]+ RTP/AVP 8 101", "m2", search_in="body"),
        check("a=sendrecv", "d2", search_in="body"),
    ]),
    _late("ACK", cseq=2, in_dialog=True, sdp=_answer(2, "sendonly")),
    pause(1500),
    _late("BYE", cseq=3, in_dialog=True),
    recv(response=200),
    references=["m1", "opus", "m2", "d2"],
)  # fmt: skip

# The ACK brings no answer: the node cannot start the call and ends it (RFC 3261 s13.2.1).
NO_ANSWER_SCENARIO = scenario(
    "delayed offer, no answer",
    request("INVITE", user="mute", cseq=1),
    recv(response=100, optional=True),
    recv(response=180, optional=True),
    recv(response=200, rrs=True),
    request("ACK", user="mute", cseq=1, in_dialog=True),
    recv(request="BYE", timeout=5000, checks=[check("no SDP answer in the ACK", "why")]),
    response("200 OK"),
    references=["why"],
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
