"""The channel seam: every track is a cluster-wide pub/sub channel.

A publisher starts a channel and sends its media into it; any number of subscribers (the
LocalTracks fed by that track, on this worker or, through the distributed hub, on other
nodes) receive each packet. Feedback (key-frame requests, bitrate hints) flows the other way,
from a subscriber to whoever currently publishes.

A subscriber may subscribe before anyone publishes and stays subscribed when the publisher
stops: ``on_channel_source`` tells it when the channel goes live or silent, which is how a
track republished under the same name resumes for its viewers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from .model import MediaPacket


class FeedbackKind(enum.Enum):
    KEYFRAME = "keyframe"
    BITRATE = "bitrate"


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
