"""CallControl (calls into rooms) on a virtual clock: the phone is played by hand-built requests
fed to a real TransactionLayer; what we send is parsed back from the layer's transmits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.transports.sip.auth import Denied, Grant
from trackmesh.transports.sip.call_actions import Action
from trackmesh.transports.sip.message import Headers, Request, Response, make_response, new_branch
from trackmesh.transports.sip.parser import parse_message
from trackmesh.transports.sip.transaction import TransactionLayer
from trackmesh.transports.sip.uas import (
    MIN_SE,
    AnswerMedia,
    AuthorizeCall,
    AuthorizeRegister,
    CallControl,
    CloseMedia,
    OpenMedia,
    ReofferMedia,
    UpdateMedia,
)

PHONE = ("127.0.0.1", 5070)
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n{dir}\r\n"
)
ANSWER = "v=0\r\no=trackmesh 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 42000 RTP/AVP 0\r\n"


def authorize(now: float, req: Request) -> Grant | Denied:
    user = req.uri.split(":", 1)[1].split("@", 1)[0]
    if user == "record-token":
        return Grant("room1", "sip-alice", record=True)
    return Grant("room1", "sip-alice") if user == "good-token" else Denied(403, "Forbidden (bad token)")


class Phone:
    """Builds the phone's requests of one call and reads what the server sends back."""

    def __init__(self, user: str = "good-token", call_id: str = "c1") -> None:
        self.user = user
        self.call_id = call_id
        self.to_tag: str | None = None
        self.cseq = 0

    def request(self, method: str, *, body: str = "", headers: dict[str, str] | None = None, cseq: int | None = None,
                branch: str | None = None) -> Request:  # fmt: skip
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch or new_branch()}")
        h.add("Max-Forwards", "70")
        h.add("From", "<sip:alice@127.0.0.1>;tag=alice1")
        h.add("To", "<sip:room@127.0.0.1>" + (f";tag={self.to_tag}" if self.to_tag else ""))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Contact", "<sip:alice@127.0.0.1:5070>")
        for name, value in (headers or {}).items():
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        return Request(method, f"sip:{self.user}@127.0.0.1:5060", h, body.encode())


class Harness:
    def __init__(self) -> None:
        self.layer = TransactionLayer()
        self.control = CallControl(self.layer, authorize, host="127.0.0.1", port=5060)
        self.now = 0.0

    def feed(self, req: Request) -> list[Response | Request]:
        self.layer.handle_request(self.now, req, PHONE)
        return self.drain()

    def drain(self) -> list[Response | Request]:
        while (ev := self.layer.poll_event()) is not None:
            self.control.handle_event(self.now, ev)
        out = []
        while (tx := self.layer.poll_transmit()) is not None:
            assert tx.destination == PHONE
            out.append(parse_message(tx.data))
        return out

    def actions(self) -> list[Action]:
        out = []
        while (a := self.control.poll_action()) is not None:
            out.append(a)
        return out

    def advance(self, to: float) -> list[Response | Request]:
        out: list[Response | Request] = []
        while True:
            deadlines = [d for d in (self.layer.next_deadline(), self.control.next_deadline()) if d is not None]
            if not deadlines or min(deadlines) > to:
                break
            self.now = max(self.now, min(deadlines))
            self.layer.handle_timeout(self.now)
            self.control.handle_timeout(self.now)
            out += self.drain()
        self.now = to
        return out


def statuses(msgs: list[Response | Request]) -> list[int]:
    return [m.status for m in msgs if isinstance(m, Response)]


def answered_call(h: Harness, phone: Phone, headers: dict[str, str] | None = None) -> Response:
    sent = h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendrecv"), headers=headers))
    assert statuses(sent) == [100, 180]
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    assert (open_media.room, open_media.peer) == ("room1", "sip-alice")
    h.control.media_opened(h.now, open_media.call, 77, ANSWER)
    (ok,) = h.drain()
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.body.decode() == ANSWER and ok.headers.get("Contact") is not None
    phone.to_tag = ok.to().tag
    assert phone.to_tag == sent[1].to().tag  # the 180 and the 200 carry the same To tag
    return ok


