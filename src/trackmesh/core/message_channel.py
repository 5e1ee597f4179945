"""Message channels: room-scoped pub/sub of application messages (the SDK's ``message_channel``).

Each (room, label) is one channel of the :class:`~.channel.MessageHub` path of the ChannelHub,
with a stable id (:func:`message_channel_id`), so the in-process hub and the distributed one
deliver the same way: a message published on any node reaches every subscriber of the label
in the room, on every node.

Behaviour follows atm0s 0.2 (``cluster/room/message_channel``):

- ``sub`` subscribes, ``start_pub`` allows publishing, ``pub`` sends ``{from: peer, data}``;
- every subscriber of the label receives the message, the sender included when it is
  subscribed itself (the published SDK subscribes then starts publishing on every channel it
  opens, so a client sees its own messages echoed, as with atm0s);
- start_pub, stop_pub, sub and unsub are idempotent (the SDK's ``close`` sends stop_pub even
  when it never published); ``pub`` without ``start_pub`` is a ``NOT_PUBLISHING`` error, a
  message over :data:`MAX_MESSAGE_SIZE` a ``MESSAGE_TOO_LARGE`` error;
- no persistence, no acknowledgement, no ordering between senders.

Leaving the room drops every publication and subscription of the endpoint.
"""

from __future__ import annotations

import hashlib
from collections import deque

from .channel import ChannelHub, MessageHub
from .controls import (
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelStopPub,
    MessageChannelSub,
    MessageChannelUnsub,
)
from .errors import ControlError, ErrorCode
from .events import EndpointEvent, MessageChannelMessage

# The SDK sends a message as one protobuf inside one data-channel message; 64 KiB keeps that
# well inside what browsers deliver in one SCTP message.
MAX_MESSAGE_SIZE = 64 * 1024
# Labels one endpoint may publish or subscribe on at once (bounds per-endpoint state).
MAX_LABELS = 64

MessageChannelControl = (
    MessageChannelStartPub | MessageChannelStopPub | MessageChannelSub | MessageChannelUnsub | MessageChannelPub
)


def message_channel_id(room: str, label: str) -> int:
    """The cluster-wide channel of the room's message label: stable 64-bit BLAKE2b of
    (room, "msg", label), personalised apart from track channels."""
    h = hashlib.blake2b(digest_size=8, person=b"tm-msgch")
    for part in (room, "msg", label):
        data = part.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return int.from_bytes(h.digest(), "big")


class _Subscription:
    """One endpoint's subscription to one label: turns hub deliveries into events."""

    __slots__ = ("_events", "label", "received")

    def __init__(self, label: str, events: deque[EndpointEvent]) -> None:
        self.label = label
        self.received = 0
        self._events = events

    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        self.received += 1
        self._events.append(MessageChannelMessage(self.label, sender, data))


class MessageChannels:
    """The message-channel state of one endpoint while it is in a room."""

    __slots__ = ("_events", "_hub", "pubs", "sent", "subs")

    def __init__(self, hub: ChannelHub, events: deque[EndpointEvent]) -> None:
        self._hub: MessageHub | None = hub if isinstance(hub, MessageHub) else None
        self._events = events
        self.pubs: set[str] = set()
        self.subs: dict[str, tuple[int, _Subscription]] = {}
        self.sent = 0

    def control(self, now: float, room: str, peer: str, ctl: MessageChannelControl) -> ControlError | None:
        hub = self._hub
        if hub is None:
            return ControlError(ErrorCode.UNSUPPORTED, "this node's channel hub carries no messages")
        label = ctl.label
        match ctl:
            case MessageChannelStartPub():
                if label not in self.pubs and len(self.pubs) >= MAX_LABELS:
                    return ControlError(ErrorCode.INVALID_VALUE, f"at most {MAX_LABELS} published labels")
                self.pubs.add(label)
            case MessageChannelStopPub():
                self.pubs.discard(label)
            case MessageChannelSub():
                if label in self.subs:
                    return None
                if len(self.subs) >= MAX_LABELS:
                    return ControlError(ErrorCode.INVALID_VALUE, f"at most {MAX_LABELS} subscribed labels")
                channel = message_channel_id(room, label)
                sub = _Subscription(label, self._events)
                self.subs[label] = (channel, sub)
                hub.subscribe_messages(now, channel, sub)
            case MessageChannelUnsub():
                entry = self.subs.pop(label, None)
                if entry is not None:
                    hub.unsubscribe_messages(now, entry[0], entry[1])
            case MessageChannelPub():
                data = ctl.data
                if not isinstance(data, bytes):
                    return ControlError(ErrorCode.INVALID_VALUE, "message data must be bytes")
                if len(data) > MAX_MESSAGE_SIZE:
                    return ControlError(
                        ErrorCode.MESSAGE_TOO_LARGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}"
                    )
                if label not in self.pubs:
                    return ControlError(ErrorCode.NOT_PUBLISHING, f"start publishing on {label!r} first")
                self.sent += 1
                hub.send_message(now, message_channel_id(room, label), peer, data)
        return None

    def clear(self, now: float) -> None:
        """Leaving the room: drop every publication and subscription."""
        self.pubs.clear()
        hub = self._hub
        if hub is not None:
            for channel, sub in self.subs.values():
                hub.unsubscribe_messages(now, channel, sub)
        self.subs.clear()
