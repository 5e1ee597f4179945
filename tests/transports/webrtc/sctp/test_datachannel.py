"""Data channels (RFC 8831, DCEP RFC 8832) between two managers on a virtual clock."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackmesh.errors import LocalProtocolError, ProtocolError
from trackmesh.transports.webrtc.sctp.association import AssociationClosed, AssociationEstablished, SctpAssociation
from trackmesh.transports.webrtc.sctp.datachannel import (
    ChannelClosed,
    ChannelOpened,
    DataChannelError,
    DataChannelManager,
    DcepOpen,
    Message,
    parse_dcep_open,
)

from .test_association import Link


def managers(**link_kw: Any) -> tuple[DataChannelManager, DataChannelManager, Link]:
    rng = random.Random(4)
    client = DataChannelManager(SctpAssociation(cookie_key=b"c" * 32, random_bytes=rng.randbytes), dtls_role="client")
    server = DataChannelManager(SctpAssociation(cookie_key=b"s" * 32, random_bytes=rng.randbytes), dtls_role="server")
    return client, server, Link(client, server, **link_kw)


def up(link: Link) -> None:
    link.run(lambda: all(any(isinstance(e, AssociationEstablished) for e in evs) for evs in link.events))


def msgs(events: list[Any], cid: int | None = None) -> list[Message]:
    return [e for e in events if isinstance(e, Message) and (cid is None or e.channel_id == cid)]


def test_negotiated_channel_server_initiates_sctp() -> None:
    client, server, link = managers()
    assert client.open("data", negotiated_id=0) == 0
    assert server.open("data", negotiated_id=0) == 0
    server.connect(0.0)  # our SDK: the server starts SCTP as the SCTP client
    up(link)
    assert ChannelOpened(0, "data", "") in link.events[0] and ChannelOpened(0, "data", "") in link.events[1]
    client.send(link.now, 0, "hello")
    server.send(link.now, 0, b"\x01\x02")
    link.run(lambda: bool(msgs(link.events[1])) and bool(msgs(link.events[0])))
    assert msgs(link.events[1]) == [Message(0, b"hello", False)]
    assert msgs(link.events[1])[0].text == "hello"
    assert msgs(link.events[0]) == [Message(0, b"\x01\x02", True)]


def test_negotiated_channel_opened_after_association() -> None:
    client, _server, link = managers()
    client.connect(0.0)
    up(link)
    client.open("data", negotiated_id=0)
    assert client.poll_event() == ChannelOpened(0, "data", "")


def test_announced_channels_use_parity_and_dcep() -> None:
    client, server, link = managers()
    client.connect(0.0)
    up(link)
    c1 = client.open("chat", protocol="json")
    c2 = client.open("bulk", ordered=False, max_retransmits=2)
    s1 = server.open("from-server", max_packet_life_time=500)
    assert (c1, c2, s1) == (0, 2, 1)
    client.send(link.now, c1, "first")  # may be sent before the ACK (RFC 8832 s6)
    link.run(lambda: sum(isinstance(e, ChannelOpened) for e in link.events[0]) == 3)
    assert ChannelOpened(0, "chat", "json") in link.events[1]
    assert ChannelOpened(2, "bulk", "") in link.events[1]
    assert ChannelOpened(1, "from-server", "") in link.events[0]
    remote = server.channels[2]
    assert not remote.ordered and remote.max_retransmits == 2 and remote.max_packet_life_time is None
    assert client.channels[1].max_packet_life_time == 500
    link.run(lambda: bool(msgs(link.events[1])))
    assert msgs(link.events[1]) == [Message(0, b"first", False)]


def test_empty_messages_use_empty_ppids() -> None:
    client, server, link = managers()
    client.open("data", negotiated_id=0)
    server.open("data", negotiated_id=0)
    client.connect(0.0)
    up(link)
    client.send(link.now, 0, "")
    client.send(link.now, 0, b"")
    client.send(link.now, 0, "ünïcode")
    link.run(lambda: len(msgs(link.events[1])) == 3)
    assert msgs(link.events[1]) == [
        Message(0, b"", False),
        Message(0, b"", True),
        Message(0, "ünïcode".encode(), False),
    ]


@pytest.mark.parametrize("size", [1, 1200, 65536, 256 * 1024])
def test_large_messages_over_channel(size: int) -> None:
    client, _server, link = managers(loss=0.05, seed=size)
    client.connect(0.0)
    up(link)
    cid = client.open("files")
    payload = random.Random(size).randbytes(size)
    client.send(link.now, cid, payload)
    link.run(lambda: bool(msgs(link.events[1])), timeout=300)
    assert msgs(link.events[1]) == [Message(cid, payload, True)]


def test_messages_over_the_peers_max_message_size_are_refused() -> None:
    # RFC 8841 s6.1: the SDP's a=max-message-size bounds what we send (Chrome offers 262144).
    client, server, link = managers()
    client.max_message_size = 1000
    server.max_message_size = 0  # "any size"
    client.open("data", negotiated_id=0)
    server.open("data", negotiated_id=0)
    client.connect(0.0)
    up(link)
    client.send(link.now, 0, b"x" * 1000)
    with pytest.raises(LocalProtocolError, match="max-message-size"):
        client.send(link.now, 0, b"x" * 1001)
    with pytest.raises(LocalProtocolError, match="max-message-size"):
        client.send(link.now, 0, "é" * 501)  # 1002 bytes of UTF-8
    server.send(link.now, 0, b"y" * 5000)
    link.run(lambda: len(msgs(link.events[1])) == 1 and len(msgs(link.events[0])) == 1)
    assert [len(m.data) for m in msgs(link.events[1]) + msgs(link.events[0])] == [1000, 5000]


def test_close_resets_streams_both_ways_and_id_is_reusable() -> None:
    client, server, link = managers()
    client.connect(0.0)
    up(link)
    cid = client.open("chat")
    for i in range(3):
        client.send(link.now, cid, f"m{i}")
    client.close(cid)
    with pytest.raises(LocalProtocolError):
        client.send(link.now, cid, "late")
    link.run(lambda: all(ChannelClosed(cid) in evs for evs in link.events))
    assert [m.data for m in msgs(link.events[1])] == [b"m0", b"m1", b"m2"]
    assert cid not in client.channels and cid not in server.channels
    again = client.open("chat2")
    assert again == cid
    client.send(link.now, again, "again")
    link.run(lambda: Message(cid, b"again", False) in link.events[1])


def test_remote_close_is_answered() -> None:
    client, server, link = managers()
    client.open("data", negotiated_id=0)
    server.open("data", negotiated_id=0)
    client.connect(0.0)
    up(link)
    server.close(0)
    link.run(lambda: all(ChannelClosed(0) in evs for evs in link.events))


def test_simultaneous_close() -> None:
    client, server, link = managers()
    client.open("data", negotiated_id=0)
    server.open("data", negotiated_id=0)
    client.connect(0.0)
    up(link)
    client.close(0)
    server.close(0)
    link.run(lambda: all(ChannelClosed(0) in evs for evs in link.events))
    assert not client.channels and not server.channels


def test_unreliable_channel_under_loss() -> None:
    client, _server, link = managers(loss=0.2, seed=9)
    client.connect(0.0)
    up(link)
    cid = client.open("game", ordered=False, max_retransmits=0)
    link.run(lambda: any(isinstance(e, ChannelOpened) for e in link.events[0]), timeout=300)
    sent = [f"state{i}".encode() for i in range(200)]
    for s in sent:
        client.send(link.now, cid, s)
    link.settle(20.0)
    got = [m.data for m in msgs(link.events[1], cid)]
    assert 0 < len(got) < len(sent) and set(got) <= set(sent)


def test_timed_channel_lifetime_counts_from_the_send_time() -> None:
    # RFC 8831 s6.1 / RFC 3758: max_packet_life_time runs from the send call. The association keeps
    # no clock, so a message sent after a long idle spell (no input for 10 s) is not already expired.
    client, server, link = managers()
    client.connect(0.0)
    up(link)
    cid = client.open("timed", max_packet_life_time=500)
    link.run(lambda: ChannelOpened(cid, "timed", "") in link.events[1])
    link.run(lambda: client.association.buffered_amount == 0 and server.association.buffered_amount == 0)
    deadline = client.association.next_deadline()
    assert deadline is not None and deadline > link.now + 10.0  # only the heartbeat timer is left
    link.now += 10.0  # idle
    client.send(link.now, cid, "fresh")
    link.run(lambda: Message(cid, b"fresh", False) in link.events[1])
    assert client.association.stats.messages_abandoned == 0
    # Lost for longer than its lifetime, a message is abandoned, never delivered; the channel moves on.
    link.drop = lambda i, _pkt: i == 0
    client.send(link.now, cid, "doomed")
    link.settle(1.0)
    assert client.association.stats.messages_abandoned == 1
    link.drop = None
    client.send(link.now, cid, "after")
    link.run(lambda: Message(cid, b"after", False) in link.events[1], timeout=60)
    assert [m.data for m in msgs(link.events[1], cid)] == [b"fresh", b"after"]
    assert client.association.is_established and server.association.is_established


def test_association_abort_closes_channels() -> None:
    client, server, link = managers()
    client.open("data", negotiated_id=0)
    server.open("data", negotiated_id=0)
    client.connect(0.0)
    up(link)
    client.association.abort("done")
    link.run(lambda: any(isinstance(e, AssociationClosed) for e in link.events[1]))
    assert ChannelClosed(0) in link.events[1] and ChannelClosed(0) in link.events[0]


def test_bad_dcep_is_dropped() -> None:
    client, server, link = managers()
    client.connect(0.0)
    up(link)
    client.association.send(5, 50, b"\x03\x00")  # truncated OPEN
    client.association.send(7, 51, b"no channel")
    link.run(lambda: server.dropped_messages == 2)
    assert not server.channels


def test_option_validation() -> None:
    client, _, _ = managers()
    with pytest.raises(LocalProtocolError):
        client.open("x", max_retransmits=1, max_packet_life_time=10)
    client.open("data", negotiated_id=0)
    with pytest.raises(LocalProtocolError):
        client.open("dup", negotiated_id=0)


def test_dcep_open_round_trip() -> None:
    m = DcepOpen(0x81, 256, 3, "label", "proto")
    assert parse_dcep_open(m.to_bytes()) == m
    with pytest.raises(DataChannelError):
        parse_dcep_open(m.to_bytes()[:-1])


@given(st.binary(max_size=64))
def test_dcep_parser_raises_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_dcep_open(data)