def test_invite_answer_ack_bye() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    assert h.feed(phone.request("ACK", cseq=1)) == []
    assert h.control.calls["c1;alice1"].state == "confirmed"
    assert h.advance(10.0) == []  # ACKed: no 200 retransmission, no BYE
    sent = h.feed(phone.request("BYE"))
    assert statuses(sent) == [200]
    (close,) = h.actions()
    assert isinstance(close, CloseMedia) and close.session == 77
    assert h.control.calls == {}


def test_the_200_is_retransmitted_until_ack_then_a_missing_ack_ends_the_call() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    sent = h.advance(40.0)
    resent = [m for m in sent if isinstance(m, Response) and m.status == 200]
    assert len(resent) >= 5  # T1 doubling up to T2 until 64*T1
    byes = [m for m in sent if isinstance(m, Request) and m.method == "BYE"]
    # One BYE (Timer E retransmits it while the phone stays silent), to the phone's Contact.
    assert len({b.top_via().branch for b in byes}) == 1 and byes[0].uri == "sip:alice@127.0.0.1:5070"
    assert any(isinstance(a, CloseMedia) for a in h.actions())


def test_hold_reinvite_is_answered_and_keeps_the_call() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    sent = h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendonly")))
    assert statuses(sent) == [100]
    (update,) = h.actions()
    assert isinstance(update, UpdateMedia) and "a=sendonly" in update.offer and update.session == 77
    h.control.update_answered(h.now, update.call, ANSWER + "a=recvonly\r\n")
    (ok,) = h.drain()
    assert isinstance(ok, Response) and ok.status == 200 and b"a=recvonly" in ok.body
    h.feed(phone.request("ACK", cseq=2))
    assert h.control.calls["c1;alice1"].state == "confirmed"  # on hold, not hung up
    assert h.actions() == []


def test_update_without_sdp_and_reinvite_glare() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    sent = h.feed(phone.request("UPDATE"))
    assert statuses(sent) == [200] and sent[0].body == b""
    h.feed(phone.request("INVITE", body=OFFER.format(dir="a=inactive")))
    h.actions()
    sent = h.feed(phone.request("UPDATE", body=OFFER.format(dir="a=sendrecv")))
    assert statuses(sent) == [500]  # RFC 3311 s5.2: a re-INVITE is pending
    assert sent[0].headers.get("Retry-After") == "1"


def test_refused_reoffer_keeps_the_session() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendrecv")))
    (update,) = h.actions()
    assert isinstance(update, UpdateMedia)
    h.control.update_failed(h.now, update.call, 488, "the re-offer drops the call's codec")
    assert statuses(h.drain()) == [488]
    assert h.control.calls["c1;alice1"].state == "confirmed"


def test_cancel_before_the_answer() -> None:
    h, phone = Harness(), Phone()
    branch = new_branch()
    h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendrecv"), branch=branch))
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    sent = h.feed(phone.request("CANCEL", cseq=1, branch=branch))
    assert sorted(statuses(sent)) == [200, 487]
    # The media side answers after the CANCEL: the call's media is closed at once, no 200 is sent.
    h.control.media_opened(h.now, open_media.call, 5, ANSWER)
    assert h.drain() == []
    (close,) = h.actions()
    assert isinstance(close, CloseMedia) and close.session == 5
    assert h.control.calls == {}


def test_refusals() -> None:
    h = Harness()
    sent = h.feed(Phone(user="bad").request("INVITE", body=OFFER.format(dir="a=sendrecv")))
    assert statuses(sent) == [100, 403]
    sent = h.feed(Phone(call_id="c2").request("INVITE", body=OFFER.format(dir=""), headers={"Session-Expires": "30"}))
    assert statuses(sent) == [100, 422] and sent[1].headers.get("Min-SE") == str(MIN_SE)
    not_sdp = Phone(call_id="c3").request("INVITE", body="<xml/>")
    not_sdp.headers.set("Content-Type", "application/xml")
    sent = h.feed(not_sdp)
    assert statuses(sent) == [100, 415] and sent[1].headers.get("Accept") == "application/sdp"  # s21.4.13
    phone = Phone(call_id="c4")
    phone.to_tag = "unknown"
    assert statuses(h.feed(phone.request("BYE"))) == [481]
    assert statuses(h.feed(Phone(call_id="c5").request("MESSAGE"))) == [501]
    options = h.feed(Phone(call_id="c6").request("OPTIONS"))
    assert statuses(options) == [200] and "UPDATE" in options[0].headers.get_all("Allow")
    # The media side refused (no codec, the peer is in the room): the caller gets its status.
    h.feed(Phone(call_id="c7").request("INVITE", body=OFFER.format(dir="")))
    (open_media,) = [a for a in h.actions() if isinstance(a, OpenMedia)]
    h.control.media_failed(h.now, open_media.call, 488, "no acceptable audio stream")
    assert statuses(h.drain()) == [488]
    assert h.control.calls == {}


