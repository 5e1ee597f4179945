"""Dial-out (transports/sip/uac.py) on a virtual clock: the far end is played by hand-built
responses; our requests are parsed back from the transaction layer's transmits."""

from __future__ import annotations

from trackmesh.transports.sip.auth import Denied, Grant
from trackmesh.transports.sip.call_actions import Action
from trackmesh.transports.sip.digest import DigestServer, Verdict, compute_ha1, parse_credentials
from trackmesh.transports.sip.message import Request, Response, make_response
from trackmesh.transports.sip.parser import parse_message
from trackmesh.transports.sip.transaction import TransactionLayer
from trackmesh.transports.sip.uac import Dialer
from trackmesh.transports.sip.uas import AnswerMedia, CallControl, CloseMedia

PHONE = ("127.0.0.1", 5090)
ANSWER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"


def no_calls(now: float, req: Request) -> Grant | Denied:
    return Denied(403, "Forbidden")


class Far:
    def __init__(self) -> None:
        self.layer = TransactionLayer()
        self.control = CallControl(self.layer, no_calls, host="127.0.0.1", port=5060)
        self.dialer = Dialer(self.control)
        self.now = 0.0

    def sent(self) -> list[Request | Response]:
        while (ev := self.layer.poll_event()) is not None:
            self.control.handle_event(self.now, ev)
        out = []
        while (tx := self.layer.poll_transmit()) is not None:
            assert tx.destination == PHONE
            out.append(parse_message(tx.data))
        return out

    def respond(self, req: Request, status: int, *, to_tag: str | None = "far1", body: str = "",
                headers: dict[str, str] | None = None) -> list[Request | Response]:  # fmt: skip
        resp = make_response(req, status, to_tag=to_tag, body=body.encode())
        if status < 300 and status > 100:
            resp.headers.add("Contact", "<sip:phone@127.0.0.1:5090>")
        for name, value in (headers or {}).items():
            resp.headers.add(name, value)
        self.layer.handle_response(self.now, resp, PHONE)
        return self.sent()

    def actions(self) -> list[Action]:
        out = []
        while (a := self.control.poll_action()) is not None:
            out.append(a)
        return out

    def dial(self, credentials: tuple[str, str] | None = None) -> Request:
        target = "sip:bob@127.0.0.1:5090"
        self.dialer.dial(self.now, room="r", peer="sip-bob", session=9, offer="v=0\r\n", target=target,
                         destination=PHONE, credentials=credentials)  # fmt: skip
        (invite,) = self.sent()
        assert isinstance(invite, Request) and invite.method == "INVITE" and invite.body == b"v=0\r\n"
        return invite


def test_answered_call_is_acked_joins_and_is_ended_by_the_far_end() -> None:
    far = Far()
    invite = far.dial()
    assert far.respond(invite, 180) == []
    (ack,) = far.respond(invite, 200, body=ANSWER)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.to().tag == "far1"
    assert ack.uri == "sip:phone@127.0.0.1:5090"  # the Contact of the 2xx (s12.1.2)
    (answer,) = far.actions()
    assert isinstance(answer, AnswerMedia) and answer.session == 9 and answer.answer == ANSWER
    call = far.control.calls[answer.call]
    assert call.outgoing and call.state == "confirmed"
    # The far end hangs up: an in-dialog BYE addressed to our tag.
    bye = call.dialog.create_request("BYE", "SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKbye") if call.dialog else None
    assert bye is not None
    bye.headers.set("From", "<sip:bob@127.0.0.1:5090>;tag=far1")
    bye.headers.set("To", f"<sip:trackmesh@127.0.0.1:5060>;tag={call.to_tag}")
    far.layer.handle_request(far.now, bye, PHONE)
    (ok,) = far.sent()
    assert isinstance(ok, Response) and ok.status == 200
    assert [type(a) for a in far.actions()] == [CloseMedia] and far.control.calls == {}


def test_busy_or_timeout_closes_the_media() -> None:
    far = Far()
    invite = far.dial()
    far.respond(invite, 486)  # the transaction layer ACKs a non-2xx itself
    (close,) = far.actions()
    assert isinstance(close, CloseMedia) and close.session == 9 and "486" in close.reason
    far.dial()
    far.now = 40.0
    far.layer.handle_timeout(far.now)  # Timer B: nobody answered
    far.sent()
    (close,) = far.actions()
    assert isinstance(close, CloseMedia) and "408" in close.reason
    assert far.dialer.counters["failed"] == 2


def test_digest_challenge_is_answered_once() -> None:
    far = Far()
    server = DigestServer(b"s" * 32, "pbx", algorithms=("SHA-256", "MD5"))
    invite = far.dial(credentials=("alice", "secret"))
    challenge = {"WWW-Authenticate": server.challenges(0.0)[0]}
    sent = far.respond(invite, 401, headers=challenge)
    retry = next(m for m in sent if isinstance(m, Request) and m.method == "INVITE")
    creds = parse_credentials(retry.headers.get("Authorization") or "")
    assert creds.algorithm == "SHA-256" and retry.cseq().seq == 2
    ha1 = compute_ha1("SHA-256", "alice", "pbx", "secret")
    assert server.check(0.0, "INVITE", retry.uri, creds, ha1) is Verdict.OK
    far.respond(retry, 401, headers={"WWW-Authenticate": server.challenges(0.0)[0]})
    assert [type(a) for a in far.actions()] == [CloseMedia]  # a second challenge: wrong credentials, give up


