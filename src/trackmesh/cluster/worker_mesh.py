"""The registry and channel hub of a standalone node's workers when a room spreads over them
(``trackmesh standalone --workers N --room-spread K``, docs/cluster.md "One room on every core").

A standalone worker's registry and hub are in process (cluster/local.py). With ``--room-spread`` a
room's WHEP viewers may sit on another worker than its publishers, so each worker's registry and
hub here wrap the in-process ones and add the crossing to the node's other workers, the way the
zenoh ones (cluster/zenoh_registry.py, cluster/zenoh_channels.py) add the crossing to other nodes.
Sans-IO: what crosses is an *item* (a tuple of str, int and bytes) handed to ``send(peer, item)``;
the driver (runtime/worker_spread.py) carries items over a pipe per pair of workers and hands those
that arrive to :meth:`WorkerMesh.on_items` with ``now``.

- **Registry** (:class:`MeshRegistry`): entries stay on the worker that puts them. The first local
  watch of a prefix asks every other worker to watch it on our behalf (``watch``); they send the
  entries they hold under it and every change after (``put``/``delete``), which reach the local
  watchers of that prefix and are kept, per worker, to replay to later watchers. The last local
  unwatch tells them to stop (``unwatch``). A worker that goes (:meth:`WorkerMesh.peer_lost`): its
  entries are deleted for our watchers.
- **Channels** (:class:`MeshChannelHub`): while a worker has local subscribers to a channel it tells
  every other worker (``sub``/``unsub``). A worker that publishes the channel tells each interested
  worker that it is live (``src``) and sends it each packet once, however many viewers it has there
  (``p``, the cluster packet format: cluster/zenoh_channels.py ``encode_packet``). On the viewers'
  worker a *proxy* publisher stands for the remote one in the local hub (as in the zenoh hub):
  remote packets go through its handle to the local viewers, and feedback (key-frame requests,
  bitrate hints) the local hub routes to it goes back to the publishing worker (``fb``).
  Retransmissions are answered from the viewer's worker's own ring: NACKs never cross.
- **Messages** (the MessageHub path: message channels, the mixer's levels): a worker with local
  subscribers of a message channel tells the others (``msub``/``munsub``); a message sent on a
  worker reaches its local subscribers and crosses once to each worker that subscribes (``m``).

Nothing is logged per packet; counters (:meth:`MeshChannelHub.stats`) say what crossed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.cluster.zenoh_channels import (
    BadMessage,
    decode_feedback,
    decode_packet,
    encode_feedback,
    encode_packet,
)
from trackmesh.core.channel import ChannelPublisher, ChannelSubscriber, Feedback, MessageSubscriber
from trackmesh.core.model import MediaPacket
from trackmesh.core.registry import RegistryWatcher

__all__ = ["MeshChannelHub", "MeshRegistry", "Send", "WorkerMesh"]

#: ``send(peer, item)``: one item to worker ``peer`` (the driver batches them per loop turn).
Send = Callable[[int, tuple[Any, ...]], None]


# -- registry -------------------------------------------------------------------------------------


class _PeerWatch:
    """Watches a prefix of the local registry on behalf of another worker."""

    __slots__ = ("peer", "prefix", "send")

    def __init__(self, send: Send, peer: int, prefix: str) -> None:
        self.send = send
        self.peer = peer
        self.prefix = prefix

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.send(self.peer, ("put", self.prefix, key, value))

    def on_registry_delete(self, now: float, key: str) -> None:
        self.send(self.peer, ("delete", self.prefix, key))


class MeshRegistry:
    """One worker's registry: its own entries in process, the other workers' watched for it."""

    __slots__ = ("_mirrors", "_served", "_watchers", "local", "peers", "send")

    def __init__(self, send: Send, peers: list[int], local: LocalRegistry | None = None) -> None:
        self.send = send
        self.peers = list(peers)
        self.local = local if local is not None else LocalRegistry()
        self._watchers: dict[str, list[RegistryWatcher]] = {}  # local watchers only, by prefix
        self._mirrors: dict[tuple[int, str], dict[str, bytes]] = {}  # (peer, prefix) -> its entries
        self._served: dict[tuple[int, str], _PeerWatch] = {}  # our watches for other workers

    def __len__(self) -> int:
        return len(self.local)

    # -- the Registry protocol ---------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self.local.get(key)

    def put(self, now: float, key: str, value: bytes) -> None:
        self.local.put(now, key, value)

    def delete(self, now: float, key: str) -> None:
        self.local.delete(now, key)

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None:
        self.local.watch(now, prefix, watcher)  # checks the prefix; replays the local entries
        watchers = self._watchers.get(prefix)
        if watchers is None:
            self._watchers[prefix] = [watcher]
            for peer in self.peers:
                self.send(peer, ("watch", prefix))
            return
        watchers.append(watcher)
        for peer in self.peers:
            for key, value in list(self._mirrors.get((peer, prefix), {}).items()):
                watcher.on_registry_put(now, key, value)

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None:
        self.local.unwatch(prefix, watcher)
        watchers = self._watchers.get(prefix)
        if watchers is None or watcher not in watchers:
            return
        watchers.remove(watcher)
        if watchers:
            return
        del self._watchers[prefix]
        for peer in self.peers:
            self._mirrors.pop((peer, prefix), None)
            self.send(peer, ("unwatch", prefix))

    # -- from the other workers --------------------------------------------------------------

    def on_watch(self, now: float, peer: int, prefix: str) -> None:
        if (peer, prefix) in self._served or not prefix.endswith("/"):
            return
        watch = self._served[(peer, prefix)] = _PeerWatch(self.send, peer, prefix)
        self.local.watch(now, prefix, watch)  # sends what exists

    def on_unwatch(self, peer: int, prefix: str) -> None:
        watch = self._served.pop((peer, prefix), None)
        if watch is not None:
            self.local.unwatch(prefix, watch)

    def on_put(self, now: float, peer: int, prefix: str, key: str, value: bytes) -> None:
        watchers = self._watchers.get(prefix)
        if watchers is None:
            return  # unwatched meanwhile
        self._mirrors.setdefault((peer, prefix), {})[key] = value
        for watcher in list(watchers):
            watcher.on_registry_put(now, key, value)

    def on_delete(self, now: float, peer: int, prefix: str, key: str) -> None:
        mirror = self._mirrors.get((peer, prefix))
        if mirror is None or mirror.pop(key, None) is None:
            return
        for watcher in list(self._watchers.get(prefix, ())):
            watcher.on_registry_delete(now, key)

    def peer_lost(self, now: float, peer: int) -> None:
        """``peer`` is gone (its pipe closed): its entries go for our watchers, our watches for it stop."""
        for prefix, watch in [(p, w) for (k, p), w in self._served.items() if k == peer]:
            del self._served[(peer, prefix)]
            self.local.unwatch(prefix, watch)
        for prefix in [p for (k, p) in self._mirrors if k == peer]:
            mirror = self._mirrors.pop((peer, prefix))
            for key in mirror:
                for watcher in list(self._watchers.get(prefix, ())):
                    watcher.on_registry_delete(now, key)
        if peer in self.peers:
            self.peers.remove(peer)


# -- channels -------------------------------------------------------------------------------------


class _Import:
    """A channel this worker's subscribers watch: which workers publish it, and the proxy's handle."""

    __slots__ = ("proxy", "sources", "subscribers")

    def __init__(self) -> None:
        self.subscribers: list[ChannelSubscriber] = []
        self.sources: set[int] = set()
        self.proxy: Any = None  # LocalChannelHub handle of the proxy publisher, while it is current


class _Proxy:
    """Stands in the local hub for the publisher on another worker: feedback crosses back to it."""

    __slots__ = ("_hub",)

    def __init__(self, hub: MeshChannelHub) -> None:
        self._hub = hub

    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        hub = self._hub
        imp = hub._imports.get(channel)
        if imp is None:
            return
        data = encode_feedback(fb)
        for peer in imp.sources:
            hub.send(peer, ("fb", channel, data))
            hub.feedback_out += 1


class _MeshHandle:
    """What ``start_publish`` returns: local fan-out, then one copy to each interested worker."""

    __slots__ = ("_hub", "_interest", "_local", "channel")

    def __init__(self, hub: MeshChannelHub, channel: int, local: Any, interest: set[int]) -> None:
        self._hub = hub
        self.channel = channel
        self._local = local  # LocalChannelHub's handle
        self._interest = interest  # the workers that subscribe (the hub's set for this channel)

    def send(self, pkt: MediaPacket) -> None:
        local = self._local
        local.send(pkt)
        interest = self._interest
        if interest and local.channel.publisher is local:
            hub = self._hub
            item = ("p", self.channel, encode_packet(pkt))
            send = hub.send
            for peer in interest:
                send(peer, item)
            hub.packets_out += len(interest)

    def stop(self, now: float) -> None:
        local = self._local
        if local.channel.publisher is not local:
            return
        local.stop(now)
        self._hub._unpublished(now, self.channel, self)


class _MeshMessages:
    """A standing message sender (``open_messages``): each message to local and interested workers."""

    __slots__ = ("_hub", "channel", "open")

    def __init__(self, hub: MeshChannelHub, channel: int) -> None:
        self._hub = hub
        self.channel = channel
        self.open = True

    def send(self, now: float, sender: str, data: bytes) -> None:
        if self.open:
            self._hub.send_message(now, self.channel, sender, data)

    def close(self, now: float) -> None:
        self.open = False


class MeshChannelHub:
    """One worker's ChannelHub (and MessageHub): in process, plus the crossing to the other workers."""

    def __init__(self, send: Send, peers: list[int], local: LocalChannelHub | None = None) -> None:
        self.send = send
        self.peers = list(peers)
        self.local = local if local is not None else LocalChannelHub()
        self._published: dict[int, _MeshHandle] = {}  # channels a local publisher sends on
        self._interest: dict[int, set[int]] = {}  # channel -> the other workers that subscribe
        self._imports: dict[int, _Import] = {}
        self._msg_subscribers: dict[int, int] = {}  # message channel -> local subscribers
        self._msg_interest: dict[int, set[int]] = {}  # message channel -> the other workers subscribing
        # Counters (stats()).
        self.packets_out = 0  # packet copies sent to other workers (one per packet and worker)
        self.packets_in = 0
        self.bad_packets = 0
        self.dropped_no_source = 0  # packets for a channel no longer imported here
        self.feedback_out = 0
        self.feedback_in = 0
        self.bad_feedback = 0
        self.messages_out = 0
        self.messages_in = 0

    # -- the ChannelHub protocol ----------------------------------------------------------------

    def start_publish(self, now: float, channel: int, publisher: ChannelPublisher) -> _MeshHandle:
        imp = self._imports.get(channel)
        if imp is not None and imp.proxy is not None:
            imp.proxy = None  # the local publisher replaces the proxy (its handle goes stale)
        local = self.local.start_publish(now, channel, publisher)
        interest = self._interest.setdefault(channel, set())
        handle = self._published[channel] = _MeshHandle(self, channel, local, interest)
        for peer in interest:
            self.send(peer, ("src", channel, True))
        return handle

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        imp = self._imports.get(channel)
        if imp is None:
            imp = self._imports[channel] = _Import()
            for peer in self.peers:
                self.send(peer, ("sub", channel))
        if subscriber not in imp.subscribers:
            imp.subscribers.append(subscriber)
        self.local.subscribe(now, channel, subscriber)

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.local.unsubscribe(now, channel, subscriber)
        imp = self._imports.get(channel)
        if imp is None or subscriber not in imp.subscribers:
            return
        imp.subscribers.remove(subscriber)
        if imp.subscribers:
            return
        del self._imports[channel]
        for peer in self.peers:
            self.send(peer, ("unsub", channel))
        if imp.proxy is not None:
            imp.proxy.stop(now)  # nobody left to notify; lets the local hub drop the channel

    def feedback(self, now: float, channel: int, fb: Feedback) -> None:
        self.local.feedback(now, channel, fb)  # to the local publisher, or the proxy of a remote one

    # -- the MessageHub protocol ----------------------------------------------------------------

    def subscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        before = self.local.message_subscribers(channel)
        self.local.subscribe_messages(now, channel, subscriber)
        if before == 0 and self.local.message_subscribers(channel):
            for peer in self.peers:
                self.send(peer, ("msub", channel))

    def unsubscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        had = self.local.message_subscribers(channel)
        self.local.unsubscribe_messages(now, channel, subscriber)
        if had and not self.local.message_subscribers(channel):
            for peer in self.peers:
                self.send(peer, ("munsub", channel))

    def send_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        interest = self._msg_interest.get(channel)
        if self.local.message_subscribers(channel) or not interest:
            self.local.send_message(now, channel, sender, data)  # counts it dropped when nobody listens
        if interest:
            for peer in interest:
                self.send(peer, ("m", channel, sender, data))
            self.messages_out += len(interest)

    def open_messages(self, now: float, channel: int, kind: str) -> _MeshMessages:
        return _MeshMessages(self, channel)

    # -- from the other workers ------------------------------------------------------------------

    def on_sub(self, peer: int, channel: int) -> None:
        interest = self._interest.setdefault(channel, set())
        interest.add(peer)
        handle = self._published.get(channel)
        if handle is not None:
            self.send(peer, ("src", channel, True))

    def on_unsub(self, peer: int, channel: int) -> None:
        interest = self._interest.get(channel)
        if interest is None:
            return
        interest.discard(peer)
        if not interest and channel not in self._published:
            del self._interest[channel]

    def on_source(self, now: float, peer: int, channel: int, live: bool) -> None:
        imp = self._imports.get(channel)
        if imp is None:
            return
        if live:
            imp.sources.add(peer)
            if imp.proxy is None and channel not in self._published:
                imp.proxy = self.local.start_publish(now, channel, _Proxy(self))
        else:
            imp.sources.discard(peer)
            if not imp.sources and imp.proxy is not None:
                proxy, imp.proxy = imp.proxy, None
                proxy.stop(now)

    def on_packet(self, now: float, channel: int, data: bytes) -> None:
        imp = self._imports.get(channel)
        if imp is None or imp.proxy is None:
            self.dropped_no_source += 1
            return
        try:
            pkt = decode_packet(data)
        except BadMessage:
            self.bad_packets += 1
            return
        pkt.arrival = now
        self.packets_in += 1
        imp.proxy.send(pkt)

    def on_feedback(self, now: float, channel: int, data: bytes) -> None:
        if channel not in self._published:
            return
        try:
            fb = decode_feedback(data)
        except BadMessage:
            self.bad_feedback += 1
            return
        self.feedback_in += 1
        self.local.feedback(now, channel, fb)

    def on_msub(self, peer: int, channel: int) -> None:
        self._msg_interest.setdefault(channel, set()).add(peer)

    def on_munsub(self, peer: int, channel: int) -> None:
        interest = self._msg_interest.get(channel)
        if interest is not None:
            interest.discard(peer)
            if not interest:
                del self._msg_interest[channel]

    def on_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        if self.local.message_subscribers(channel):
            self.messages_in += 1
            self.local.send_message(now, channel, sender, data)  # local subscribers only, never back

    def peer_lost(self, now: float, peer: int) -> None:
        """``peer`` is gone: the channels it published go silent here, its subscriptions end."""
        for channel in [c for c, imp in self._imports.items() if peer in imp.sources]:
            self.on_source(now, peer, channel, False)
        for channel in list(self._interest):
            self.on_unsub(peer, channel)
        for channel in list(self._msg_interest):
            self.on_munsub(peer, channel)
        if peer in self.peers:
            self.peers.remove(peer)

    # -- internals -----------------------------------------------------------------------------

    def _unpublished(self, now: float, channel: int, handle: _MeshHandle) -> None:
        if self._published.get(channel) is not handle:
            return
        del self._published[channel]
        interest = self._interest.get(channel, set())
        for peer in interest:
            self.send(peer, ("src", channel, False))
        if not interest:
            self._interest.pop(channel, None)
        imp = self._imports.get(channel)
        if imp is not None and imp.sources and imp.proxy is None:
            imp.proxy = self.local.start_publish(now, channel, _Proxy(self))

    def stats(self) -> dict[str, int]:
        """Counters for /api/node/info and /metrics (``trackmesh_spread_*``)."""
        return {
            "channels_exported": sum(1 for c in self._published if self._interest.get(c)),
            "channels_imported": sum(1 for imp in self._imports.values() if imp.proxy is not None),
            "packets_out": self.packets_out,
            "packets_in": self.packets_in,
            "bad_packets": self.bad_packets,
            "dropped_no_source": self.dropped_no_source,
            "feedback_out": self.feedback_out,
            "feedback_in": self.feedback_in,
            "bad_feedback": self.bad_feedback,
            "messages_out": self.messages_out,
            "messages_in": self.messages_in,
        }


