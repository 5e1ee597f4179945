"""RFC 3261 s17 transactions on a virtual clock: every timer, matching, 2xx-until-ACK."""

from __future__ import annotations

import pytest

from trackmesh.errors import LocalProtocolError
from trackmesh.transports.sip.message import Headers, Request, Response, make_response, new_branch
from trackmesh.transports.sip.parser import parse_message, serialize
from trackmesh.transports.sip.transaction import (
    TRANSITIONS,
    AckTimeout,
    Event,
    Kind,
    ParseFailed,
    RequestReceived,
    ResponseReceived,
    State,
    TimerValues,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
)

PEER = ("127.0.0.1", 5070)
ME = ("127.0.0.1", 5060)


def request(method: str, branch: str | None = None, cseq: int = 1, to_tag: str | None = None) -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch or new_branch()}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@example.com>;tag=a")
    h.add("To", "<sip:room@example.com>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", "call-1")
    h.add("CSeq", f"{cseq} {method}")
    return Request(method, "sip:room@example.com", h)


def drain(layer: TransactionLayer) -> tuple[list[Transmit], list[Event]]:
    tx: list[Transmit] = []
    ev: list[Event] = []
    while (t := layer.poll_transmit()) is not None:
        tx.append(t)
    while (e := layer.poll_event()) is not None:
        ev.append(e)
    return tx, ev


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Transmit | Event]]:
    """Advance the virtual clock deadline by deadline, recording what comes out when."""
    out: list[tuple[float, Transmit | Event]] = []
    while (d := layer.next_deadline()) is not None and d <= end:
        layer.handle_timeout(d)
        tx, ev = drain(layer)
        out.extend((d, x) for x in [*tx, *ev])
    return out


def sent_status(t: Transmit) -> int:
    m = parse_message(t.data)
    assert isinstance(m, Response)
    return m.status


# --- client transactions -------------------------------------------------------------------


def test_invite_client_timer_a_doubles_and_timer_b_times_out() -> None:
    layer = TransactionLayer()
    key = layer.send_request(0.0, request("INVITE"), PEER)
    tx, _ = drain(layer)
    assert len(tx) == 1
    out = run_until(layer, 100.0)
    resend_times = [t for t, x in out if isinstance(x, Transmit)]
    assert resend_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # A: T1, 2T1, 4T1, ... until B
    events = [x for _, x in out if not isinstance(x, Transmit)]
    assert events == [TransactionTimeout(key, Kind.INVITE_CLIENT), TransactionTerminated(key, Kind.INVITE_CLIENT)]
    assert out[-1][0] == 32.0  # B = 64*T1
    assert layer.transactions == {}


def test_invite_client_provisional_stops_retransmission_then_final_acks_and_timer_d() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(0.0, inv, PEER)
    drain(layer)
    layer.handle_response(0.2, make_response(inv, 180, to_tag="b"), PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], ResponseReceived) and ev[0].response.status == 180
    assert layer.transactions[key].state is State.PROCEEDING
    assert layer.next_deadline() is None  # A and B cancelled
    busy = make_response(inv, 486, to_tag="b")
    layer.handle_response(1.0, busy, PEER)
    tx, ev = drain(layer)
    ack = parse_message(tx[0].data)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.top_via().branch == inv.top_via().branch  # s17.1.1.3: same branch as the INVITE
    assert ack.to().tag == "b" and ack.cseq().seq == 1 and ack.uri == inv.uri
    assert [type(e) for e in ev] == [ResponseReceived]
    # A retransmitted 486 gets the ACK again and is not passed up.
    layer.handle_response(2.0, busy, PEER)
    tx, ev = drain(layer)
    assert [t.data for t in tx] == [serialize(ack)] and ev == []
    out = run_until(layer, 100.0)
    assert out == [(33.0, TransactionTerminated(key, Kind.INVITE_CLIENT))]  # D = 32 s after 1.0


def test_invite_client_2xx_terminates_and_retransmitted_2xx_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    key = layer.send_request(0.0, inv, PEER)
    drain(layer)
    ok = make_response(inv, 200, to_tag="b")
    layer.handle_response(0.1, ok, PEER)
    tx, ev = drain(layer)
    assert tx == []  # the TU ACKs a 2xx, not the transaction
    assert ev == [ResponseReceived(ok, PEER, key), TransactionTerminated(key, Kind.INVITE_CLIENT)]
    layer.handle_response(0.6, ok, PEER)
    _, ev = drain(layer)
    assert ev == [ResponseReceived(ok, PEER, None)]


