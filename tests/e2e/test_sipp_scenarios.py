"""The sipp scenarios of the SIP end-to-end tests, as text (no sipp): well-formed XML, and messages
as sipp expects them (tests/e2e/sipp_scenarios.py builds them)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from tests.e2e import (
    test_sip_calls,
    test_sip_cluster,
    test_sip_delayed_offer,
    test_sip_kamailio,
    test_sip_session_timers,
)
from tests.e2e.sipp_scenarios import (
    PCMA,
    TELEPHONE_EVENT,
    check,
    pause,
    recv,
    register,
    request,
    response,
    scenario,
    sdp_audio,
)

SCENARIOS = {
    "hold": test_sip_calls.HOLD_SCENARIO,
    "prack": test_sip_calls.PRACK_SCENARIO,
    "cancel": test_sip_calls.CANCEL_SCENARIO,
    "digest": test_sip_calls.DIGEST_SCENARIO,
    "digest-invite": test_sip_calls.DIGEST_INVITE_SCENARIO,
    "register-alice": test_sip_calls.register_scenario("alice", "127.0.0.1:5099"),
    "no-token": test_sip_calls.NO_TOKEN_SCENARIO,
    "uas-prack": test_sip_calls.UAS_PRACK_SCENARIO,
    "delayed-offer": test_sip_delayed_offer.DELAYED_OFFER_SCENARIO,
    "delayed-no-answer": test_sip_delayed_offer.NO_ANSWER_SCENARIO,
    "refreshed-update": test_sip_session_timers.refreshed_scenario("UPDATE"),
    "refreshed-invite": test_sip_session_timers.refreshed_scenario("INVITE"),
    "vanished": test_sip_session_timers.VANISHED_SCENARIO,
    "unanswered": test_sip_session_timers.UNANSWERED_SCENARIO,
    "proxied-pcap": test_sip_cluster.PROXIED_PCAP,
    "hung-up-by-the-room": test_sip_cluster.HUNG_UP_BY_THE_ROOM,
    "register-gateway": test_sip_cluster.register_scenario("127.0.0.1:5099"),
    "register-bob": test_sip_kamailio.register_bob(5099),
    "call-via-proxy": test_sip_kamailio.CALL_VIA_PROXY,
}

ELEMENTS = {"send", "recv", "pause", "nop", "action", "exec", "ereg", "Reference"}
#: The headers every request starts with, in this order (after an optional [routes] below Via).
DIALOG = ("Via:", "From:", "To:", "Call-ID:", "CSeq:")
ECHOED = ("[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]", "[last_CSeq:]")


def messages(root: ET.Element) -> list[tuple[dict[str, str], str]]:
    return [(el.attrib, el.text or "") for el in root.iter("send")]


def check_message(attrib: dict[str, str], text: str) -> None:
    """One <send>'s text: the first line, the dialog's headers in order, the body's headers last."""
    assert "\r" not in text  # sipp turns each \n into CRLF itself
    assert text.startswith("\n") and text.endswith("\n") and not text.endswith("\n\n"), repr(text[-40:])
    head, _, body = text[1:].partition("\n\n")
    lines = head.removesuffix("\n").split("\n")
    first = lines[0]
    if first.startswith("SIP/2.0 "):
        assert re.fullmatch(r"SIP/2\.0 [1-6]\d\d [A-Za-z ]+", first), first
        # The request's dialog headers, echoed (RFC 3261 s8.2.6.2): sipp's [last_*] or kept [$variables].
        echoed = [h.split(":")[0].strip("[").removeprefix("last_") for h in lines[1:6]]
        assert echoed == ["Via", "From", "To", "Call-ID", "CSeq"], lines
    else:
        method, uri, version = first.split(" ")
        assert method.isupper() and version == "SIP/2.0", first
        assert uri.startswith("sip:") or uri == "[next_url]", first
        headers = [line for line in lines[1:] if line != "[routes]"]
        assert [h.split(" ")[0] for h in headers[:5]] == list(DIALOG), headers
        assert headers[0].startswith("Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch"), headers[0]
        assert headers[4].endswith(f" {method}"), headers[4]  # CSeq names the method (RFC 3261 s8.1.1.5)
        assert "Max-Forwards: 70" in headers
        assert ("[routes]" in lines) == (uri == "[next_url]")  # along the route set, or not at all
        if method == "ACK":
            assert "retrans" not in attrib  # an ACK is not retransmitted by itself (s17.1.1.3)
    if body:
        assert lines[-2:] == ["Content-Type: application/sdp", "Content-Length: [len]"], lines
        assert body.startswith("v=0\no=user1 ") and "\nm=audio " in body and body.endswith("\n"), body
    else:
        assert lines[-1] == "Content-Length: 0" and "[len]" not in text, lines


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_is_well_formed_xml_that_sipp_takes(name: str) -> None:
    text = SCENARIOS[name]
    assert text.startswith('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="')
    root = ET.fromstring(text.encode("iso-8859-1"))
    assert root.tag == "scenario" and root.attrib["name"]
    assert {el.tag for el in root.iter()} - {"scenario"} <= ELEMENTS
    sends = messages(root)
    assert sends
    for attrib, body in sends:
        check_message(attrib, body)
    # sipp refuses a variable that is assigned and never used: each check's is referenced or sent.
    assigned = {el.attrib["assign_to"] for el in root.iter("ereg")}
    references = {v for el in root.iter("Reference") for v in el.attrib["variables"].split(",")}
    sent = set(re.findall(r"\[\$(\w+)\]", "".join(body for _, body in sends)))
    assert assigned == references | sent, (assigned, references, sent)
    for ereg in root.iter("ereg"):
        assert ereg.attrib["check_it"] == "true"
        re.compile(ereg.attrib["regexp"])


