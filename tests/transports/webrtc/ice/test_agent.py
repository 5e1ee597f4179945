"""ICE-lite agent and client tests, driven on a virtual clock (no sockets, no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import LocalProtocolError
from trackmesh.net import Address
from trackmesh.transports.webrtc.ice import stun
from trackmesh.transports.webrtc.ice.agent import (
    DEFAULT_CONSENT_TIMEOUT,
    IceConnected,
    IceCredentials,
    IceDisconnected,
    IceEvent,
    IceLiteAgent,
    IceLiteClient,
    IceSelectedAddressChanged,
    IceState,
    generate_credentials,
)
from trackmesh.transports.webrtc.ice.stun import StunClass

BROWSER = ("192.0.2.10", 50000)
BROWSER_WIFI = ("198.51.100.7", 40000)
BROWSER_V6 = ("2001:db8::10", 50001)


def state_now(agent: IceLiteAgent) -> IceState:
    """``agent.state``, read afresh: mypy keeps an attribute narrowed by an earlier assert across
    the calls that change it."""
    return agent.state


def drain(agent: IceLiteAgent) -> list[IceEvent]:
    events: list[IceEvent] = []
    while (event := agent.poll_event()) is not None:
        events.append(event)
    return events


def make_pair(consent_timeout: float = 5.0) -> tuple[IceLiteAgent, IceLiteClient]:
    client_creds = generate_credentials()
    agent = IceLiteAgent(remote_ufrag=client_creds.ufrag, consent_timeout=consent_timeout)
    client = IceLiteClient(
        local=client_creds,
        remote_ufrag=agent.local_credentials.ufrag,
        remote_pwd=agent.local_credentials.pwd,
    )
    return agent, client


def exchange(
    agent: IceLiteAgent, client: IceLiteClient, now: float, addr: Address, *, use_candidate: bool = True
) -> bytes | None:
    response = agent.handle_stun(now, client.create_check(now, use_candidate=use_candidate), addr)
    if response is not None:
        result = client.handle_response(now + 0.01, response)
        assert result is not None
    return response


class TestCredentials:
    def test_generated_credentials_follow_rfc_8445_s5_3(self) -> None:
        seen = set()
        for _ in range(50):
            creds = generate_credentials()
            assert len(creds.ufrag) >= 4
            assert len(creds.pwd) >= 22
            allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
            assert set(creds.ufrag) <= allowed
            assert set(creds.pwd) <= allowed
            seen.add(creds.ufrag)
        assert len(seen) == 50  # random, not constant

    @pytest.mark.parametrize(("ufrag", "pwd"), [("abc", "x" * 22), ("abcd", "x" * 21), ("ab:d", "x" * 22)])
    def test_invalid_credentials_rejected(self, ufrag: str, pwd: str) -> None:
        with pytest.raises(LocalProtocolError):
            IceCredentials(ufrag, pwd)

    def test_bad_consent_timeout(self) -> None:
        with pytest.raises(LocalProtocolError):
            IceLiteAgent(consent_timeout=0)
        assert IceLiteAgent().consent_timeout == DEFAULT_CONSENT_TIMEOUT == 30.0


class TestExchange:
    def test_nomination_connects(self) -> None:
        agent, client = make_pair()
        assert agent.state is IceState.NEW
        assert agent.next_deadline() is None

        # A check without USE-CANDIDATE succeeds but does not select anything.
        resp = agent.handle_stun(0.0, client.create_check(0.0, use_candidate=False), BROWSER)
        assert resp is not None
        result = client.handle_response(0.02, resp)
        assert result is not None and result.ok
        assert result.mapped_address == BROWSER
        assert result.rtt == pytest.approx(0.02)
        assert agent.selected_address is None
        assert drain(agent) == []

        resp = agent.handle_stun(1.0, client.create_check(1.0), BROWSER)
        assert resp is not None
        msg = stun.parse(resp)
        assert msg.message_class is StunClass.SUCCESS
        assert stun.verify_integrity(resp, agent.local_credentials.pwd.encode())
        assert stun.verify_fingerprint(resp)
        assert client.handle_response(1.01, resp) is not None
        assert state_now(agent) is IceState.CONNECTED
        assert agent.selected_address == BROWSER
        assert drain(agent) == [IceConnected(BROWSER)]
        assert agent.next_deadline() == 1.0 + 5.0
        assert agent.counters["responses_sent"] == 2
        assert client.counters["success"] == 2
        assert client.pending == 0

    def test_renomination_changes_selected_address(self) -> None:
        agent, client = make_pair()
        exchange(agent, client, 0.0, BROWSER)
        exchange(agent, client, 1.0, BROWSER)  # same address: no new event
        exchange(agent, client, 2.0, BROWSER_V6)
        assert agent.selected_address == BROWSER_V6
        assert drain(agent) == [IceConnected(BROWSER), IceSelectedAddressChanged(BROWSER_V6)]

    def test_consent_timeout(self) -> None:
        agent, client = make_pair(consent_timeout=5.0)
        exchange(agent, client, 0.0, BROWSER)
        drain(agent)
        # Keepalive checks (no USE-CANDIDATE) refresh consent.
        for t in (4.0, 8.0, 12.0):
            agent.handle_timeout(t)
            exchange(agent, client, t, BROWSER, use_candidate=False)
            assert agent.state is IceState.CONNECTED
        assert agent.next_deadline() == 17.0
        agent.handle_timeout(16.99)
        assert agent.state is IceState.CONNECTED
        agent.handle_timeout(17.0)
        assert state_now(agent) is IceState.DISCONNECTED
        assert agent.selected_address is None
        assert agent.next_deadline() is None
        assert drain(agent) == [IceDisconnected("consent expired")]
        # Late checks are not answered: only an ICE restart revives the session.
        assert agent.handle_stun(18.0, client.create_check(18.0), BROWSER) is None
        assert agent.counters["after_disconnect"] == 1

    def test_indications_from_the_selected_pair_are_keepalives(self) -> None:
        # libnice (GStreamer webrtcbin) keeps a nominated pair alive with Binding indications
        # every ~25 s and sends no more checks (RFC 8445 s11 allows either).
        agent, client = make_pair(consent_timeout=30.0)
        exchange(agent, client, 0.0, BROWSER)
        drain(agent)
        indication = stun.build_message(stun.METHOD_BINDING, StunClass.INDICATION, b"k" * 12, [])
        for t in (25.0, 50.0, 75.0, 100.0):
            agent.handle_timeout(t)
            assert agent.handle_stun(t, indication, BROWSER) is None  # never answered
            assert agent.state is IceState.CONNECTED
        assert agent.counters["keepalives"] == 4
        # From another address, or without a valid FINGERPRINT, an indication proves nothing.
        assert agent.handle_stun(110.0, indication, BROWSER_WIFI) is None
        assert agent.handle_stun(111.0, indication[:-8], BROWSER) is None
        assert agent.counters["keepalives"] == 4
        assert agent.next_deadline() == 130.0
        agent.handle_timeout(130.0)
        assert drain(agent) == [IceDisconnected("consent expired")]

    def test_indication_before_nomination_starts_no_timer(self) -> None:
        agent, _ = make_pair()
        indication = stun.build_message(stun.METHOD_BINDING, StunClass.INDICATION, b"k" * 12, [])
        assert agent.handle_stun(0.0, indication, BROWSER) is None
        assert agent.next_deadline() is None
        assert agent.counters["keepalives"] == 0

    def test_authenticated_media_on_the_selected_pair_keeps_it_alive(self) -> None:
        agent, client = make_pair(consent_timeout=30.0)
        exchange(agent, client, 0.0, BROWSER)
        drain(agent)
        t = 0.0
        while t < 90.0:  # 90 s of media, no check, no indication
            t += 0.02
            agent.note_activity(t, BROWSER)
            agent.handle_timeout(t)
        assert agent.state is IceState.CONNECTED and drain(agent) == []
        # Media from another address does not refresh the selected pair.
        agent.note_activity(100.0, BROWSER_WIFI)
        assert agent.next_deadline() == pytest.approx(t + 30.0)
        # Silence: the pair expires 30 s after the last packet, exactly.
        agent.handle_timeout(t + 29.99)
        assert agent.state is IceState.CONNECTED
        agent.handle_timeout(t + 30.0)
        assert state_now(agent) is IceState.DISCONNECTED
        assert drain(agent) == [IceDisconnected("consent expired")]
        # Expired is final: media does not revive the agent, only an ICE restart does.
        agent.note_activity(t + 31.0, BROWSER)
        assert agent.next_deadline() is None and state_now(agent) is IceState.DISCONNECTED

    def test_activity_before_nomination_or_after_close_is_ignored(self) -> None:
        agent, client = make_pair(consent_timeout=2.0)
        agent.note_activity(0.0, BROWSER)
        assert agent.next_deadline() is None
        exchange(agent, client, 0.0, BROWSER, use_candidate=False)  # checked, not nominated
        agent.note_activity(1.5, BROWSER)
        assert agent.next_deadline() == 2.0  # only checks count before a nomination
        exchange(agent, client, 1.8, BROWSER)
        agent.close()
        agent.note_activity(2.0, BROWSER)
        assert agent.next_deadline() is None

    def test_timeout_before_nomination(self) -> None:
        agent, client = make_pair(consent_timeout=2.0)
        exchange(agent, client, 0.0, BROWSER, use_candidate=False)
        agent.handle_timeout(2.5)
        assert agent.state is IceState.DISCONNECTED
        assert drain(agent) == [IceDisconnected("consent expired before nomination")]

    def test_restart_keeps_old_credentials_until_new_ones_used(self) -> None:
        agent, client = make_pair()
        old = agent.local_credentials
        exchange(agent, client, 0.0, BROWSER)
        drain(agent)

        new_client_creds = generate_credentials()
        new = agent.restart(new_client_creds.ufrag, new_client_creds.pwd)
        assert new != old and new == agent.local_credentials
        assert agent.previous_credentials == old
        assert agent.remote_ufrag == new_client_creds.ufrag

        # The browser has not applied the new answer yet: old checks still work, media stays up.
        resp = exchange(agent, client, 1.0, BROWSER, use_candidate=False)
        assert resp is not None and stun.verify_integrity(resp, old.pwd.encode())
        assert agent.state is IceState.CONNECTED

        # First check with the new credentials (from a new network path) succeeds...
        new_client = IceLiteClient(local=new_client_creds, remote_ufrag=new.ufrag, remote_pwd=new.pwd)
        resp = exchange(agent, new_client, 2.0, BROWSER_WIFI)
        assert resp is not None and stun.verify_integrity(resp, new.pwd.encode())
        assert agent.selected_address == BROWSER_WIFI
        assert drain(agent) == [IceSelectedAddressChanged(BROWSER_WIFI)]
        # ...and retires the old credentials.
        assert agent.previous_credentials is None
        assert agent.handle_stun(3.0, client.create_check(3.0), BROWSER) is None
        assert agent.counters["unknown_ufrag"] == 1

    def test_double_restart_keeps_the_credentials_in_use(self) -> None:
        agent, client = make_pair()
        old = agent.local_credentials
        exchange(agent, client, 0.0, BROWSER)
        agent.restart("rem2", None)
        third = agent.restart("rem3", None)
        assert agent.previous_credentials == old  # not the never-used intermediate ones
        assert exchange(agent, client, 1.0, BROWSER) is not None
        assert agent.local_credentials == third

    def test_restart_after_disconnect_reconnects(self) -> None:
        agent, client = make_pair(consent_timeout=1.0)
        exchange(agent, client, 0.0, BROWSER)
        agent.handle_timeout(1.0)
        assert agent.state is IceState.DISCONNECTED
        drain(agent)
        creds = generate_credentials()
        new = agent.restart(creds.ufrag, creds.pwd)
        assert state_now(agent) is IceState.NEW
        new_client = IceLiteClient(local=creds, remote_ufrag=new.ufrag, remote_pwd=new.pwd)
        exchange(agent, new_client, 10.0, BROWSER_WIFI)
        assert state_now(agent) is IceState.CONNECTED
        assert drain(agent) == [IceConnected(BROWSER_WIFI)]

    def test_close(self) -> None:
        agent, client = make_pair()
        exchange(agent, client, 0.0, BROWSER)
        drain(agent)
        agent.close()
        agent.close()
        assert drain(agent) == [IceDisconnected("closed")]
        assert agent.next_deadline() is None
        assert agent.handle_stun(1.0, client.create_check(1.0), BROWSER) is None
        assert agent.counters["after_close"] == 1
        with pytest.raises(LocalProtocolError):
            agent.restart("abcd")


class TestRejections:
    def test_bad_integrity_answered_401_and_counted(self) -> None:
        agent, client = make_pair()
        client.remote_pwd = "W" * 24  # wrong password
        request = client.create_check(0.0)
        resp = agent.handle_stun(0.0, request, BROWSER)
        assert resp is not None
        msg = stun.parse(resp)
        assert msg.message_class is StunClass.ERROR
        assert msg.error_code == 401
        assert msg.integrity_offset is None  # RFC 8489 s9.1.3: no MI on a 401
        assert agent.counters["bad_integrity"] == 1
        assert agent.selected_address is None
        assert agent.next_deadline() is None  # no consent from an unauthenticated check
        result = client.handle_response(0.1, resp)
        assert result is not None and result.error_code == 401 and not result.ok

    def test_wrong_local_ufrag_dropped(self) -> None:
        agent, client = make_pair()
        client.remote_ufrag = "nope"
        assert agent.handle_stun(0.0, client.create_check(0.0), BROWSER) is None
        assert agent.counters["unknown_ufrag"] == 1
        assert drain(agent) == []

    def test_wrong_remote_ufrag_dropped(self) -> None:
        agent, client = make_pair()
        agent.set_remote_credentials("someoneelse")
        assert agent.handle_stun(0.0, client.create_check(0.0), BROWSER) is None
        assert agent.counters["remote_ufrag_mismatch"] == 1

    def test_unknown_remote_ufrag_accepted(self) -> None:
        creds = generate_credentials()
        agent = IceLiteAgent()  # offer's ufrag not yet known
        client = IceLiteClient(
            local=creds, remote_ufrag=agent.local_credentials.ufrag, remote_pwd=agent.local_credentials.pwd
        )
        assert exchange(agent, client, 0.0, BROWSER) is not None
        assert agent.selected_address == BROWSER

    def test_missing_credentials_400(self) -> None:
        agent, _ = make_pair()
        request = stun.build_message(stun.METHOD_BINDING, StunClass.REQUEST, b"x" * 12, [])
        resp = agent.handle_stun(0.0, request, BROWSER)
        assert resp is not None and stun.parse(resp).error_code == 400
        assert agent.counters["missing_credentials"] == 1

    def test_missing_fingerprint_dropped(self) -> None:
        agent, _ = make_pair()
        request = stun.build_message(stun.METHOD_BINDING, StunClass.REQUEST, b"x" * 12, [], fingerprint=False)
        assert agent.handle_stun(0.0, request, BROWSER) is None
        assert agent.counters["bad_fingerprint"] == 1

    def test_role_conflict_487(self) -> None:
        agent, client = make_pair()
        creds = agent.local_credentials
        request = stun.build_binding_request(
            b"y" * 12,
            f"{creds.ufrag}:{client.local.ufrag}",
            creds.pwd.encode(),
            priority=1,
            ice_controlled=42,
        )
        resp = agent.handle_stun(0.0, request, BROWSER)
        assert resp is not None
        assert stun.parse(resp).error_code == 487
        assert stun.verify_integrity(resp, creds.pwd.encode())
        assert agent.counters["role_conflict"] == 1

    def test_unknown_required_attribute_420(self) -> None:
        agent, client = make_pair()
        creds = agent.local_credentials
        attrs = [
            (stun.ATTR_USERNAME, f"{creds.ufrag}:{client.local.ufrag}".encode()),
            (stun.ATTR_ICE_CONTROLLING, bytes(8)),
            (0x0077, b"????"),
        ]
        request = stun.build_message(
            stun.METHOD_BINDING, StunClass.REQUEST, b"z" * 12, attrs, integrity_key=creds.pwd.encode()
        )
        resp = agent.handle_stun(0.0, request, BROWSER)
        assert resp is not None
        msg = stun.parse(resp)
        assert msg.error_code == 420
        assert msg.get(stun.ATTR_UNKNOWN_ATTRIBUTES) == b"\x00\x77"

    def test_non_requests_ignored(self) -> None:
        agent, _ = make_pair()
        indication = stun.build_message(stun.METHOD_BINDING, StunClass.INDICATION, b"i" * 12, [])
        assert agent.handle_stun(0.0, indication, BROWSER) is None
        assert agent.handle_stun(0.0, b"\x00\x01garbage", BROWSER) is None
        assert agent.counters["not_binding_request"] == 1
        assert agent.counters["malformed"] == 1


class TestClient:
    def test_unmatched_and_forged_responses(self) -> None:
        agent, client = make_pair()
        request = client.create_check(0.0)
        resp = agent.handle_stun(0.0, request, BROWSER)
        assert resp is not None
        forged = stun.build_binding_success(stun.parse(request).transaction_id, BROWSER, b"bad key")
        assert client.handle_response(0.1, forged) is None
        assert client.counters["bad_integrity"] == 1
        assert client.handle_response(0.1, resp) is not None
        assert client.handle_response(0.2, resp) is None  # replay: transaction already done
        assert client.counters["unmatched"] == 1
        assert client.handle_response(0.2, b"junk") is None
        assert client.counters["malformed"] == 1

    def test_transaction_timeout(self) -> None:
        _, client = make_pair()
        client.transaction_timeout = 2.0
        client.create_check(0.0)
        client.create_check(1.0)
        assert client.next_deadline() == 2.0
        client.handle_timeout(2.0)
        assert client.pending == 1
        assert client.counters["timeout"] == 1
        client.handle_timeout(3.0)
        assert client.pending == 0
        assert client.next_deadline() is None


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_agent_random_bytes_never_raise(data: bytes) -> None:
    agent, _ = make_pair()
    assert agent.handle_stun(0.0, data, BROWSER) is None or stun.is_stun(data)
    assert agent.selected_address is None
    assert sum(agent.counters.values()) >= 1


@given(st.binary(min_size=0, max_size=80))
def test_agent_random_attribute_body(body: bytes) -> None:
    # A valid header with random attributes: must not raise, and never nominates.
    agent, _ = make_pair()
    body = body[: len(body) & ~3]
    data = stun._HEADER.pack(0x0001, len(body), stun.MAGIC_COOKIE, b"q" * 12) + body
    agent.handle_stun(0.0, data, BROWSER)
    assert agent.selected_address is None
    assert drain(agent) == []
