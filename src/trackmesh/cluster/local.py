"""In-process Registry and ChannelHub: the standalone node's cluster.

Both are plain data structures with synchronous delivery; they hold no clock and no I/O.
"""

from __future__ import annotations

from trackmesh.core.channel import ChannelPublisher, ChannelSubscriber, Feedback, MessageSubscriber
from trackmesh.core.model import MediaPacket
from trackmesh.core.registry import RegistryWatcher


class LocalRegistry:
    """A dict plus prefix watchers. Prefixes end at a '/' boundary (``r/<room>/``)."""

    __slots__ = ("_data", "_watchers")

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._watchers: dict[str, list[RegistryWatcher]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def _watchers_of(self, key: str) -> list[RegistryWatcher]:
        found: list[RegistryWatcher] = []
        idx = key.find("/")
        while idx != -1:
            found.extend(self._watchers.get(key[: idx + 1], ()))
            idx = key.find("/", idx + 1)
        return found

    def put(self, now: float, key: str, value: bytes) -> None:
        if self._data.get(key) == value:
            return
        self._data[key] = value
        for watcher in self._watchers_of(key):
            watcher.on_registry_put(now, key, value)

    def delete(self, now: float, key: str) -> None:
        if self._data.pop(key, None) is None:
            return
        for watcher in self._watchers_of(key):
            watcher.on_registry_delete(now, key)

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None:
        if not prefix.endswith("/"):
            raise ValueError("registry watch prefixes end with '/'")
        self._watchers.setdefault(prefix, []).append(watcher)
        for key, value in [(k, v) for k, v in self._data.items() if k.startswith(prefix)]:
            watcher.on_registry_put(now, key, value)

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None:
        watchers = self._watchers.get(prefix)
        if watchers is not None and watcher in watchers:
            watchers.remove(watcher)
            if not watchers:
                del self._watchers[prefix]


class _Channel:
    __slots__ = ("id", "publisher", "subscribers")

    def __init__(self, channel: int) -> None:
        self.id = channel
        self.publisher: _LocalPublish | None = None
        self.subscribers: list[ChannelSubscriber] = []


class _LocalPublish:
    """A publisher's handle: ``send`` walks the channel's subscriber list directly."""

    __slots__ = ("_hub", "channel", "publisher")

    def __init__(self, hub: LocalChannelHub, channel: _Channel, publisher: ChannelPublisher) -> None:
        self._hub = hub
        self.channel = channel
        self.publisher = publisher

    def send(self, pkt: MediaPacket) -> None:
        channel = self.channel
        if channel.publisher is not self:
            self._hub.dropped_stale += 1
            return
        cid = channel.id
        for sub in channel.subscribers:
            sub.on_channel_packet(cid, pkt)

    def stop(self, now: float) -> None:
        channel = self.channel
        if channel.publisher is not self:
            return
        channel.publisher = None
        for sub in list(channel.subscribers):
            sub.on_channel_source(now, channel.id, False)
        self._hub.gc(channel)


class LocalChannelHub:
    __slots__ = ("_channels", "_messages", "dropped_stale", "feedback_dropped", "messages_dropped")

    def __init__(self) -> None:
        self._channels: dict[int, _Channel] = {}
        self._messages: dict[int, list[MessageSubscriber]] = {}
        self.dropped_stale = 0
        self.feedback_dropped = 0
        self.messages_dropped = 0

    def __len__(self) -> int:
        """Track channels plus message channels in use (0 once everything is torn down)."""
        return len(self._channels) + len(self._messages)

    def _get(self, channel: int) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(channel)
        return ch

    def gc(self, channel: _Channel) -> None:
        if channel.publisher is None and not channel.subscribers:
            self._channels.pop(channel.id, None)

    def start_publish(self, now: float, channel: int, publisher: ChannelPublisher) -> _LocalPublish:
        ch = self._get(channel)
        replaced = ch.publisher is not None
        handle = _LocalPublish(self, ch, publisher)
        ch.publisher = handle
        if not replaced:
            for sub in list(ch.subscribers):
                sub.on_channel_source(now, channel, True)
        return handle

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        ch = self._get(channel)
        if subscriber not in ch.subscribers:
            ch.subscribers.append(subscriber)
            if ch.publisher is not None:
                subscriber.on_channel_source(now, channel, True)

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        ch = self._channels.get(channel)
        if ch is not None and subscriber in ch.subscribers:
            ch.subscribers.remove(subscriber)
            self.gc(ch)

    def feedback(self, now: float, channel: int, fb: Feedback) -> None:
        ch = self._channels.get(channel)
        if ch is None or ch.publisher is None:
            self.feedback_dropped += 1
            return
        ch.publisher.publisher.on_channel_feedback(now, channel, fb)

    # ---- message channels (MessageHub) ----------------------------------------------------

    def subscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        subs = self._messages.setdefault(channel, [])
        if subscriber not in subs:
            subs.append(subscriber)

    def unsubscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        subs = self._messages.get(channel)
        if subs is not None and subscriber in subs:
            subs.remove(subscriber)
            if not subs:
                del self._messages[channel]

    def message_subscribers(self, channel: int) -> int:
        """How many subscribers the message channel has here."""
        return len(self._messages.get(channel, ()))

    def send_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        subs = self._messages.get(channel)
        if subs is None:
            self.messages_dropped += 1
            return
        for sub in subs:
            sub.on_channel_message(now, channel, sender, data)

    def open_messages(self, now: float, channel: int, kind: str) -> _LocalMessages:
        return _LocalMessages(self, channel)


class _LocalMessages:
    """A standing sender in process: each message goes straight to the channel's subscribers."""

    __slots__ = ("_hub", "channel")

    def __init__(self, hub: LocalChannelHub, channel: int) -> None:
        self._hub = hub
        self.channel = channel

    def send(self, now: float, sender: str, data: bytes) -> None:
        self._hub.send_message(now, self.channel, sender, data)

    def close(self, now: float) -> None:
        pass
