"""Registering to an upstream account (transports/sip/registration.py) on a virtual clock: the
registrar is played by hand-built responses checked with our own DigestServer; our REGISTERs are
parsed back from the transaction layer's transmits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.transports.sip.digest import DigestServer, Verdict, compute_ha1, parse_credentials
from trackmesh.transports.sip.message import Request, make_response
from trackmesh.transports.sip.parser import parse_message
from trackmesh.transports.sip.registration import (
    RETRY_AFTER,
    UpstreamAccount,
    UpstreamRegistration,
    parse_upstream_account,
)
from trackmesh.transports.sip.transaction import TransactionLayer, TransactionTerminated

REGISTRAR = ("127.0.0.1", 5070)
ACCOUNT = UpstreamAccount("trunk1", "s3cret", "127.0.0.1", 5070, "lobby", 120)
CONTACT_USER = "tmr-0123456789abcdef"


class Registrar:
    def __init__(self, account: UpstreamAccount = ACCOUNT) -> None:
        self.layer = TransactionLayer()
        self.reg = UpstreamRegistration(self.layer, account, REGISTRAR, CONTACT_USER, "127.0.0.1:5060")
        self.now = 0.0
        self.digest = DigestServer(b"k" * 32, "upstream", algorithms=("SHA-256", "MD5"))

    def sent(self) -> list[Request]:
        while (ev := self.layer.poll_event()) is not None:
            mine = self.reg.handle_event(self.now, ev)
            assert mine or isinstance(ev, TransactionTerminated), ev  # the end of an answered one: CallControl's
        out = []
        while (tx := self.layer.poll_transmit()) is not None:
            assert tx.destination == REGISTRAR
            msg = parse_message(tx.data)
            assert isinstance(msg, Request) and msg.method == "REGISTER"
            out.append(msg)
        return out

    def respond(self, req: Request, status: int, headers: list[tuple[str, str]] | None = None) -> list[Request]:
        resp = make_response(req, status, to_tag="reg1")
        for name, value in headers or []:
            resp.headers.add(name, value)
        self.layer.handle_response(self.now, resp, REGISTRAR)
        return self.sent()

    def tick(self, to: float) -> list[Request]:
        self.now = to
        self.layer.handle_timeout(to)
        self.reg.handle_timeout(to)
        return self.sent()

    def challenge(self, req: Request, *, stale: bool = False) -> list[Request]:
        return self.respond(req, 401, [("WWW-Authenticate", v) for v in self.digest.challenges(self.now, stale=stale)])

    def verdict(self, req: Request) -> Verdict:
        creds = parse_credentials(req.headers.get("Authorization") or "")
        assert creds.username == "trunk1"
        ha1 = compute_ha1(creds.algorithm, "trunk1", "upstream", "s3cret")
        return self.digest.check(self.now, "REGISTER", req.uri, creds, ha1)


def test_registers_answers_the_challenge_and_refreshes_at_half_the_granted_time() -> None:
    r = Registrar()
    r.reg.start(r.now)
    (first,) = r.sent()
    assert first.uri == "sip:127.0.0.1:5070"  # s10.2: the registrar's domain, no user part
    assert first.to().uri == first.from_().uri == "sip:trunk1@127.0.0.1:5070"
    assert first.headers.get("Contact") == f"<sip:{CONTACT_USER}@127.0.0.1:5060>"
    assert first.headers.get("Expires") == "120" and first.headers.get("Authorization") is None
    (second,) = r.challenge(first)
    assert r.verdict(second) is Verdict.OK  # SHA-256 chosen, the registrar's own check passes
    assert second.call_id() == first.call_id() and second.cseq().seq == first.cseq().seq + 1
    # The registrar shortens the binding to 60 s in our Contact (s10.2.4); other bindings are listed too.
    assert r.respond(second, 200, [("Contact", "<sip:other@10.0.0.9>;expires=3000"),
                                   ("Contact", f"<sip:{CONTACT_USER}@127.0.0.1:5060>;expires=60")]) == []  # fmt: skip
    assert r.reg.registered and r.reg.granted == 60 and r.reg.next_deadline() == 30.0
    assert r.tick(29.9) == []
    (refresh,) = r.tick(30.0)
    assert refresh.call_id() == first.call_id() and refresh.cseq().seq == second.cseq().seq + 1
    assert r.respond(refresh, 200, [("Expires", "90")]) == []  # no Contact expires: the header's
    assert r.reg.granted == 90 and r.reg.next_deadline() == 75.0
    assert r.reg.counters == {"sent": 3, "ok": 2, "failed": 0, "challenged": 1}


def test_a_second_challenge_is_answered_only_when_stale_then_wrong_credentials_fail_and_retry() -> None:
    r = Registrar()
    r.reg.start(r.now)
    (first,) = r.sent()
    (second,) = r.challenge(first)
    (third,) = r.challenge(second, stale=True)  # our nonce aged out: answer the new one
    assert r.verdict(third) is Verdict.OK
    assert r.challenge(third) == []  # a fresh challenge again: the password is wrong, stop
    assert not r.reg.registered and r.reg.last_status == 401 and r.reg.counters["failed"] == 1
    assert r.reg.next_deadline() == RETRY_AFTER
    (again,) = r.tick(RETRY_AFTER)
    assert again.headers.get("Authorization") is None
    assert r.respond(again, 503, [("Retry-After", "7")]) == []
    assert r.reg.next_deadline() == RETRY_AFTER + 7


def test_no_answer_is_timer_f_then_a_retry_and_stop_removes_the_binding() -> None:
    r = Registrar()
    r.reg.start(r.now)
    (first,) = r.sent()
    retransmits = []
    t = 0.0
    while r.reg.last_status is None and t < 40:
        t += 0.25
        retransmits += r.tick(t)
    assert r.reg.last_status == 408 and len(retransmits) >= 5  # Timer E, then F (32 s)
    assert all(m.cseq().seq == first.cseq().seq for m in retransmits)
    (retry,) = r.tick(r.reg.next_deadline() or 0.0)
    assert r.respond(retry, 200) == [] and r.reg.registered and r.reg.granted == 120
    r.reg.stop(r.now)
    (removal,) = r.sent()
    assert removal.headers.get("Expires") == "0" and r.reg.next_deadline() is None
    assert r.respond(removal, 200) == [] and not r.reg.registered
    assert r.tick(r.now + 1000) == []  # nothing more after the removal


def test_events_of_other_transactions_are_not_ours() -> None:
    r = Registrar()
    other = TransactionLayer()
    req = Request("OPTIONS", "sip:127.0.0.1:5070")
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother")
    for name, value in (("From", "<sip:a@h>;tag=1"), ("To", "<sip:b@h>"), ("Call-ID", "x"), ("CSeq", "1 OPTIONS")):
        req.headers.add(name, value)
    other.send_request(0.0, req, REGISTRAR)
    other.handle_response(0.0, make_response(req, 200, to_tag="t"), REGISTRAR)
    ev = other.poll_event()
    assert ev is not None and not r.reg.handle_event(0.0, ev)


def test_parse_upstream_account() -> None:
    a = parse_upstream_account("sip:trunk1:p@ss:w0rd@10.1.2.3:5080;room=lobby;expires=300")
    assert (a.user, a.password, a.host, a.port, a.room, a.expires) == (
        "trunk1",
        "p@ss:w0rd",
        "10.1.2.3",
        5080,
        "lobby",
        300,
    )
    assert "p@ss" not in repr(a)
    b = parse_upstream_account("sip:u:pw@127.0.0.1")
    assert (b.port, b.room, b.expires) == (5060, None, 600)
    for bad in ("sip:u@127.0.0.1", "sips:u:p@127.0.0.1", "sip:u:p@example.com", "sip:u:p@1.2.3.4;room=a/b",
                "sip:u:p@1.2.3.4;expires=5", "sip::p@1.2.3.4", "http://u:p@1.2.3.4", ""):  # fmt: skip
        with pytest.raises(ValueError) as exc:
            parse_upstream_account(bad)
        assert ":p@" not in str(exc.value)  # the password never echoed


@given(st.one_of(st.text(max_size=120), st.builds("sip:{}:{}@{}".format, st.text(max_size=20),
                                                     st.text(max_size=20), st.text(max_size=40))))  # fmt: skip
def test_parse_upstream_account_accepts_only_complete_accounts(text: str) -> None:
    try:
        a = parse_upstream_account(text)
    except ValueError:
        return  # the only error it raises (the config turns it into a ConfigError)
    assert a.user and a.password and 1 <= a.port <= 65535 and 10 <= a.expires <= 86400
    assert a.host.replace(".", "").isdigit() or a.host.startswith("[")