def test_session_timer_refresher_uac_not_refreshed_ends_the_call() -> None:
    h, phone = Harness(), Phone()
    ok = answered_call(h, phone, {"Session-Expires": "120", "Supported": "timer"})
    assert ok.headers.get("Session-Expires") == "120;refresher=uac"
    assert ok.headers.get("Require") == "timer"
    h.feed(phone.request("ACK", cseq=1))
    # A refresh (UPDATE without SDP) at 60 s pushes the deadline on.
    h.advance(60.0)
    sent = h.feed(phone.request("UPDATE", headers={"Session-Expires": "120;refresher=uac", "Supported": "timer"}))
    assert statuses(sent) == [200] and sent[0].headers.get("Session-Expires") == "120;refresher=uac"
    assert [m for m in h.advance(140.0) if isinstance(m, Request)] == []
    # No refresh any more: at 120 - 32 s past the last refresh the call is ended (RFC 4028 s10).
    sent = h.advance(150.0)
    byes = [m for m in sent if isinstance(m, Request) and m.method == "BYE"]
    assert len({b.top_via().branch for b in byes}) == 1 and "session timer" in (byes[0].headers.get("Reason") or "")
    assert h.control.counters["session_timer_expired"] == 1
    assert any(isinstance(a, CloseMedia) for a in h.actions())


def test_session_timer_refresher_uas_refreshes_with_update() -> None:
    h, phone = Harness(), Phone()
    ok = answered_call(h, phone, {"Session-Expires": "90;refresher=uas", "Allow": "INVITE, ACK, BYE, UPDATE"})
    assert ok.headers.get("Session-Expires") == "90;refresher=uas"
    assert ok.headers.get("Require") is None
    h.feed(phone.request("ACK", cseq=1))
    sent = h.advance(46.0)
    updates = [m for m in sent if isinstance(m, Request) and m.method == "UPDATE"]
    assert len({u.top_via().branch for u in updates}) == 1 and updates[0].body == b""  # one, retransmitted
    assert updates[0].cseq().seq == 1 and updates[0].to().tag == "alice1"  # our in-dialog request


def answer(h: Harness, request: Request, status: int = 200) -> list[Response | Request]:
    """The phone's response to one of our requests, fed back through the transaction layer."""
    h.layer.handle_response(h.now, make_response(request, status), PHONE)
    return h.drain()


def test_session_timer_refresher_uas_answered_refreshes_keep_the_call() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone, {"Session-Expires": "90;refresher=uas", "Allow": "INVITE, ACK, BYE, UPDATE"})
    h.feed(phone.request("ACK", cseq=1))
    for due in (45.0, 90.0, 135.0):  # every N/2, each answered 200: the call lives on
        (update,) = {u.top_via().branch: u for u in h.advance(due) if isinstance(u, Request)}.values()
        assert update.method == "UPDATE" and update.headers.get("Session-Expires") == "90;refresher=uas"
        assert answer(h, update) == []
    assert h.control.calls["c1;alice1"].state == "confirmed"
    assert h.control.counters["session_timer_expired"] == 0


def test_session_timer_refresher_uas_unanswered_refresh_ends_the_call() -> None:
    """RFC 4028 s10: the phone vanished. Our UPDATE at 45 s gets nothing; at 77 s (Timer F, 64*T1)
    the transaction times out and the call is ended with BYE, media closed."""
    h, phone = Harness(), Phone()
    answered_call(h, phone, {"Session-Expires": "90;refresher=uas", "Allow": "INVITE, ACK, BYE, UPDATE"})
    h.feed(phone.request("ACK", cseq=1))
    h.actions()
    sent = h.advance(76.0)
    assert {m.method for m in sent if isinstance(m, Request)} == {"UPDATE"}  # retransmitted, no BYE yet
    sent = h.advance(78.0)
    byes = [m for m in sent if isinstance(m, Request) and m.method == "BYE"]
    assert byes and "session refresh unanswered" in (byes[0].headers.get("Reason") or "")
    assert h.control.counters["session_timer_expired"] == 1 and h.control.calls == {}
    assert any(isinstance(a, CloseMedia) for a in h.actions())