# -- the two together -----------------------------------------------------------------------------


class WorkerMesh:
    """One worker's registry and hub across the node's workers, and the dispatch of what arrives."""

    def __init__(self, index: int, workers: int, send: Send) -> None:
        self.index = index
        peers = [i for i in range(workers) if i != index]
        self.registry = MeshRegistry(send, peers)
        self.hub = MeshChannelHub(send, peers)
        self.bad_items = 0

    def on_items(self, now: float, peer: int, items: list[tuple[Any, ...]]) -> None:
        """What ``peer`` sent, in order. A malformed item is dropped and counted."""
        hub, registry = self.hub, self.registry
        for item in items:
            try:
                kind = item[0]
                if kind == "p":
                    hub.on_packet(now, item[1], item[2])
                elif kind == "fb":
                    hub.on_feedback(now, item[1], item[2])
                elif kind == "src":
                    hub.on_source(now, peer, item[1], bool(item[2]))
                elif kind == "sub":
                    hub.on_sub(peer, item[1])
                elif kind == "unsub":
                    hub.on_unsub(peer, item[1])
                elif kind == "put":
                    registry.on_put(now, peer, item[1], item[2], item[3])
                elif kind == "delete":
                    registry.on_delete(now, peer, item[1], item[2])
                elif kind == "watch":
                    registry.on_watch(now, peer, item[1])
                elif kind == "unwatch":
                    registry.on_unwatch(peer, item[1])
                elif kind == "m":
                    hub.on_message(now, item[1], item[2], item[3])
                elif kind == "msub":
                    hub.on_msub(peer, item[1])
                elif kind == "munsub":
                    hub.on_munsub(peer, item[1])
                else:
                    self.bad_items += 1
            except (IndexError, TypeError, ValueError, AttributeError):
                self.bad_items += 1

    def peer_lost(self, now: float, peer: int) -> None:
        self.hub.peer_lost(now, peer)
        self.registry.peer_lost(now, peer)

    def stats(self) -> dict[str, int]:
        return {**self.hub.stats(), "bad_items": self.bad_items, "peers": len(self.hub.peers)}