def test_non_invite_client_timer_e_caps_at_t2_and_timer_f() -> None:
    layer = TransactionLayer()
    key = layer.send_request(0.0, request("OPTIONS"), PEER)
    drain(layer)
    out = run_until(layer, 100.0)
    times = [t for t, x in out if isinstance(x, Transmit)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]  # doubling, then T2 = 4
    assert [x for _, x in out if not isinstance(x, Transmit)] == [
        TransactionTimeout(key, Kind.NON_INVITE_CLIENT),
        TransactionTerminated(key, Kind.NON_INVITE_CLIENT),
    ]


def test_non_invite_client_proceeding_retransmits_at_t2_then_timer_k() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    key = layer.send_request(0.0, opt, PEER)
    drain(layer)
    layer.handle_response(0.1, make_response(opt, 100), PEER)
    drain(layer)
    out = run_until(layer, 9.0)
    assert [t for t, x in out if isinstance(x, Transmit)] == [0.5, 4.5, 8.5]  # E: first T1, then T2
    layer.handle_response(9.0, make_response(opt, 200, to_tag="x"), PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], ResponseReceived)
    assert layer.transactions[key].state is State.COMPLETED
    assert run_until(layer, 100.0) == [(14.0, TransactionTerminated(key, Kind.NON_INVITE_CLIENT))]  # K = T4


def test_reliable_transport_sends_no_retransmissions_and_zero_waits() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    key = layer.send_request(0.0, opt, PEER, reliable=True)
    drain(layer)
    assert layer.next_deadline() == 32.0  # only F
    layer.handle_response(1.0, make_response(opt, 200, to_tag="x"), PEER)
    _, ev = drain(layer)
    assert ev[-1] == TransactionTerminated(key, Kind.NON_INVITE_CLIENT)  # K = 0 on reliable
    assert layer.transactions == {}


# --- server transactions -------------------------------------------------------------------


def test_invite_server_sends_100_absorbs_retransmits_and_final_timers_g_h() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    tx, ev = drain(layer)
    assert [sent_status(t) for t in tx] == [100]
    assert isinstance(ev[0], RequestReceived) and ev[0].key is not None
    key = ev[0].key
    # A retransmitted INVITE gets the last provisional again, and the TU hears nothing.
    layer.handle_request(0.5, request("INVITE", branch=inv.top_via().branch), PEER)
    tx, ev = drain(layer)
    assert [sent_status(t) for t in tx] == [100] and ev == []
    layer.send_response(1.0, make_response(inv, 486, to_tag="s"))
    tx, _ = drain(layer)
    assert [sent_status(t) for t in tx] == [486]
    out = run_until(layer, 100.0)
    times = [t for t, x in out if isinstance(x, Transmit)]
    assert times == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]  # G: T1 doubling to T2
    assert out[-1] == (33.0, TransactionTerminated(key, Kind.INVITE_SERVER))  # H = 64*T1
    assert TransactionTimeout(key, Kind.INVITE_SERVER) in [x for _, x in out]


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], RequestReceived)
    key = ev[0].key
    assert key is not None
    layer.send_response(0.1, make_response(inv, 404, to_tag="s"))
    drain(layer)
    ack = request("ACK", branch=inv.top_via().branch, to_tag="s")
    layer.handle_request(0.3, ack, PEER)
    tx, ev = drain(layer)
    assert tx == [] and ev == []  # the ACK to a non-2xx stays inside the transaction
    assert layer.transactions[key].state is State.CONFIRMED
    assert run_until(layer, 100.0) == [(5.3, TransactionTerminated(key, Kind.INVITE_SERVER))]  # I = T4


def test_2xx_retransmitted_until_ack_then_timer_l() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], RequestReceived)
    key = ev[0].key
    assert key is not None
    ok = make_response(inv, 200, to_tag="s")
    layer.send_response(0.0, ok)
    drain(layer)
    assert layer.transactions[key].state is State.ACCEPTED
    out = run_until(layer, 3.6)
    assert [t for t, x in out if isinstance(x, Transmit)] == [0.5, 1.5, 3.5]  # s13.3.1.4
    assert all(sent_status(x) == 200 for _, x in out if isinstance(x, Transmit))
    # The INVITE retransmitted in Accepted is absorbed (RFC 6026 s7.1).
    layer.handle_request(3.7, request("INVITE", branch=inv.top_via().branch), PEER)
    assert drain(layer) == ([], [])
    ack = request("ACK", to_tag="s")  # a new branch: the ACK to a 2xx is its own transaction
    layer.handle_request(4.0, ack, PEER)
    _, ev = drain(layer)
    assert ev == [RequestReceived(ack, PEER, None)]
    out = run_until(layer, 100.0)
    assert out == [(32.0, TransactionTerminated(key, Kind.INVITE_SERVER))]  # L = 64*T1, no more 200s