def test_session_timer_refresher_uas_refresh_answered_only_provisionally_expires() -> None:
    """A re-INVITE refresh (the phone does not allow UPDATE) answered 100 and never 200: when the
    next refresh is due (the session's expiry) the call is ended, before Timer B would fire."""
    h, phone = Harness(), Phone()
    h.control.min_se = 20  # as --dev --sip-min-se 20 (config.py): a 40 s interval is agreed
    answered_call(h, phone, {"Session-Expires": "40;refresher=uas"})
    h.feed(phone.request("ACK", cseq=1))
    (reinvite,) = {m.top_via().branch: m for m in h.advance(20.0) if isinstance(m, Request)}.values()
    assert reinvite.method == "INVITE" and reinvite.body == ANSWER.encode()
    assert answer(h, reinvite, 100) == []
    sent = h.advance(40.0)
    assert [m.method for m in sent if isinstance(m, Request) and m.method != "INVITE"] == ["BYE"]
    assert h.control.counters["session_timer_expired"] == 1 and h.control.calls == {}


def test_no_session_timer_means_no_request_from_us() -> None:
    h, phone = Harness(), Phone()
    ok = answered_call(h, phone)
    assert ok.headers.get("Session-Expires") is None
    h.feed(phone.request("ACK", cseq=1))
    assert [m for m in h.advance(3600.0) if isinstance(m, Request)] == []  # sipp aborts on unexpected requests


def test_hang_up_sends_bye_and_closes_media() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    h.control.hang_up(h.now, "c1;alice1", "no RTP from the phone")
    (bye,) = h.drain()
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.headers.get("Call-ID") == "c1" and bye.to().tag == "alice1" and bye.from_().tag == phone.to_tag
    assert [type(a) for a in h.actions()] == [CloseMedia]


def test_register_keeps_a_binding_until_it_expires_or_is_removed() -> None:
    h = Harness()
    phone = Phone(call_id="reg1")
    sent = h.feed(phone.request("REGISTER", headers={"Expires": "7200"}))
    assert statuses(sent) == [200]
    assert sent[0].headers.get("Contact") == "<sip:alice@127.0.0.1:5070>;expires=3600"  # capped at an hour
    (binding,) = h.control.registrations.values()
    assert binding.room == "room1" and binding.contact == "sip:alice@127.0.0.1:5070" and binding.expires_at == 3600
    h.now = 10.0
    h.feed(phone.request("REGISTER", headers={"Expires": "0"}))
    assert h.control.registrations == {}
    assert statuses(h.feed(Phone(user="bad", call_id="reg2").request("REGISTER"))) == [403]


def test_a_flood_from_one_address_gets_503_and_others_still_get_through() -> None:
    from trackmesh.transports.sip.uas import FLOOD_BURST, FLOOD_RATE

    h = Harness()
    answers = [statuses(h.feed(Phone(call_id=f"o{i}").request("OPTIONS")))[0] for i in range(int(FLOOD_BURST) + 10)]
    assert answers[: int(FLOOD_BURST)] == [200] * int(FLOOD_BURST) and set(answers[int(FLOOD_BURST) :]) == {503}
    assert h.control.counters["flood_refused"] == 10
    other = Phone(call_id="other").request("OPTIONS")
    h.layer.handle_request(h.now, other, ("127.0.0.2", 5070))
    while (ev := h.layer.poll_event()) is not None:
        h.control.handle_event(h.now, ev)
    tx = h.layer.poll_transmit()
    assert (tx is not None and tx.destination == ("127.0.0.1", 5070)) or tx is not None  # answered (to its Via)
    answer = parse_message(tx.data)
    assert isinstance(answer, Response) and answer.status == 200
    h.now += 1.0 / FLOOD_RATE  # one request's worth of refill
    assert statuses(h.feed(Phone(call_id="later").request("OPTIONS"))) == [200]


