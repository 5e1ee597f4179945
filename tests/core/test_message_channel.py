"""Message channels: room-scoped pub/sub of application messages, on the virtual clock."""

from __future__ import annotations

from trackmesh.core.controls import (
    Join,
    Leave,
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelStopPub,
    MessageChannelSub,
    MessageChannelUnsub,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ErrorCode
from trackmesh.core.events import MessageChannelMessage
from trackmesh.core.message_channel import MAX_MESSAGE_SIZE, message_channel_id

from .conftest import Harness, drain


def joined(h: Harness, room: str, peer: str, worker: int = 0) -> Endpoint:
    ep = h.endpoint(worker)
    assert ep.control(h.now, Join(room, peer)) is None
    drain(ep)
    return ep


def messages(ep: Endpoint) -> list[MessageChannelMessage]:
    return [e for e in drain(ep) if isinstance(e, MessageChannelMessage)]


def test_pub_sub_across_two_workers_carries_the_sender(h: Harness) -> None:
    alice = joined(h, "r", "alice", worker=0)
    bob = joined(h, "r", "bob", worker=1)
    carol = joined(h, "r", "carol", worker=1)
    other_room = joined(h, "r2", "dave", worker=0)
    for ep in (alice, bob, carol, other_room):
        assert ep.control(h.now, MessageChannelSub("chat")) is None
    assert alice.control(h.now, MessageChannelStartPub("chat")) is None
    assert alice.control(h.now, MessageChannelPub("chat", b"hello")) is None
    want = [MessageChannelMessage("chat", "alice", b"hello")]
    # atm0s delivers to every subscriber of the label, the sender included.
    assert messages(bob) == want
    assert messages(carol) == want
    assert messages(alice) == want
    assert messages(other_room) == []
    drain(alice)


def test_labels_are_separate_and_sub_is_idempotent(h: Harness) -> None:
    alice = joined(h, "r", "alice")
    bob = joined(h, "r", "bob", worker=1)
    assert bob.control(h.now, MessageChannelSub("a")) is None
    assert bob.control(h.now, MessageChannelSub("a")) is None
    assert alice.control(h.now, MessageChannelStartPub("b")) is None
    assert alice.control(h.now, MessageChannelStartPub("b")) is None
    assert alice.control(h.now, MessageChannelPub("b", b"x")) is None
    assert messages(bob) == []
    assert alice.control(h.now, MessageChannelStartPub("a")) is None
    assert alice.control(h.now, MessageChannelPub("a", b"y")) is None
    assert messages(bob) == [MessageChannelMessage("a", "alice", b"y")]


def test_unsub_stops_delivery_and_leave_cleans_up(h: Harness) -> None:
    alice = joined(h, "r", "alice")
    bob = joined(h, "r", "bob", worker=1)
    bob.control(h.now, MessageChannelSub("chat"))
    alice.control(h.now, MessageChannelStartPub("chat"))
    assert alice.control(h.now, MessageChannelPub("chat", b"1")) is None
    assert bob.control(h.now, MessageChannelUnsub("chat")) is None
    assert bob.control(h.now, MessageChannelUnsub("chat")) is None  # idempotent
    assert alice.control(h.now, MessageChannelPub("chat", b"2")) is None
    assert [m.data for m in messages(bob)] == [b"1"]
    bob.control(h.now, MessageChannelSub("chat"))
    assert len(h.hub) == 1
    assert bob.control(h.now, Leave()) is None
    assert len(h.hub) == 0
    # Stop pub (sent by the SDK's close even when it never published) is idempotent.
    assert alice.control(h.now, MessageChannelStopPub("chat")) is None
    assert alice.control(h.now, MessageChannelStopPub("chat")) is None
    err = alice.control(h.now, MessageChannelPub("chat", b"3"))
    assert err is not None and err.code is ErrorCode.NOT_PUBLISHING


def test_errors_are_typed(h: Harness) -> None:
    ep = h.endpoint()
    err = ep.control(h.now, MessageChannelSub("chat"))
    assert err is not None and err.code is ErrorCode.NOT_JOINED
    assert ep.control(h.now, Join("r", "p")) is None
    err = ep.control(h.now, MessageChannelPub("chat", b"x"))
    assert err is not None and err.code is ErrorCode.NOT_PUBLISHING
    ep.control(h.now, MessageChannelStartPub("chat"))
    err = ep.control(h.now, MessageChannelPub("chat", b"x" * (MAX_MESSAGE_SIZE + 1)))
    assert err is not None and err.code is ErrorCode.MESSAGE_TOO_LARGE
    assert ep.control(h.now, MessageChannelPub("chat", b"x" * MAX_MESSAGE_SIZE)) is None
    err = ep.control(h.now, MessageChannelPub("chat", "text"))  # type: ignore[arg-type]
    assert err is not None and err.code is ErrorCode.INVALID_VALUE
    for label in ("", "x" * 129, "a\nb"):
        err = ep.control(h.now, MessageChannelSub(label))
        assert err is not None and err.code is ErrorCode.INVALID_NAME


def test_an_empty_message_is_delivered(h: Harness) -> None:
    a = joined(h, "r", "a")
    a.control(h.now, MessageChannelSub("l"))
    a.control(h.now, MessageChannelStartPub("l"))
    assert a.control(h.now, MessageChannelPub("l", b"")) is None
    assert messages(a) == [MessageChannelMessage("l", "a", b"")]


def test_channel_ids_are_stable_and_distinct() -> None:
    assert message_channel_id("r", "chat") == message_channel_id("r", "chat")
    assert message_channel_id("r", "chat") != message_channel_id("r2", "chat")
    assert message_channel_id("r", "chat") != message_channel_id("r", "chat2")
    # Length-prefixed parts: moving a character across the boundary changes the id.
    assert message_channel_id("ab", "c") != message_channel_id("a", "bc")