def test_2xx_without_ack_is_reported_after_64_t1() -> None:
    layer = TransactionLayer(TimerValues(t1=0.1, t2=0.4, t4=0.5))
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    drain(layer)
    layer.send_response(0.0, make_response(inv, 200, to_tag="s"))
    drain(layer)
    out = run_until(layer, 10.0)
    sends = [t for t, x in out if isinstance(x, Transmit)]
    assert sends[:4] == pytest.approx([0.1, 0.3, 0.7, 1.1])  # capped at T2 = 0.4
    assert any(t == pytest.approx(6.4) and x == AckTimeout("call-1", 1) for t, x in out if isinstance(x, AckTimeout))


def test_non_invite_server_absorbs_then_resends_final_and_timer_j() -> None:
    layer = TransactionLayer()
    bye = request("BYE", to_tag="s", cseq=2)
    layer.handle_request(0.0, bye, PEER)
    tx, ev = drain(layer)
    assert tx == [] and len(ev) == 1  # no automatic 100 for non-INVITE
    assert isinstance(ev[0], RequestReceived)
    key = ev[0].key
    assert isinstance(key, tuple)
    layer.handle_request(0.2, bye, PEER)
    assert drain(layer) == ([], [])  # Trying: the retransmission is absorbed
    layer.send_response(0.3, make_response(bye, 100))
    drain(layer)
    layer.handle_request(0.4, bye, PEER)
    tx, _ = drain(layer)
    assert [sent_status(t) for t in tx] == [100]  # Proceeding: resend the provisional
    layer.send_response(0.5, make_response(bye, 200))
    drain(layer)
    layer.handle_request(0.6, bye, PEER)
    tx, _ = drain(layer)
    assert [sent_status(t) for t in tx] == [200]
    assert run_until(layer, 100.0) == [(32.5, TransactionTerminated(key, Kind.NON_INVITE_SERVER))]  # J


def test_cancel_is_its_own_transaction_and_finds_its_invite() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], RequestReceived)
    invite_key = ev[0].key
    cancel = request("CANCEL", branch=inv.top_via().branch)
    layer.handle_request(0.1, cancel, PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], RequestReceived) and ev[0].key != invite_key
    assert layer.invite_for_cancel(cancel) == invite_key
    layer.send_response(0.1, make_response(cancel, 200))
    layer.send_response(0.1, make_response(inv, 487, to_tag="s"))
    tx, _ = drain(layer)
    assert sorted(sent_status(t) for t in tx) == [200, 487]
    assert layer.invite_for_cancel(request("CANCEL")) is None


def test_rfc2543_requests_without_the_cookie_still_match() -> None:
    layer = TransactionLayer()
    old = request("OPTIONS", branch="oldstyle1")
    layer.handle_request(0.0, old, PEER)
    _, ev = drain(layer)
    assert len(ev) == 1
    layer.handle_request(0.1, request("OPTIONS", branch="oldstyle1"), PEER)
    assert drain(layer) == ([], [])
    layer.send_response(0.2, make_response(old, 200))
    tx, _ = drain(layer)
    assert [sent_status(t) for t in tx] == [200]


def test_responses_go_to_received_and_rport() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    inv.headers.set("Via", f"SIP/2.0/UDP 10.9.9.9:5070;rport;branch={new_branch()}")
    layer.handle_request(0.0, inv, ("127.0.0.1", 40123))
    tx, _ = drain(layer)
    assert tx[0].destination == ("127.0.0.1", 40123)
    resp = parse_message(tx[0].data)
    assert resp.top_via().params["received"] == "127.0.0.1" and resp.top_via().params["rport"] == "40123"


def test_bad_datagrams_are_counted_never_raised() -> None:
    layer = TransactionLayer()
    layer.handle_datagram(0.0, b"INVITE garbage\r\n\r\n", PEER)
    layer.handle_datagram(0.0, b"\r\n\r\n", PEER)  # keep-alive: ignored
    _, ev = drain(layer)
    assert len(ev) == 1 and isinstance(ev[0], ParseFailed) and ev[0].status == 400
    assert layer.parse_errors == 1
    layer.handle_datagram(0.0, serialize(make_response(request("OPTIONS"), 200)), PEER)  # stray response
    assert layer.absorbed == 1


def test_transport_error_terminates() -> None:
    layer = TransactionLayer()
    key = layer.send_request(0.0, request("INVITE"), PEER)
    drain(layer)
    layer.transport_error(0.1, key)
    _, ev = drain(layer)
    assert ev == [TransactionTerminated(key, Kind.INVITE_CLIENT, transport_error=True)]


def test_misuse_is_a_local_error() -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(0.0, request("ACK"), PEER)
    with pytest.raises(LocalProtocolError):
        layer.send_request(0.0, request("INVITE", branch="nocookie"), PEER)
    with pytest.raises(LocalProtocolError):
        layer.send_response(0.0, make_response(request("OPTIONS"), 200))
    opt = request("OPTIONS")
    layer.handle_request(0.0, opt, PEER)
    layer.send_response(0.0, make_response(opt, 200))
    with pytest.raises(LocalProtocolError, match="Completed"):
        layer.send_response(0.0, make_response(opt, 404))