def test_a_pending_authorization_waits_for_the_hooks_answer() -> None:
    from trackmesh.transports.sip.uas import Pending

    h = Harness()
    h.control.authorize = lambda now, req: Pending()
    phone = Phone()
    sent = h.feed(phone.request("INVITE", body=OFFER.format(dir="")))
    assert statuses(sent) == [100]  # nothing more until the hook answers
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeCall) and ask.source == PHONE
    h.control.authorized(h.now, ask.call, Grant("hooked", None))
    assert statuses(h.drain()) == [180]
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia) and open_media.room == "hooked" and open_media.peer == "sip-alice"
    # A refusal from the hook, and a CANCEL while the hook is asked.
    h.feed(Phone(call_id="c2").request("INVITE", body=OFFER.format(dir="")))
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeCall)
    h.control.authorized(h.now, ask.call, Denied(603, "Decline"))
    assert statuses(h.drain()) == [603]
    branch = new_branch()
    h.feed(Phone(call_id="c3").request("INVITE", body=OFFER.format(dir=""), branch=branch))
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeCall)
    assert sorted(statuses(h.feed(Phone(call_id="c3").request("CANCEL", cseq=1, branch=branch)))) == [200, 487]
    h.control.authorized(h.now, ask.call, Grant("hooked", None))
    assert h.drain() == [] and h.actions() == [] and "c3;alice1" not in h.control.calls


def test_a_register_for_the_hooks_waits_and_keeps_its_session_id() -> None:
    """atm0s 0.1: REGISTER decided by the hooks (AuthorizeRegister); the binding keeps the session id
    the register hook was given across refreshes, and POST /sip/invite/client finds it by that id."""
    from trackmesh.transports.sip.uas import Pending

    h = Harness()
    h.control.authorize = lambda now, req: Pending()
    phone = Phone(call_id="reg1")
    assert h.feed(phone.request("REGISTER", headers={"Expires": "60"})) == []  # nothing until the hooks answer
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeRegister) and ask.source == PHONE
    h.control.register_decided(h.now, ask.request, ask.source, ask.reliable, Grant("", None, "alice"), "s-1")
    assert statuses(h.drain()) == [200]
    binding = h.control.registration_by_session("s-1")
    assert binding is not None and binding.contact == "sip:alice@127.0.0.1:5070" and binding.expires_at == 60
    h.feed(phone.request("REGISTER", cseq=2, headers={"Expires": "60"}))
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeRegister)
    h.control.register_decided(h.now, ask.request, ask.source, ask.reliable, Grant("", None, "alice"))
    assert statuses(h.drain()) == [200] and h.control.registration_by_session("s-1") is not None  # same id
    h.feed(phone.request("REGISTER", cseq=3, headers={"Expires": "0"}))
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeRegister)
    h.control.register_decided(h.now, ask.request, ask.source, ask.reliable, Denied(403, "Forbidden"))
    assert statuses(h.drain()) == [403] and h.control.registration_by_session("s-1") is not None


def test_wait_for_peers_reaches_open_media() -> None:
    from trackmesh.transports.sip.uas import Pending

    h = Harness()
    h.control.authorize = lambda now, req: Pending()
    h.feed(Phone().request("INVITE", body=OFFER.format(dir="")))
    (ask,) = h.actions()
    assert isinstance(ask, AuthorizeCall)
    h.control.authorized(h.now, ask.call, Grant("hooked", None, wait_for_peers=True))
    assert statuses(h.drain()) == [180]  # ringing; the driver answers once someone else is in the room
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia) and open_media.wait_for_peers


