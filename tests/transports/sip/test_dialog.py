"""RFC 3261 s12 dialogs: creation on both sides, routing, CSeq order, target refresh."""

from __future__ import annotations

import pytest

from trackmesh.errors import LocalProtocolError
from trackmesh.transports.sip.dialog import Dialog, dialog_id_for_request
from trackmesh.transports.sip.message import Headers, Request, SipParseError, make_response
from trackmesh.transports.sip.parser import parse_message, serialize

VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnew"


def invite(record_route: list[str] | None = None) -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")
    h.add("Max-Forwards", "70")
    h.add("From", '"Alice" <sip:alice@example.com>;tag=a1')
    h.add("To", "<sip:room@example.com>")
    h.add("Call-ID", "cid")
    h.add("CSeq", "10 INVITE")
    h.add("Contact", "<sip:alice@127.0.0.1:5070>")
    for rr in record_route or []:
        h.add("Record-Route", rr)
    return Request("INVITE", "sip:room@example.com", h)


RR = ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]


def test_uas_dialog_and_in_dialog_bye_with_loose_routing() -> None:
    req = invite(RR)
    ok = make_response(req, 200, to_tag="b1")
    d = Dialog.as_uas(req, ok)
    assert d.id == ("cid", "b1", "a1") and d.confirmed
    assert d.route_set == RR and d.remote_seq == 10
    bye = d.create_request("BYE", VIA)
    assert bye.uri == "sip:alice@127.0.0.1:5070"
    assert bye.headers.get_all("Route") == RR
    assert bye.from_().tag == "b1" and bye.to().tag == "a1" and bye.to().display == '"Alice"'
    assert bye.cseq().seq == 1 and bye.call_id() == "cid"
    assert parse_message(serialize(bye)) == bye  # a valid message on the wire


def test_uac_dialog_reverses_the_route_set_and_acks_with_the_invite_cseq() -> None:
    req = invite()
    ok = make_response(req, 200, to_tag="b1")
    for rr in RR:
        ok.headers.add("Record-Route", rr)
    ok.headers.add("Contact", "<sip:room@10.0.0.5:5060>")
    d = Dialog.as_uac(req, ok)
    assert d.id == ("cid", "a1", "b1")
    assert d.route_set == list(reversed(RR))
    ack = d.create_request("ACK", VIA, cseq=10)
    assert (ack.cseq().seq, ack.cseq().method, ack.uri) == (10, "ACK", "sip:room@10.0.0.5:5060")
    assert d.create_request("BYE", VIA).cseq().seq == 11
    with pytest.raises(LocalProtocolError):
        d.create_request("CANCEL", VIA)


def test_strict_router_gets_the_request_uri_and_the_target_goes_last() -> None:
    req = invite(["<sip:strict.example.com;method=INVITE>", "<sip:p2.example.com;lr>"])
    d = Dialog.as_uas(req, make_response(req, 200, to_tag="b1"))
    bye = d.create_request("BYE", VIA)
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:alice@127.0.0.1:5070>"]


def test_cseq_order_and_target_refresh() -> None:
    req = invite()
    d = Dialog.as_uas(req, make_response(req, 200, to_tag="b1"))
    reinvite = d.create_request("INVITE", VIA)  # shape only; we feed it back as the peer's
    reinvite.headers.set("CSeq", "11 INVITE")
    reinvite.headers.set("Contact", "<sip:alice@192.0.2.9:5999>")
    assert d.handle_request(reinvite) is None
    assert d.remote_target == "sip:alice@192.0.2.9:5999" and d.remote_seq == 11
    old = d.create_request("BYE", VIA)
    old.headers.set("CSeq", "5 BYE")
    assert d.handle_request(old) == 500
    ack = d.create_request("ACK", VIA, cseq=3)
    assert d.handle_request(ack) is None  # ACK does not move the remote CSeq
    assert d.remote_seq == 11


def test_early_dialog_confirmed_by_2xx() -> None:
    req = invite()
    ringing = make_response(req, 180, to_tag="b1")
    ringing.headers.add("Contact", "<sip:room@10.0.0.5>")
    d = Dialog.as_uac(req, ringing)
    assert not d.confirmed
    ok = make_response(req, 200, to_tag="b1")
    ok.headers.add("Contact", "<sip:room@10.0.0.6>")
    d.handle_response(req, ok)
    assert d.confirmed and d.remote_target == "sip:room@10.0.0.6"


def test_bad_dialog_creation_and_lookup() -> None:
    req = invite()
    no_tag = make_response(req, 200)
    with pytest.raises(SipParseError):
        Dialog.as_uac(req, no_tag)
    with pytest.raises(LocalProtocolError):
        Dialog.as_uas(req, no_tag)
    req.headers.remove("Contact")
    with pytest.raises(SipParseError):
        Dialog.as_uas(req, make_response(req, 200, to_tag="x"))
    bye = invite()
    bye.headers.set("To", "<sip:room@example.com>;tag=b1")
    assert dialog_id_for_request(bye) == ("cid", "b1", "a1")


def test_a_dialog_creating_response_copies_record_route_and_next_hop_follows_it() -> None:
    """s12.1.1: the UAS copies Record-Route into its 1xx/2xx to INVITE (a caller behind a proxy
    routes its ACK and BYE by it); s12.2.1.1: our requests go to the first route, else the target."""
    req = invite(["<sip:127.0.0.1:5090;lr>", "<sip:p2.example.com;lr>"])
    assert make_response(req, 180, to_tag="b1").headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    ok = make_response(req, 200, to_tag="b1")
    assert ok.headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    assert make_response(req, 486, to_tag="b1").headers.get_all("Record-Route") == []  # no dialog
    d = Dialog.as_uas(req, ok)
    assert d.next_hop(("192.0.2.1", 5060)) == ("127.0.0.1", 5090)
    direct = invite()
    d = Dialog.as_uas(direct, make_response(direct, 200, to_tag="b1"))
    assert d.next_hop(("192.0.2.1", 5060)) == ("127.0.0.1", 5070)  # the Contact
    named = invite(["<sip:proxy.example.com;lr>"])
    d = Dialog.as_uas(named, make_response(named, 200, to_tag="b1"))
    assert d.next_hop(("192.0.2.1", 5060)) == ("192.0.2.1", 5060)  # no DNS: the fallback
