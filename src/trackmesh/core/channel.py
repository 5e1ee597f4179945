"""The channel seam: every track is a cluster-wide pub/sub channel.

A publisher starts a channel and sends its media into it; any number of subscribers (the
LocalTracks fed by that track, on this worker or, through the distributed hub, on other
nodes) receive each packet. Feedback (key-frame requests, bitrate hints) flows the other way,
from a subscriber to whoever currently publishes.

A subscriber may subscribe before anyone publishes and stays subscribed when the publisher
stops: ``on_channel_source`` tells it when the channel goes live or silent, which is how a
track republished under the same name resumes for its viewers.

Messages take a separate, optional path of the same hub: :class:`MessageHub`. A message is not
a media packet (no codec, no sequence, no publisher to send feedback to, any number of senders
per channel), so it has its own subscribe/send calls instead of riding on ``PublishHandle.send``.
Two kinds use it: application messages (message channels, :mod:`.message_channel`: one-off
``send_message``) and the audio mixer's levels summaries (:mod:`.mixer.levels`: a standing
sender from ``open_messages``, one summary per tick). A hub that does not implement it makes
message-channel controls return a typed error, and cannot run the bounded mixer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .model import MediaPacket


class FeedbackKind(enum.Enum):
    KEYFRAME = "keyframe"
    BITRATE = "bitrate"
    #: The subscriber cannot decode the track's codec and wants its alternate rendition (RTMP: an
    #: H.264 transcode of HEVC/AV1/VP9), repeated while it wants it (ALTERNATE_TTL at the publisher).
    ALTERNATE = "alternate"


@dataclass(frozen=True, slots=True)
class Feedback:
    """Feedback from one subscriber (``origin``, unique in the cluster) to the publisher."""

    kind: FeedbackKind
    origin: int
    bitrate_bps: int = 0


class ChannelSubscriber(Protocol):
    def on_channel_packet(self, channel: int, pkt: MediaPacket) -> None: ...

    def on_channel_source(self, now: float, channel: int, live: bool) -> None: ...


class ChannelPublisher(Protocol):
    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None: ...


class PublishHandle(Protocol):
    """What ``start_publish`` returns: the publisher's fast path into the channel."""

    def send(self, pkt: MediaPacket) -> None: ...

    def stop(self, now: float) -> None: ...


class ChannelHub(Protocol):
    def start_publish(self, now: float, channel: int, publisher: ChannelPublisher) -> PublishHandle:
        """Become the channel's publisher; a newer publisher replaces an older one."""
        ...

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        """Receive the channel's media; ``on_channel_source`` is called at once if it is live."""
        ...

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None: ...

    def feedback(self, now: float, channel: int, fb: Feedback) -> None: ...


class MessageSubscriber(Protocol):
    """May carry a class attribute ``channel_kind`` (default ``"message"``; the mixer's levels say
    ``"levels"``): the cluster hub counts its subscriptions per kind."""

    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None: ...


class MessageSender(Protocol):
    """What ``open_messages`` returns: one standing sender's path into a message channel."""

    def send(self, now: float, sender: str, data: bytes) -> None: ...

    def close(self, now: float) -> None: ...


@runtime_checkable
class MessageHub(Protocol):
    """The message path of a ChannelHub: room-scoped application messages, fanned out to every
    subscriber of the channel on every node, each carrying the sending peer's id. No ordering
    across senders, no persistence, no acknowledgement (atm0s' message channels are the same)."""

    def subscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None: ...

    def unsubscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None: ...

    def send_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        """One message to every subscriber of the channel, on every node."""
        ...

    def open_messages(self, now: float, channel: int, kind: str) -> MessageSender:
        """A standing sender on the channel, for periodic messages (the cluster hub sets its path up
        once, counts it under ``kind`` and serializes only while another node subscribes)."""
        ...