def test_a_required_100rel_gets_a_reliable_180_and_the_200_waits_for_its_prack() -> None:
    h, phone = Harness(), Phone()
    invite = phone.request("INVITE", body=OFFER.format(dir="a=sendrecv"), headers={"Require": "100rel"})
    sent = h.feed(invite)
    assert statuses(sent) == [100, 180]
    ringing = sent[1]
    assert isinstance(ringing, Response) and ringing.headers.get("Require") == "100rel"
    assert ringing.headers.get("RSeq") == "1" and ringing.headers.get("Contact") is not None
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    h.control.media_opened(h.now, open_media.call, 77, ANSWER)
    assert h.drain() == []  # the 200 waits for the PRACK
    again = h.advance(0.5) + h.advance(1.5)  # retransmitted at T1, then 2*T1 later (RFC 3262 s3)
    assert statuses(again) == [180, 180] and all(m.headers.get("RSeq") == "1" for m in again)
    phone.to_tag = ringing.to().tag
    wrong = h.feed(phone.request("PRACK", headers={"RAck": "2 1 INVITE"}))
    assert statuses(wrong) == [481]  # no reliable response with RSeq 2
    sent = h.feed(phone.request("PRACK", headers={"RAck": "1 1 INVITE"}))
    assert statuses(sent) == [200, 200]  # the PRACK's 200, then the INVITE's
    ok = sent[1]
    assert isinstance(ok, Response) and ok.cseq().method == "INVITE" and ok.body.decode() == ANSWER
    assert 180 not in statuses(h.advance(10.0))  # no more 180s (the 200 is retransmitted until the ACK)
    assert h.control.counters["pracks"] == 1 and h.control.counters["answered"] == 1
    h.feed(phone.request("ACK", cseq=1))
    assert statuses(h.feed(phone.request("BYE"))) == [200]


def test_no_prack_within_64_t1_refuses_the_call_and_closes_its_media() -> None:
    h, phone = Harness(), Phone()
    h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendrecv"), headers={"Require": "100rel, timer"}))
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    h.control.media_opened(h.now, open_media.call, 77, ANSWER)
    sent = h.advance(40.0)
    assert statuses(sent).count(180) >= 5 and statuses(sent)[-1] == 500, statuses(sent)
    (close,) = h.actions()
    assert isinstance(close, CloseMedia) and close.session == 77
    assert h.control.calls == {} and h.control.counters["prack_timeouts"] == 1


def test_a_required_extension_we_lack_gets_420_and_unsupported() -> None:
    h, phone = Harness(), Phone()
    sent = h.feed(phone.request("INVITE", body=OFFER.format(dir="a=sendrecv"),
                                headers={"Require": "precondition, 100rel"}))  # fmt: skip
    assert statuses(sent) == [100, 420]
    assert isinstance(sent[1], Response) and sent[1].headers.get("Unsupported") == "precondition"
    assert h.actions() == [] and h.control.calls == {}
    # Without the Require, a plain call still goes through (180 unreliable, no RSeq).
    sent = h.feed(Phone(call_id="c2").request("INVITE", body=OFFER.format(dir="a=sendrecv")))
    assert statuses(sent) == [100, 180] and sent[1].headers.get("RSeq") is None
    assert statuses(h.feed(Phone(call_id="c3").request("PRACK", headers={"RAck": "1 1 INVITE"}))) == [481]


def test_a_record_grant_asks_the_media_side_to_record_the_caller() -> None:
    """A token with record: true (docs/recording.md): OpenMedia says so; another token's does not."""
    h = Harness()
    h.feed(Phone().request("INVITE", body=OFFER.format(dir="a=sendrecv")))
    h.feed(Phone("record-token", "c2").request("INVITE", body=OFFER.format(dir="a=sendrecv")))
    opened = [a for a in h.actions() if isinstance(a, OpenMedia)]
    assert [(a.call.split(";")[0], a.record) for a in opened] == [("c1", False), ("c2", True)], opened


# ---- delayed offers (RFC 3261 s13.2.1): the INVITE without SDP, our offer in the 200, the answer in the ACK


def delayed_offer_call(h: Harness, phone: Phone) -> Response:
    sent = h.feed(phone.request("INVITE"))
    assert statuses(sent) == [100, 180]
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia) and open_media.offer == ""  # the media side makes our offer
    h.control.media_opened(h.now, open_media.call, 77, ANSWER)  # here: our offer
    (ok,) = h.drain()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body.decode() == ANSWER
    assert ok.headers.get("Content-Type") == "application/sdp"
    phone.to_tag = ok.to().tag
    assert h.control.counters["delayed_offers"] == 1
    return ok


def test_a_delayed_offer_takes_the_answer_from_the_ack() -> None:
    h, phone = Harness(), Phone()
    delayed_offer_call(h, phone)
    assert h.feed(phone.request("ACK", cseq=1, body=OFFER.format(dir="a=sendrecv"))) == []
    (answer_media,) = h.actions()
    assert isinstance(answer_media, AnswerMedia)
    assert (answer_media.session, answer_media.answer) == (77, OFFER.format(dir="a=sendrecv"))
    assert h.control.calls["c1;alice1"].state == "confirmed"
    # A retransmitted ACK (the phone saw our 200 again) is not a second answer.
    assert h.feed(phone.request("ACK", cseq=1, body=OFFER.format(dir="a=sendrecv"))) == []
    assert h.actions() == [] and h.advance(40.0) == []  # no 200 retransmission, no BYE
    assert statuses(h.feed(phone.request("BYE"))) == [200]


