"""Tests for RFC 7983 classification and shared-port peer routing."""

from __future__ import annotations

from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.errors import LocalProtocolError, ProtocolError
from trackmesh.net import Address
from trackmesh.transports.webrtc.demux import (
    DROP_REASONS,
    PacketKind,
    Routed,
    SharedPortDemux,
    classify,
    is_rtcp,
)
from trackmesh.transports.webrtc.ice import stun
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent, IceLiteClient, generate_credentials
from trackmesh.transports.webrtc.ice.stun import StunClass

K = TypeVar("K")

A1 = ("192.0.2.1", 1000)
A2 = ("192.0.2.2", 2000)
A3 = ("2001:db8::3", 3000)

RTP = bytes([0x80, 96]) + bytes(10)
RTCP_SR = bytes([0x80, 200]) + bytes(26)
DTLS_CLIENT_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10)


def check_for(ufrag: str, client_ufrag: str = "cli1", pwd: str = "p" * 22) -> bytes:
    return stun.build_binding_request(
        stun.new_transaction_id(), f"{ufrag}:{client_ufrag}", pwd.encode(), priority=1, ice_controlling=1
    )


class TestClassify:
    @pytest.mark.parametrize(
        ("byte", "kind"),
        [
            (0, PacketKind.STUN),
            (1, PacketKind.STUN),
            (3, PacketKind.STUN),
            (4, PacketKind.UNKNOWN),
            (16, PacketKind.UNKNOWN),  # ZRTP
            (19, PacketKind.UNKNOWN),
            (20, PacketKind.DTLS),
            (22, PacketKind.DTLS),
            (63, PacketKind.DTLS),
            (64, PacketKind.UNKNOWN),  # TURN channel
            (127, PacketKind.UNKNOWN),
            (128, PacketKind.RTP),
            (191, PacketKind.RTP),
            (192, PacketKind.UNKNOWN),
            (255, PacketKind.UNKNOWN),
        ],
    )
    def test_rfc_7983_ranges(self, byte: int, kind: PacketKind) -> None:
        assert classify(byte) is kind

    @given(st.integers(0, 255))
    def test_total(self, byte: int) -> None:
        assert isinstance(classify(byte), PacketKind)

    def test_is_rtcp(self) -> None:
        assert is_rtcp(RTCP_SR)
        assert is_rtcp(bytes([0x81, 201]))  # RR
        assert is_rtcp(bytes([0x81, 223]))
        assert not is_rtcp(bytes([0x81, 224]))
        assert not is_rtcp(RTP)
        assert not is_rtcp(bytes([0x80, 0xE0]))  # PT 96 with marker bit set
        assert not is_rtcp(b"\x80")


def key(routed: Routed[K] | None) -> K | None:
    return None if routed is None else routed[0]