def test_cancel_while_ringing() -> None:
    far = Far()
    invite = far.dial()
    far.respond(invite, 180)
    call_id = invite.call_id()
    assert far.dialer.cancel(far.now, call_id)
    (cancel,) = far.sent()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL"
    assert cancel.top_via().branch == invite.top_via().branch and cancel.cseq().seq == invite.cseq().seq
    far.respond(invite, 487)
    assert [type(a) for a in far.actions()] == [CloseMedia]
    assert not far.dialer.cancel(far.now, call_id)


def test_a_tcp_dial_out_keeps_every_request_reliable_with_tcp_via_and_contact() -> None:
    far = Far()
    far.dialer.dial(far.now, room="r", peer="sip-bob", session=9, offer="v=0\r\n",
                    target="sip:bob@127.0.0.1:5090;transport=tcp", destination=PHONE, reliable=True)  # fmt: skip
    tx = far.layer.poll_transmit()
    assert tx is not None and tx.reliable and tx.destination == PHONE
    invite = parse_message(tx.data)
    assert isinstance(invite, Request) and invite.top_via().transport == "TCP"
    assert invite.headers.get("Contact") == "<sip:trackmesh@127.0.0.1:5060;transport=tcp>"
    far.now = 10.0
    far.layer.handle_timeout(far.now)
    assert far.layer.poll_transmit() is None  # no retransmission over TCP (s17.1.1.2)
    resp = make_response(invite, 200, to_tag="far1", body=ANSWER.encode())
    resp.headers.add("Contact", "<sip:bob@127.0.0.1:5090;transport=tcp>")
    far.layer.handle_response(far.now, resp, PHONE)
    while (ev := far.layer.poll_event()) is not None:
        far.control.handle_event(far.now, ev)
    ack_tx = far.layer.poll_transmit()
    assert ack_tx is not None and ack_tx.reliable
    ack = parse_message(ack_tx.data)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.top_via().transport == "TCP"
    (answer,) = far.actions()
    assert isinstance(answer, AnswerMedia) and far.control.calls[answer.call].reliable


def test_a_reliable_180_is_pracked_once_and_the_bye_goes_above_the_prack() -> None:
    """RFC 3262 s4: a 180 with Require: 100rel and RSeq is PRACKed in its early dialog (RAck names the
    RSeq and the INVITE's CSeq); its retransmission is not PRACKed again; the next RSeq is; the
    confirmed dialog's BYE takes a CSeq above the PRACKs'."""
    far = Far()
    invite = far.dial()
    assert "100rel" in (invite.headers.get("Supported") or "") and "PRACK" in invite.headers.get_all("Allow")
    reliable = {"Require": "100rel", "RSeq": "7"}
    (prack,) = far.respond(invite, 180, headers=reliable)
    assert isinstance(prack, Request) and prack.method == "PRACK"
    assert prack.headers.get("RAck") == f"7 {invite.cseq().seq} INVITE"
    assert prack.cseq().seq == invite.cseq().seq + 1 and prack.to().tag == "far1"
    assert prack.uri == "sip:phone@127.0.0.1:5090"  # the 180's Contact: the early dialog's target
    # The PRACK's 200 is ours, not CallControl's.
    assert far.respond(prack, 200) == []
    assert far.respond(invite, 180, headers=reliable) == []  # a retransmission: no second PRACK
    assert far.respond(invite, 183, headers={"Require": "100rel", "RSeq": "9"}) == []  # not one higher
    (prack2,) = far.respond(invite, 183, headers={"Require": "100rel", "RSeq": "8"})
    assert isinstance(prack2, Request) and prack2.headers.get("RAck") == f"8 {invite.cseq().seq} INVITE"
    assert prack2.cseq().seq == prack.cseq().seq + 1
    assert far.respond(prack2, 200) == []
    (ack,) = far.respond(invite, 200, body=ANSWER)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq().seq == invite.cseq().seq
    (answer,) = far.actions()
    assert isinstance(answer, AnswerMedia)
    call = far.control.calls[answer.call]
    assert call.dialog is not None
    bye = call.dialog.create_request("BYE", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKb1")
    assert bye.cseq().seq == prack2.cseq().seq + 1
    assert far.dialer.counters["pracks"] == 2 and far.dialer.counters["bad_rseq"] == 0


def test_an_unreliable_or_malformed_provisional_gets_no_prack() -> None:
    far = Far()
    invite = far.dial()
    assert far.respond(invite, 180) == []  # no Require: 100rel
    assert far.respond(invite, 183, headers={"Require": "100rel", "RSeq": "x"}) == []
    assert far.respond(invite, 183, headers={"Require": "100rel"}) == []  # no RSeq
    assert far.dialer.counters["bad_rseq"] == 2 and far.dialer.counters["pracks"] == 0
    (ack,) = far.respond(invite, 200, body=ANSWER)
    assert isinstance(ack, Request) and ack.method == "ACK"