def test_a_delayed_offer_whose_ack_has_no_answer_is_ended_with_bye() -> None:
    h, phone = Harness(), Phone()
    delayed_offer_call(h, phone)
    sent = h.feed(phone.request("ACK", cseq=1))
    (bye,) = sent
    assert isinstance(bye, Request) and bye.method == "BYE" and "13.2.1" in (bye.headers.get("Reason") or "")
    (close,) = h.actions()
    assert isinstance(close, CloseMedia) and close.session == 77
    assert h.control.calls == {} and h.control.counters["ack_without_answer"] == 1


def test_a_delayed_offer_whose_answer_the_media_side_refuses_is_ended_with_bye() -> None:
    """The driver's AnswerMedia failed (the answer names no codec we offered): the worker dropped the
    media, the session is forgotten and the call hung up."""
    h, phone = Harness(), Phone()
    delayed_offer_call(h, phone)
    h.feed(phone.request("ACK", cseq=1, body=OFFER.format(dir="a=sendrecv")))
    (answer_media,) = h.actions()
    assert isinstance(answer_media, AnswerMedia)
    h.control.calls[answer_media.call].session = None  # as runtime/sip_listener.py does on the RpcError
    h.control.hang_up(h.now, answer_media.call, "media: the far end's answer has no audio stream we can use")
    (bye,) = h.drain()
    assert isinstance(bye, Request) and bye.method == "BYE" and bye.to().tag == "alice1"
    assert h.actions() == [] and h.control.calls == {}  # no media left to close, nothing kept


def test_a_delayed_offer_without_ack_is_ended_with_bye() -> None:
    h, phone = Harness(), Phone()
    delayed_offer_call(h, phone)
    sent = h.advance(40.0)
    assert any(isinstance(m, Request) and m.method == "BYE" for m in sent)
    assert any(isinstance(a, CloseMedia) for a in h.actions()) and h.control.calls == {}


def test_a_cancelled_delayed_offer_closes_the_media_made_for_it() -> None:
    h, phone = Harness(), Phone()
    branch = new_branch()
    h.feed(phone.request("INVITE", branch=branch))
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    assert sorted(statuses(h.feed(phone.request("CANCEL", cseq=1, branch=branch)))) == [200, 487]
    h.control.media_opened(h.now, open_media.call, 5, ANSWER)
    assert h.drain() == []
    (close,) = h.actions()
    assert isinstance(close, CloseMedia) and close.session == 5


def reinvite_without_sdp(h: Harness, phone: Phone, offer: str) -> Response:
    h.feed(phone.request("INVITE"))
    (reoffer,) = h.actions()
    assert isinstance(reoffer, ReofferMedia) and reoffer.session == 77
    h.control.update_answered(h.now, reoffer.call, offer)
    (ok,) = h.drain()
    assert isinstance(ok, Response) and ok.status == 200 and ok.body.decode() == offer
    assert ok.headers.get("Content-Type") == "application/sdp"
    return ok


def test_a_reinvite_without_sdp_gets_our_offer_and_the_ack_answers_it() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    assert h.actions() == []  # an offer-in-INVITE call's ACK has no answer to apply
    reinvite_without_sdp(h, phone, ANSWER)
    h.feed(phone.request("ACK", cseq=2, body=OFFER.format(dir="a=sendonly")))
    (answer_media,) = h.actions()
    assert isinstance(answer_media, AnswerMedia) and answer_media.answer == OFFER.format(dir="a=sendonly")
    # The next offerless re-INVITE whose ACK has no answer (a refresh): the session stays, no BYE.
    reinvite_without_sdp(h, phone, ANSWER)
    assert h.feed(phone.request("ACK", cseq=3)) == []
    assert h.actions() == [] and h.control.calls["c1;alice1"].state == "confirmed"
    assert h.control.counters["ack_without_answer"] == 1