def test_every_timer_appears_in_the_table() -> None:
    fired = {inp.value for (_, _, inp) in TRANSITIONS if inp.value in "ABDEFGHIJKL"}
    assert fired == set("ABDEFGHIJKL")


def test_malformed_requests_get_400_with_the_reason_at_their_source() -> None:
    layer = TransactionLayer()
    no_call_id = request("OPTIONS")
    no_call_id.headers.remove("Call-ID")
    spoofed = ("127.0.0.9", 7777)
    no_call_id.headers.set("Via", "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKx")  # never answered there
    layer.handle_datagram(0.0, serialize(no_call_id), spoofed)
    tx, ev = drain(layer)
    assert len(tx) == 1 and tx[0].destination == spoofed
    resp = parse_message(tx[0].data, validate=False)
    assert isinstance(resp, Response) and resp.status == 400 and "missing Call-ID" in resp.reason
    assert resp.to().tag is not None and resp.cseq().method == "OPTIONS"
    assert isinstance(ev[0], ParseFailed) and layer.rejected == 1
    wrong_version = serialize(request("OPTIONS")).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    layer.handle_datagram(0.0, wrong_version, PEER)
    tx, _ = drain(layer)
    version_reply = parse_message(tx[0].data)
    assert isinstance(version_reply, Response) and version_reply.status == 505
    for unanswerable in (request("ACK"), request("OPTIONS")):
        unanswerable.headers.remove("Call-ID")
        if unanswerable.method == "OPTIONS":
            unanswerable.headers.remove("Via")
        layer.handle_datagram(0.0, serialize(unanswerable), PEER)
        assert drain(layer)[0] == []
    assert layer.parse_errors == 4


def test_stream_requests_are_answered_on_their_connection() -> None:
    layer = TransactionLayer()
    opt = request("OPTIONS")
    opt.headers.set("Via", "SIP/2.0/TCP 10.1.1.1:5999;branch=z9hG4bKtcp")
    conn = ("127.0.0.1", 45000)
    layer.handle_request(0.0, opt, conn, reliable=True)
    drain(layer)
    layer.send_response(0.0, make_response(opt, 200, to_tag="t"))
    tx, ev = drain(layer)
    assert tx[0].destination == conn and tx[0].reliable
    assert ev[-1].__class__ is TransactionTerminated  # J = 0 on reliable transports
    assert opt.top_via().params["received"] == "127.0.0.1"


def test_2xx_over_a_stream_is_not_retransmitted_but_a_missing_ack_is_reported() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER, reliable=True)
    drain(layer)
    layer.send_response(0.0, make_response(inv, 200, to_tag="s"))
    drain(layer)
    out = run_until(layer, 100.0)
    assert not [x for _, x in out if isinstance(x, Transmit)]
    assert (32.0, AckTimeout("call-1", 1)) in out


def test_merged_request_from_a_forking_proxy_gets_482() -> None:
    layer = TransactionLayer()
    first = request("INVITE")
    layer.handle_request(0.0, first, PEER)
    _, ev = drain(layer)
    assert len(ev) == 1
    copy = request("INVITE")  # same From tag, Call-ID and CSeq, another branch
    layer.handle_request(0.1, copy, ("127.0.0.1", 5080))
    tx, ev = drain(layer)
    assert [sent_status(t) for t in tx] == [482] and ev == [] and layer.merged == 1
    # Once the first transaction is gone, the same identifiers start a new request.
    layer.send_response(0.2, make_response(first, 404, to_tag="x"))
    run_until(layer, 100.0)
    assert layer._merge_index == {}


def test_guard_answers_500_when_the_tu_never_does() -> None:
    layer = TransactionLayer()
    inv = request("INVITE")
    layer.handle_request(0.0, inv, PEER)
    _, ev = drain(layer)
    assert isinstance(ev[0], RequestReceived)
    key = ev[0].key
    assert key is not None
    layer.send_response(100.0, make_response(inv, 180, to_tag="s"))  # ringing restarts the guard
    drain(layer)
    out = run_until(layer, 280.0)
    assert next((t, sent_status(x)) for t, x in out if isinstance(x, Transmit)) == (280.0, 500)
    assert (280.0, TransactionTimeout(key, Kind.INVITE_SERVER)) in out
    assert layer.transactions[key].state is State.COMPLETED and layer.guard_rejects == 1
    layer = TransactionLayer()
    layer.handle_request(300.0, request("OPTIONS"), PEER)
    drain(layer)
    out = run_until(layer, 332.0)
    assert [(t, sent_status(x)) for t, x in out if isinstance(x, Transmit)] == [(332.0, 500)]