def test_a_request_says_its_method_in_the_first_line_and_cseq_and_its_options_in_order() -> None:
    text = request(
        "INVITE", user="alice", cseq=2, in_dialog=True, headers=["Supported: timer"],
        sdp=sdp_audio(PCMA, TELEPHONE_EVENT, version=7, fmtp=["101 0-15"], direction="sendonly"), start_txn="inv",
    )  # fmt: skip
    assert text == (
        '  <send retrans="500" start_txn="inv"><![CDATA[\n'
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "From: sipp <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]\n"
        "To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]\n"
        "Call-ID: [call_id]\n"
        "CSeq: 2 INVITE\n"
        "Contact: <sip:alice@[local_ip]:[local_port]>\n"
        "Max-Forwards: 70\n"
        "Supported: timer\n"
        "Content-Type: application/sdp\n"
        "Content-Length: [len]\n"
        "\n"
        "v=0\n"
        "o=user1 53655765 7 IN IP[local_ip_type] [local_ip]\n"
        "s=-\n"
        "c=IN IP[media_ip_type] [media_ip]\n"
        "t=0 0\n"
        "m=audio [media_port] RTP/AVP 8 101\n"
        "a=rtpmap:8 PCMA/8000\n"
        "a=rtpmap:101 telephone-event/8000\n"
        "a=fmtp:101 0-15\n"
        "a=sendonly\n"
        "]]></send>\n"
    )


def test_in_dialog_requests_along_a_route_set_and_registers() -> None:
    bye = request("BYE", cseq=3, in_dialog=True, route_set=True, contact=False, rport=True, retrans=None)
    assert bye.startswith("  <send><![CDATA[\nBYE [next_url] SIP/2.0\n")
    assert "branch=[branch];rport\n[routes]\nFrom: sipp <sip:sipp@" in bye
    assert "Contact:" not in bye and bye.endswith("Max-Forwards: 70\nContent-Length: 0\n]]></send>\n")
    assert 'retrans="500"' not in request("ACK", cseq=1, in_dialog=True)  # never, even by default
    reg = register("bob", cseq=2, contact="<sip:bob@127.0.0.1:5099>", authentication=True)
    assert (
        "REGISTER sip:[remote_ip]:[remote_port] SIP/2.0\n"
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
        "From: <sip:bob@[remote_ip]>;tag=r[call_number]\nTo: <sip:bob@[remote_ip]>\nCall-ID: [call_id]\n"
        "CSeq: 2 REGISTER\nContact: <sip:bob@127.0.0.1:5099>\n[authentication]\nExpires: 60\nMax-Forwards: 70\n"
    ) in reg


def test_responses_echo_the_request_and_tag_the_first_one() -> None:
    ringing = response("180 Ringing", to_tag="uas1", headers=["RSeq: 1"])
    assert ringing == (
        "  <send><![CDATA[\nSIP/2.0 180 Ringing\n[last_Via:]\n[last_From:]\n[last_To:];tag=uas1\n"
        "[last_Call-ID:]\n[last_CSeq:]\nRSeq: 1\nContent-Length: 0\n]]></send>\n"
    )
    assert response("200 OK").count("[last_") == len(ECHOED)


def test_recv_checks_and_the_scenario_around_them() -> None:
    assert recv(response=100, optional=True) == '  <recv response="100" optional="true"/>\n'
    got = recv(request="BYE", timeout=5000, checks=[check('a "quoted" <reason>', "why", search_in="body")])
    assert got == (
        '  <recv request="BYE" timeout="5000">\n    <action>\n'
        '      <ereg regexp="a &quot;quoted&quot; &lt;reason&gt;" search_in="body" check_it="true" assign_to="why"/>\n'
        "    </action>\n  </recv>\n"
    )
    whole = scenario("a & b", recv(request="INVITE"), pause(10), references=["x", "y"])
    root = ET.fromstring(whole.encode("iso-8859-1"))
    assert root.attrib["name"] == "a & b"
    assert [(el.tag, el.attrib) for el in root] == [
        ("recv", {"request": "INVITE"}),
        ("pause", {"milliseconds": "10"}),
        ("Reference", {"variables": "x,y"}),
    ]
    assert "<Reference" not in scenario("none", pause(1))