def test_a_reinvite_without_sdp_while_one_is_pending_gets_491() -> None:
    h, phone = Harness(), Phone()
    answered_call(h, phone)
    h.feed(phone.request("ACK", cseq=1))
    h.feed(phone.request("INVITE"))
    assert [type(a) for a in h.actions()] == [ReofferMedia]
    assert statuses(h.feed(phone.request("INVITE"))) == [100, 491]  # s14.2


def test_a_refresh_answered_408_or_481_ends_the_call_with_bye() -> None:
    """RFC 4028 s10: the refresh's transaction ends in 408 or 481: BYE, media closed."""
    for status in (408, 481):
        h, phone = Harness(), Phone()
        answered_call(h, phone, {"Session-Expires": "90;refresher=uas", "Allow": "INVITE, ACK, BYE, UPDATE"})
        h.feed(phone.request("ACK", cseq=1))
        (update,) = {u.top_via().branch: u for u in h.advance(45.0) if isinstance(u, Request)}.values()
        assert update.method == "UPDATE"
        sent = answer(h, update, status)
        byes = [m for m in sent if isinstance(m, Request) and m.method == "BYE"]
        assert len(byes) == 1 and f"answered {status}" in (byes[0].headers.get("Reason") or ""), status
        assert h.control.counters["session_timer_expired"] == 1 and h.control.calls == {}
        (close,) = h.actions()
        assert isinstance(close, CloseMedia) and close.session == 77


def test_a_reinvite_refresh_answered_481_ends_the_call_with_bye() -> None:
    h, phone = Harness(), Phone()
    h.control.min_se = 20
    answered_call(h, phone, {"Session-Expires": "40;refresher=uas"})
    h.feed(phone.request("ACK", cseq=1))
    (reinvite,) = {m.top_via().branch: m for m in h.advance(20.0) if isinstance(m, Request)}.values()
    assert reinvite.method == "INVITE"
    sent = answer(h, reinvite, 481)
    assert [m.method for m in sent if isinstance(m, Request)] == ["ACK", "BYE"]  # s17.1.1.3 ACK, then BYE
    assert h.control.calls == {}


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["application/sdp", "application/SDP; charset=x", "text/plain", ""]))
def test_any_ack_to_a_delayed_offer_is_taken_as_the_answer_or_ends_the_call(body: bytes, content_type: str) -> None:
    """Whatever the ACK of a delayed offer carries: an SDP body goes to the media side as the answer
    (which may refuse it: then BYE); anything else ends the call with BYE at once. Never a crash."""
    h, phone = Harness(), Phone()
    delayed_offer_call(h, phone)
    ack = phone.request("ACK", cseq=1)
    ack.body = body
    if content_type:
        ack.headers.add("Content-Type", content_type)
    sent = h.feed(ack)
    actions = h.actions()
    if body and content_type.lower().startswith("application/sdp"):
        assert sent == [] and [type(a) for a in actions] == [AnswerMedia]
        assert h.control.calls["c1;alice1"].state == "confirmed"
    else:
        assert [m.method for m in sent if isinstance(m, Request)] == ["BYE"]
        assert [type(a) for a in actions] == [CloseMedia] and h.control.calls == {}


def test_our_refresh_reinvite_carries_the_sdp_the_media_side_gave_after_the_acks_answer() -> None:
    """A delayed offer: our 200 offered every codec; once the ACK's answer picked one, the media side
    says our SDP is that codec alone (answer_applied), and our refresh re-INVITE carries it."""
    h, phone = Harness(), Phone()
    h.control.min_se = 20
    sent = h.feed(phone.request("INVITE", headers={"Session-Expires": "40;refresher=uas"}))
    assert statuses(sent) == [100, 180]
    (open_media,) = h.actions()
    assert isinstance(open_media, OpenMedia)
    h.control.media_opened(h.now, open_media.call, 77, "full offer")
    (ok,) = h.drain()
    phone.to_tag = ok.to().tag
    h.feed(phone.request("ACK", cseq=1, body=OFFER.format(dir="a=sendrecv")))
    (answer_media,) = h.actions()
    assert isinstance(answer_media, AnswerMedia)
    h.control.answer_applied(answer_media.call, "PCMU only, version 2")
    (reinvite,) = {m.top_via().branch: m for m in h.advance(20.0) if isinstance(m, Request)}.values()
    assert reinvite.method == "INVITE" and reinvite.body == b"PCMU only, version 2"