class TestStunRouting:
    """STUN is parsed once, by the demultiplexer; the peer and its ICE agent take the parsed message."""

    def test_routed_by_the_ufrag_before_the_colon_with_the_parsed_message(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("abcd", "peer")
        data = check_for("abcd")
        routed = demux.route(data, A1)
        assert routed is not None
        peer, kind, msg = routed
        assert (peer, kind) == ("peer", PacketKind.STUN)
        assert msg == stun.parse(data) and msg is not None and msg.username == "abcd:cli1"

    def test_rfc_5769_request(self) -> None:
        from tests.transports.webrtc.ice.test_stun import SAMPLE_REQUEST

        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("evtj", "peer")
        assert key(demux.route(SAMPLE_REQUEST, A1)) == "peer"

    def test_media_carries_its_kind_and_no_message(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.bind(A1, "peer")
        assert demux.route(RTP, A1) == ("peer", PacketKind.RTP, None)
        assert demux.route(RTCP_SR, A1) == ("peer", PacketKind.RTP, None)
        assert demux.route(DTLS_CLIENT_HELLO, A1) == ("peer", PacketKind.DTLS, None)

    def test_no_colon_is_malformed(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("ab", "peer")
        msg = stun.build_message(stun.METHOD_BINDING, StunClass.REQUEST, b"t" * 12, [(stun.ATTR_USERNAME, b"ab")])
        assert demux.route(msg, A1) is None
        assert demux.counters["drop_malformed_stun"] == 1

    @pytest.mark.parametrize(
        "data",
        [
            b"\x00\x01\x00\x00",
            bytes.fromhex("0001000421120000") + bytes(16),  # bad cookie
            bytes.fromhex("000100042112a442") + bytes(12) + bytes.fromhex("0006"),  # truncated hdr
            bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("0006000861626364"),
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.bind(A1, "peer")
        assert demux.route(data, A1) is None
        assert demux.counters["drop_malformed_stun"] == 1

    @given(st.binary(max_size=100))
    def test_agrees_with_the_full_parser(self, body: bytes) -> None:
        body = body[: len(body) & ~3]
        data = stun._HEADER.pack(0x0001, len(body), stun.MAGIC_COOKIE, b"t" * 12) + body
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("abcd", "peer")
        demux.bind(A1, "bound")
        routed = demux.route(data, A1)  # never raises
        try:
            msg = stun.parse(data)
        except ProtocolError:
            assert routed is None
            return
        if msg.username is None:
            assert routed == ("bound", PacketKind.STUN, msg)
        elif msg.username.partition(":")[0] == "abcd" and ":" in msg.username:
            assert routed == ("peer", PacketKind.STUN, msg)
        else:
            assert routed is None


class TestSharedPortDemux:
    def test_stun_routed_by_ufrag_media_by_bound_address(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("aaaa", "peer-a")
        demux.register("bbbb", "peer-b")
        assert key(demux.route(check_for("aaaa"), A1)) == "peer-a"
        assert key(demux.route(check_for("bbbb"), A1)) == "peer-b"  # ufrag decides, not address
        # Media before any bind is dropped.
        assert demux.route(RTP, A1) is None
        assert demux.counters["drop_unknown_address"] == 1
        demux.bind(A1, "peer-a")
        demux.bind(A2, "peer-b")
        assert key(demux.route(RTP, A1)) == "peer-a"
        assert key(demux.route(RTCP_SR, A2)) == "peer-b"
        assert key(demux.route(DTLS_CLIENT_HELLO, A2)) == "peer-b"
        assert demux.counters["routed_stun"] == 2
        assert demux.counters["routed_rtp"] == 2
        assert demux.counters["routed_dtls"] == 1
        assert len(demux) == 2

    def test_drop_reasons_counted(self) -> None:
        demux: SharedPortDemux[int] = SharedPortDemux()
        demux.register("aaaa", 1)
        assert demux.route(b"", A1) is None
        assert demux.route(bytes([100, 1, 2]), A1) is None
        assert demux.route(b"\x00\x01\x00", A1) is None
        assert demux.route(check_for("zzzz"), A1) is None
        assert demux.route(stun.build_binding_success(b"t" * 12, A1, b"k"), A1) is None
        assert demux.route(RTP, A3) is None
        for reason in DROP_REASONS:
            assert demux.counters[reason] == 1, reason

    def test_stun_response_routed_by_address(self) -> None:
        demux: SharedPortDemux[int] = SharedPortDemux()
        demux.bind(A1, 7)
        assert key(demux.route(stun.build_binding_success(b"t" * 12, A1, b"k"), A1)) == 7

    def test_several_addresses_and_move(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("aaaa", "a")
        demux.bind(A1, "a")
        demux.bind(A3, "a")
        assert key(demux.route(RTP, A1)) == "a"
        assert key(demux.route(RTP, A3)) == "a"
        assert demux.addresses("a") == (A1, A3)
        # The peer's path changes: old address is dropped explicitly.
        demux.bind(A2, "a")
        demux.unbind(A1)
        assert demux.route(RTP, A1) is None
        assert key(demux.route(RTP, A2)) == "a"
        assert demux.addresses("a") == (A3, A2)

    def test_address_taken_over_by_another_peer(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.bind(A1, "a")
        demux.bind(A1, "b")
        assert key(demux.route(RTP, A1)) == "b"
        assert demux.addresses("a") == ()
        assert demux.counters["rebind"] == 1
        demux.unregister("a")  # must not remove b's binding
        assert key(demux.route(RTP, A1)) == "b"

    def test_address_cap_evicts_oldest(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux(max_addresses_per_key=2)
        demux.bind(A1, "a")
        demux.bind(A2, "a")
        demux.bind(A1, "a")  # refresh A1: A2 is now oldest
        demux.bind(A3, "a")
        assert demux.addresses("a") == (A1, A3)
        assert demux.lookup_address(A2) is None
        assert demux.counters["evicted_address"] == 1

    def test_ice_restart_two_ufrags(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("old1", "a")
        demux.register("new1", "a")
        assert key(demux.route(check_for("old1"), A1)) == "a"
        assert key(demux.route(check_for("new1"), A1)) == "a"
        demux.unregister_ufrag("old1")
        assert demux.route(check_for("old1"), A1) is None
        assert key(demux.route(check_for("new1"), A1)) == "a"

    def test_ufrag_collision_is_local_error(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("aaaa", "a")
        demux.register("aaaa", "a")  # idempotent for the same peer
        with pytest.raises(LocalProtocolError):
            demux.register("aaaa", "b")

    def test_unregister_forgets_everything(self) -> None:
        demux: SharedPortDemux[str] = SharedPortDemux()
        demux.register("aaaa", "a")
        demux.bind(A1, "a")
        demux.unregister("a")
        assert demux.route(check_for("aaaa"), A1) is None
        assert demux.route(RTP, A1) is None
        assert len(demux) == 0

    def test_with_ice_agents(self) -> None:
        """The intended wiring: route STUN to an agent, bind the address once it answers."""
        demux: SharedPortDemux[int] = SharedPortDemux()
        agents: dict[int, IceLiteAgent] = {}
        clients: dict[int, IceLiteClient] = {}
        for peer in range(3):
            creds = generate_credentials()
            agents[peer] = IceLiteAgent(remote_ufrag=creds.ufrag)
            lc = agents[peer].local_credentials
            clients[peer] = IceLiteClient(local=creds, remote_ufrag=lc.ufrag, remote_pwd=lc.pwd)
            demux.register(lc.ufrag, peer)
        addrs = {0: A1, 1: A2, 2: A3}
        for peer, client in clients.items():
            data = client.create_check(0.0)
            routed = demux.route(data, addrs[peer])
            assert routed is not None and routed[0] == peer and routed[1] is PacketKind.STUN
            response = agents[peer].handle_stun(0.0, data, addrs[peer], routed[2])
            assert response is not None and stun.parse(response).message_class is StunClass.SUCCESS
            selected = agents[peer].selected_address
            assert selected is not None
            demux.bind(selected, peer)
        for peer, addr in addrs.items():
            assert key(demux.route(RTP, addr)) == peer
        # A forged check (right ufrag, wrong password) is routed to the agent, which rejects
        # it, so the attacker's address is never bound.
        remote_ufrag = agents[0].remote_ufrag
        assert remote_ufrag is not None
        forged = check_for(agents[0].local_credentials.ufrag, remote_ufrag, pwd="x" * 22)
        evil = ("203.0.113.66", 6666)
        assert key(demux.route(forged, evil)) == 0
        assert agents[0].selected_address == A1
        response = agents[0].handle_stun(1.0, forged, evil)
        assert response is not None and stun.parse(response).error_code == 401
        assert demux.route(RTP, evil) is None


@given(st.binary(max_size=120), st.sampled_from([A1, A2, A3]))
def test_route_random_bytes_never_raises(data: bytes, addr: Address) -> None:
    demux: SharedPortDemux[str] = SharedPortDemux()
    demux.register("aaaa", "a")
    demux.bind(A1, "a")
    before = sum(demux.counters.values())
    result = demux.route(data, addr)
    assert key(result) in (None, "a")
    assert sum(demux.counters.values()) == before + 1  # every packet is counted exactly once
    if result is not None:
        assert result[1] is classify(data[0])  # the classification travels with the datagram
        assert (result[2] is not None) == (result[1] is PacketKind.STUN)
        if result[1] is not PacketKind.STUN:
            assert addr == A1


@given(st.binary(max_size=60), st.sampled_from([0, 1, 2, 3]))
def test_route_random_stun_like_bytes(body: bytes, first: int) -> None:
    # Valid cookie and length, random attributes: exercises the TLV walker.
    body = body[: len(body) & ~3]
    data = bytes([first, 1]) + len(body).to_bytes(2, "big") + stun.MAGIC_COOKIE.to_bytes(4, "big")
    data += bytes(12) + body
    demux: SharedPortDemux[str] = SharedPortDemux()
    demux.register("aaaa", "a")
    assert key(demux.route(data, A2)) in (None, "a")
