"""ZenohChannelHub: the core's ChannelHub across the cluster, on a zenoh session.

In-process delivery is LocalChannelHub's, unchanged: this hub wraps one and only adds the
crossing between nodes.

- A publisher on this node starts a local channel (its local viewers are served in process) and
  *exports* it: a zenoh publisher on ``tm/ch/<channel>`` (remote destinations only), a liveliness
  token ``tm/src/<channel>/<member>`` (the channel is live here) and a subscriber on
  ``tm/fb/<channel>`` that hands viewers' feedback from other nodes to the local publisher.
  Packets are serialized only while some other node subscribes (zenoh matching status).
- A node with local subscribers to a channel *imports* it: while it has at least one, it holds
  one zenoh subscriber on ``tm/ch/<channel>`` and one liveliness subscriber on
  ``tm/src/<channel>/*``. So a track's media crosses to each interested node once, however many
  viewers it has there; the last unsubscribe undeclares both.
- While some other node publishes the channel (its token is present) and no local publisher
  does, a *proxy* publisher stands for it in the local hub: remote packets are sent through the
  proxy's handle to the local viewers, ``on_channel_source`` fires when the first remote token
  appears and when the last goes (the publisher stopped, or its node died), and feedback the local
  hub routes to the proxy is published on ``tm/fb/<channel>`` to the publisher's node. A local
  publisher takes precedence over remote ones on its own node.

Threads: zenoh callbacks only decode and hand a closure to ``post`` (the driver passes
``loop.call_soon_threadsafe``; media packets are queued and one drain is posted per burst, so a
busy link does not wake the loop once per packet); LocalChannelHub and every core callback run on the thread that
drains ``post``. ``clock`` gives ``now`` to those deferred calls (the driver passes loop.time or
time.monotonic, whichever clock its core calls use).

Wire format of a packet (network byte order)::

    version:u8=2 codec:u8 payload_type:u8 flags:u8 seq:u32 ts:u32 send_stamp:u32
    spatial:u8 temporal:u8 audio_level:u8 n_layers:u8 layers:u8*n_layers [alternate_of:u8] payload
    flags: 1 = marker, 2 = keyframe, 4 = audio_level present, 8 = alternate_of present
    (``MediaPacket.alternate_of``: the original codec of an alternate rendition's packet)
    send_stamp: the sender's wall clock in microseconds modulo 2**32 (cluster/hop_latency.py), read
    when the packet is put; the receiver observes the hop into ``trackmesh_cluster_hop_seconds``.

Version 1 is the same without ``send_stamp``. Every node decodes both; a hub sends version 2
unless made with ``media_version=1`` (``--cluster-media-version 1``: a rolling upgrade from
nodes that decode version 1 only, which drop and count version 2 packets as bad).

Feedback: ``version:u8=1 kind:u8 (0 keyframe, 1 bitrate, 2 alternate) origin:16 bytes bitrate_bps:u64``.
Malformed messages are dropped and counted.

Messages (the core's MessageHub path: message channels, the mixer's levels summaries) cross on
``tm/msg/<channel>``: a node holds one zenoh subscriber per message channel its local subscribers
watch, and a standing sender (``open_messages``) one zenoh publisher, serializing only while some
other node subscribes. Local subscribers get a message in process, never back through zenoh.
Wire format: ``version:u8=1 sender_len:u16 sender:utf-8 data``.

Channel kinds: a publisher or subscriber may carry a class attribute ``channel_kind`` (default
``"media"`` for media, ``"message"`` for messages); a standing message sender names its kind
(the mixer's per-room levels summaries say ``"levels"``, see core/mixer/levels.py). The hub
carries every kind alike and only counts them apart (:meth:`ZenohChannelHub.stats`), so "one copy
of each media channel crosses" stays checkable while the control channels come and go.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zenoh

from trackmesh.cluster.hop_latency import STAMP_MASK, HopLatency
from trackmesh.cluster.local import LocalChannelHub
from trackmesh.cluster.zenoh_registry import Post, undeclare
from trackmesh.core.channel import ChannelPublisher, ChannelSubscriber, Feedback, FeedbackKind, MessageSubscriber
from trackmesh.core.model import MediaCodec, MediaPacket

CH_ROOT = "tm/ch/"
FB_ROOT = "tm/fb/"
SRC_ROOT = "tm/src/"
MSG_ROOT = "tm/msg/"

_VERSION = 1  # feedback and messages; media packets: MEDIA_VERSIONS
MEDIA_VERSIONS = (1, 2)  # 2 adds the send stamp
# Packets from other nodes waiting for the loop, at most (about 1 s of 10 HD video tracks).
INBOX_LIMIT = 10_000
_HDR = struct.Struct("!BBBBIIBBBB")  # version 1
_HDR2 = struct.Struct("!BBBBIIIBBBB")  # version 2: send_stamp after ts
_F_MARKER, _F_KEYFRAME, _F_LEVEL, _F_ALTERNATE = 1, 2, 4, 8
_FB = struct.Struct("!BB16sQ")
_FB_KINDS = (FeedbackKind.KEYFRAME, FeedbackKind.BITRATE, FeedbackKind.ALTERNATE)
_MSG = struct.Struct("!BH")
MEDIA = "media"
MESSAGE = "message"
LEVELS = "levels"  # the mixer's levels summaries (core/mixer/levels.py), counted apart in stats()


def channel_kind(party: object, default: str = MEDIA) -> str:
    """The kind a publisher or subscriber declares (``channel_kind``), ``default`` otherwise."""
    kind = getattr(party, "channel_kind", default)
    return kind if isinstance(kind, str) else default


class BadMessage(ValueError):
    """A packet or feedback message that does not parse (dropped and counted)."""


def wall_stamp() -> int:
    """The send stamp now: wall-clock microseconds modulo 2**32 (why wall time: cluster/hop_latency.py)."""
    return (time.time_ns() // 1000) & STAMP_MASK


def encode_packet(pkt: MediaPacket, send_stamp: int | None = None) -> bytes:
    """Version 2 with ``send_stamp`` (:func:`wall_stamp`), version 1 without."""
    flags = (_F_MARKER if pkt.marker else 0) | (_F_KEYFRAME if pkt.keyframe else 0)
    level = 0
    if pkt.audio_level is not None:
        flags |= _F_LEVEL
        level = pkt.audio_level
    layers = pkt.layers
    alternate_of = pkt.alternate_of
    if alternate_of is not None:
        flags |= _F_ALTERNATE
        layers = (*layers, alternate_of)  # one more byte after the layer list (not counted in it)
    if send_stamp is None:
        head = _HDR.pack(
            1, pkt.codec, pkt.payload_type, flags, pkt.seq, pkt.ts, pkt.spatial, pkt.temporal, level, len(pkt.layers)
        )
    else:
        head = _HDR2.pack(
            2,
            pkt.codec,
            pkt.payload_type,
            flags,
            pkt.seq,
            pkt.ts,
            send_stamp,
            pkt.spatial,
            pkt.temporal,
            level,
            len(pkt.layers),
        )
    if layers:
        return head + bytes(layers) + pkt.payload
    return head + pkt.payload


def decode_packet(data: bytes) -> MediaPacket:
    return decode_stamped_packet(data)[0]


def decode_stamped_packet(data: bytes) -> tuple[MediaPacket, int]:
    """(packet, send stamp) of version 2, (packet, -1) of version 1; raises BadMessage."""
    version = data[0] if data else 0
    if version == 2:
        if len(data) < _HDR2.size:
            raise BadMessage("media packet shorter than its header")
        _, codec, pt, flags, seq, ts, stamp, spatial, temporal, level, n_layers = _HDR2.unpack_from(data)
        start = _HDR2.size
    elif version == 1:
        if len(data) < _HDR.size:
            raise BadMessage("media packet shorter than its header")
        _, codec, pt, flags, seq, ts, spatial, temporal, level, n_layers = _HDR.unpack_from(data)
        stamp = -1
        start = _HDR.size
    elif not data:
        raise BadMessage("media packet shorter than its header")
    else:
        raise BadMessage(f"media packet version {version} is not supported")
    if flags & ~(_F_MARKER | _F_KEYFRAME | _F_LEVEL | _F_ALTERNATE):
        raise BadMessage("media packet has unknown flags")
    try:
        media_codec = MediaCodec(codec)
    except ValueError as exc:
        raise BadMessage(f"unknown codec {codec}") from exc
    end = start + n_layers
    alternate_of = None
    if flags & _F_ALTERNATE:
        end += 1
    if len(data) < end:
        raise BadMessage("media packet shorter than its layer list")
    if flags & _F_ALTERNATE:
        try:
            alternate_of = MediaCodec(data[end - 1])
        except ValueError as exc:
            raise BadMessage(f"unknown alternate codec {data[end - 1]}") from exc
    pkt = MediaPacket(
        media_codec,
        pt,
        seq,
        ts,
        bool(flags & _F_MARKER),
        bool(flags & _F_KEYFRAME),
        data[end:],
        spatial,
        temporal,
        level if flags & _F_LEVEL else None,
        tuple(data[start : start + n_layers]),
        alternate_of=alternate_of,
    )
    return pkt, stamp


def encode_message(sender: str, data: bytes) -> bytes:
    name = sender.encode()[:65535]
    return _MSG.pack(_VERSION, len(name)) + name + data


def decode_message(data: bytes) -> tuple[str, bytes]:
    """(sender, data) of a message; raises BadMessage."""
    if len(data) < _MSG.size:
        raise BadMessage("message too short")
    version, n = _MSG.unpack_from(data)
    if version != _VERSION or _MSG.size + n > len(data):
        raise BadMessage("message has an unknown version or a truncated sender")
    try:
        sender = data[_MSG.size : _MSG.size + n].decode()
    except UnicodeDecodeError:
        raise BadMessage("message sender is not UTF-8") from None
    return sender, data[_MSG.size + n :]


def encode_feedback(fb: Feedback) -> bytes:
    return _FB.pack(_VERSION, _FB_KINDS.index(fb.kind), fb.origin.to_bytes(16, "big"), fb.bitrate_bps)


def decode_feedback(data: bytes) -> Feedback:
    if len(data) != _FB.size:
        raise BadMessage("feedback message has the wrong size")
    version, kind, origin, bitrate = _FB.unpack(data)
    if version != _VERSION or kind >= len(_FB_KINDS):
        raise BadMessage("feedback message has an unknown version or kind")
    return Feedback(_FB_KINDS[kind], int.from_bytes(origin, "big"), bitrate)


def _no_stamp() -> None:
    return None


def _matching(status: object) -> bool:
    # zenoh 1.10's stub says Publisher.matching_status is a bool; it returns a MatchingStatus.
    return bool(getattr(status, "matching", status))


class _Export:
    """A channel published on this node, made visible to the other nodes."""

    __slots__ = ("fb_sub", "interest", "kind", "listener", "publisher", "token")

    def __init__(self, hub: ZenohChannelHub, channel: int, kind: str = MEDIA) -> None:
        self.kind = kind
        session = hub.session
        self.publisher = session.declare_publisher(
            f"{CH_ROOT}{channel}",
            express=hub.express,
            congestion_control=zenoh.CongestionControl.DROP,
            allowed_destination=zenoh.Locality.REMOTE,
        )
        self.interest = _matching(self.publisher.matching_status)
        self.listener = self.publisher.declare_matching_listener(self._on_matching)
        self.fb_sub = session.declare_subscriber(
            f"{FB_ROOT}{channel}", hub._feedback_callback(channel), allowed_origin=zenoh.Locality.REMOTE
        )
        self.token = session.liveliness().declare_token(f"{SRC_ROOT}{channel}/{hub.member}")

    def _on_matching(self, status: zenoh.MatchingStatus) -> None:
        self.interest = _matching(status)  # zenoh thread; a bool store is atomic

    def close(self) -> None:
        for entity in (self.token, self.fb_sub, self.listener, self.publisher):
            undeclare(entity)


class _ExportHandle:
    """What ``start_publish`` returns: local fan-out, then one zenoh put for all other nodes."""

    __slots__ = ("_export", "_hub", "_local", "channel")

    def __init__(self, hub: ZenohChannelHub, channel: int, local: Any, export: _Export) -> None:
        self._hub = hub
        self.channel = channel
        self._local = local  # LocalChannelHub's handle
        self._export = export

    def _current(self) -> bool:
        return bool(self._local.channel.publisher is self._local)

    def send(self, pkt: MediaPacket) -> None:
        local = self._local
        local.send(pkt)
        export = self._export
        # A replay (a key-frame cache's copies, MediaPacket.replay) stays on this node: the wire format
        # does not carry the mark, and other nodes' viewers that already play would take the copies.
        if export.interest and not pkt.replay and local.channel.publisher is local:
            hub = self._hub
            export.publisher.put(encode_packet(pkt, hub._send_stamp()))
            hub.packets_out += 1

    def stop(self, now: float) -> None:
        if not self._current():
            return
        self._local.stop(now)
        self._hub._unexport(now, self.channel)


class _Import:
    """A channel this node's subscribers watch: one zenoh subscription however many they are."""

    __slots__ = ("kind", "live_sub", "media_sub", "proxy", "sources", "subscribers")

    def __init__(self, hub: ZenohChannelHub, channel: int, kind: str = MEDIA) -> None:
        self.kind = kind
        self.subscribers: list[ChannelSubscriber] = []
        self.sources: set[str] = set()
        self.proxy: Any = None  # LocalChannelHub handle of the proxy publisher, while it is current
        handler = zenoh.handlers.Callback(hub._media_callback(channel), indirect=hub.indirect)
        self.media_sub = hub.session.declare_subscriber(
            f"{CH_ROOT}{channel}", handler, allowed_origin=zenoh.Locality.REMOTE
        )
        self.live_sub = hub.session.liveliness().declare_subscriber(
            f"{SRC_ROOT}{channel}/*", hub._source_callback(channel), history=True
        )

    def close(self) -> None:
        undeclare(self.media_sub)
        undeclare(self.live_sub)


class _Proxy:
    """Stands in the local hub for a publisher on another node: feedback goes over zenoh."""

    __slots__ = ("_hub",)

    def __init__(self, hub: ZenohChannelHub) -> None:
        self._hub = hub

    def on_channel_feedback(self, now: float, channel: int, fb: Feedback) -> None:
        hub = self._hub
        if hub.closed:
            return
        hub.session.put(f"{FB_ROOT}{channel}", encode_feedback(fb), allowed_destination=zenoh.Locality.REMOTE)
        hub.feedback_out += 1


class _MessageImport:
    """A message channel this node's subscribers watch: one zenoh subscription however many they are."""

    __slots__ = ("kind", "sub", "subscribers")

    def __init__(self, hub: ZenohChannelHub, channel: int, kind: str) -> None:
        self.kind = kind
        self.subscribers: list[MessageSubscriber] = []
        self.sub = hub.session.declare_subscriber(
            f"{MSG_ROOT}{channel}", hub._message_callback(channel), allowed_origin=zenoh.Locality.REMOTE
        )

    def close(self) -> None:
        undeclare(self.sub)


class _MessageExport:
    """A standing message sender of this node (``open_messages``): a zenoh publisher whose messages
    are serialized only while another node subscribes."""

    __slots__ = ("channel", "closed", "interest", "kind", "listener", "publisher", "users")

    def __init__(self, hub: ZenohChannelHub, channel: int, kind: str) -> None:
        self.channel = channel
        self.kind = kind
        self.users = 0
        self.closed = False
        self.publisher = hub.session.declare_publisher(
            f"{MSG_ROOT}{channel}",
            express=hub.express,
            congestion_control=zenoh.CongestionControl.DROP,
            allowed_destination=zenoh.Locality.REMOTE,
        )
        self.interest = _matching(self.publisher.matching_status)
        self.listener = self.publisher.declare_matching_listener(self._on_matching)

    def _on_matching(self, status: zenoh.MatchingStatus) -> None:
        self.interest = _matching(status)  # zenoh thread; a bool store is atomic

    def close(self) -> None:
        self.closed = True
        for entity in (self.listener, self.publisher):
            undeclare(entity)


class _MessageHandle:
    """What ``open_messages`` returns: local delivery, then one zenoh put for all other nodes."""

    __slots__ = ("_export", "_hub", "open")

    def __init__(self, hub: ZenohChannelHub, export: _MessageExport) -> None:
        self._hub = hub
        self._export = export
        self.open = True

    def send(self, now: float, sender: str, data: bytes) -> None:
        if not self.open:
            return
        export = self._export
        self._hub.local.send_message(now, export.channel, sender, data)
        if export.interest and not export.closed:
            export.publisher.put(encode_message(sender, data))
            self._hub.messages_out += 1

    def close(self, now: float) -> None:
        if self.open:
            self.open = False
            self._hub._close_messages(self._export)


class ZenohChannelHub:
    """The cluster-wide ChannelHub of one node. Call every method from the ``post`` thread."""

    def __init__(
        self,
        session: zenoh.Session,
        post: Post,
        clock: Callable[[], float],
        *,
        local: LocalChannelHub | None = None,
        member: str | None = None,
        express: bool = True,
        indirect: bool = False,
        media_version: int = 2,
        stamp_clock: Callable[[], int] = wall_stamp,
    ) -> None:
        """``stamp_clock``: send and arrival stamps of the hop histogram (``wall_stamp``; tests pass a
        virtual one); ``media_version``: the packet version sent (1: no send stamp)."""
        if media_version not in MEDIA_VERSIONS:
            raise ValueError(f"media_version must be one of {MEDIA_VERSIONS}")
        self.session = session
        self.local = local if local is not None else LocalChannelHub()
        self.member = member if member is not None else str(session.zid())
        self.express = express
        self.indirect = indirect
        self.closed = False
        self._post_fn = post
        self._clock = clock
        self._stamp_clock = stamp_clock
        self._send_stamp: Callable[[], int | None] = stamp_clock if media_version == 2 else _no_stamp
        self.hop = HopLatency()  # trackmesh_cluster_hop_seconds: observed on the loop thread only
        self._exports: dict[int, _Export] = {}
        self._imports: dict[int, _Import] = {}
        self._msg_exports: dict[int, _MessageExport] = {}
        self._msg_imports: dict[int, _MessageImport] = {}
        # Packets decoded on zenoh threads, waiting for the loop (see _media_callback).
        self._inbox: deque[tuple[int, MediaPacket, int]] = deque()
        self._drain_posted = False
        self.inbox_limit = INBOX_LIMIT
        self.inbox_dropped = 0
        # Counters (read them for metrics).
        self.packets_out = 0
        self.packets_in = 0
        self.bad_packets = 0
        self.dropped_no_source = 0
        self.feedback_out = 0
        self.feedback_in = 0
        self.bad_feedback = 0
        self.messages_out = 0
        self.messages_in = 0
        self.bad_messages = 0

    # -- the ChannelHub protocol --------------------------------------------------------------

    def start_publish(self, now: float, channel: int, publisher: ChannelPublisher) -> _ExportHandle:
        imp = self._imports.get(channel)
        if imp is not None and imp.proxy is not None:
            imp.proxy = None  # the local publisher replaces the proxy (its handle goes stale)
        local = self.local.start_publish(now, channel, publisher)
        export = self._exports.get(channel)
        if export is None:
            export = self._exports[channel] = _Export(self, channel, channel_kind(publisher))
        return _ExportHandle(self, channel, local, export)

    def subscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        imp = self._imports.get(channel)
        if imp is None:
            imp = self._imports[channel] = _Import(self, channel, channel_kind(subscriber))
        if subscriber not in imp.subscribers:
            imp.subscribers.append(subscriber)
        self.local.subscribe(now, channel, subscriber)

    def unsubscribe(self, now: float, channel: int, subscriber: ChannelSubscriber) -> None:
        self.local.unsubscribe(now, channel, subscriber)
        imp = self._imports.get(channel)
        if imp is None or subscriber not in imp.subscribers:
            return
        imp.subscribers.remove(subscriber)
        if not imp.subscribers:
            del self._imports[channel]
            imp.close()
            if imp.proxy is not None:
                imp.proxy.stop(now)  # nobody left to notify; lets the local hub drop the channel

    def feedback(self, now: float, channel: int, fb: Feedback) -> None:
        self.local.feedback(now, channel, fb)

    # -- the MessageHub protocol --------------------------------------------------------------

    def subscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        imp = self._msg_imports.get(channel)
        if imp is None:
            imp = self._msg_imports[channel] = _MessageImport(self, channel, channel_kind(subscriber, MESSAGE))
        if subscriber not in imp.subscribers:
            imp.subscribers.append(subscriber)
        self.local.subscribe_messages(now, channel, subscriber)

    def unsubscribe_messages(self, now: float, channel: int, subscriber: MessageSubscriber) -> None:
        self.local.unsubscribe_messages(now, channel, subscriber)
        imp = self._msg_imports.get(channel)
        if imp is None or subscriber not in imp.subscribers:
            return
        imp.subscribers.remove(subscriber)
        if not imp.subscribers:
            del self._msg_imports[channel]
            imp.close()

    def send_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        self.local.send_message(now, channel, sender, data)
        if self.closed:
            return
        payload = encode_message(sender, data)
        self.session.put(f"{MSG_ROOT}{channel}", payload, allowed_destination=zenoh.Locality.REMOTE)
        self.messages_out += 1

    def open_messages(self, now: float, channel: int, kind: str) -> _MessageHandle:
        export = self._msg_exports.get(channel)
        if export is None:
            export = self._msg_exports[channel] = _MessageExport(self, channel, kind)
        export.users += 1
        return _MessageHandle(self, export)

    # -- introspection and shutdown ---------------------------------------------------------

    def imported(self, kind: str = MEDIA) -> list[int]:
        """Channels of ``kind`` (media or a message kind) this node holds a zenoh subscription for."""
        media = [ch for ch, imp in self._imports.items() if imp.kind == kind]
        return media + [ch for ch, mimp in self._msg_imports.items() if mimp.kind == kind]

    def exported(self, kind: str = MEDIA) -> list[int]:
        """Channels of ``kind`` published (media) or sent on by a standing sender (messages) on this node."""
        media = [ch for ch, exp in self._exports.items() if exp.kind == kind]
        return media + [ch for ch, mexp in self._msg_exports.items() if mexp.kind == kind]

    def stats(self) -> dict[str, int]:
        """Counters for /api/node/info: media channels apart from the mixer's levels channels."""
        exported = {MEDIA: 0, LEVELS: 0}
        imported = {MEDIA: 0, LEVELS: 0}
        for kind in [e.kind for e in self._exports.values()] + [e.kind for e in self._msg_exports.values()]:
            exported[kind] = exported.get(kind, 0) + 1
        for kind in [i.kind for i in self._imports.values()] + [i.kind for i in self._msg_imports.values()]:
            imported[kind] = imported.get(kind, 0) + 1
        out = {
            "channels_exported": exported.pop(MEDIA),
            "channels_imported": imported.pop(MEDIA),
        }
        for kind, n in exported.items():
            out[f"{kind}_channels_exported"] = n
        for kind, n in imported.items():
            out[f"{kind}_channels_imported"] = n
        out.update(
            packets_out=self.packets_out,
            packets_in=self.packets_in,
            bad_packets=self.bad_packets,
            feedback_out=self.feedback_out,
            feedback_in=self.feedback_in,
            messages_out=self.messages_out,
            messages_in=self.messages_in,
            bad_messages=self.bad_messages,
        )
        return out

    def hop_stats(self) -> dict[str, Any]:
        """The hop histogram (``HopLatency.to_dict``) for the node's /metrics."""
        return self.hop.to_dict()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for export in self._exports.values():
            export.close()
        for imp in self._imports.values():
            imp.close()
        for mexp in self._msg_exports.values():
            mexp.close()
        for mimp in self._msg_imports.values():
            mimp.close()
        self._exports.clear()
        self._imports.clear()
        self._msg_exports.clear()
        self._msg_imports.clear()

    # -- internals (post thread) ---------------------------------------------------------------

    def _unexport(self, now: float, channel: int) -> None:
        export = self._exports.pop(channel, None)
        if export is not None:
            export.close()
        imp = self._imports.get(channel)
        if imp is not None and imp.sources and imp.proxy is None:
            imp.proxy = self.local.start_publish(now, channel, _Proxy(self))

    def _close_messages(self, export: _MessageExport) -> None:
        export.users -= 1
        if export.users == 0 and self._msg_exports.get(export.channel) is export:
            del self._msg_exports[export.channel]
            export.close()

    def _remote_message(self, channel: int, sender: str, data: bytes) -> None:
        if self.closed or channel not in self._msg_imports:
            return
        self.messages_in += 1
        self.local.send_message(self._clock(), channel, sender, data)

    def _count_bad_message(self) -> None:
        self.bad_messages += 1

    def _post(self, fn: Callable[[], None]) -> None:
        # RuntimeError: the driver's loop is gone, we are shutting down.
        with contextlib.suppress(RuntimeError):
            self._post_fn(fn)

    def _deliver(self, channel: int, pkt: MediaPacket) -> None:
        imp = self._imports.get(channel)
        if imp is None or imp.proxy is None:
            self.dropped_no_source += 1
            return
        self.packets_in += 1
        imp.proxy.send(pkt)

    def _source(self, channel: int, member: str, live: bool) -> None:
        imp = self._imports.get(channel)
        if self.closed or imp is None or member == self.member:
            return
        if live:
            imp.sources.add(member)
            if imp.proxy is None and channel not in self._exports:
                imp.proxy = self.local.start_publish(self._clock(), channel, _Proxy(self))
        else:
            imp.sources.discard(member)
            if not imp.sources and imp.proxy is not None:
                proxy, imp.proxy = imp.proxy, None
                proxy.stop(self._clock())

    def _remote_feedback(self, channel: int, fb: Feedback) -> None:
        if self.closed or channel not in self._exports:
            return
        self.feedback_in += 1
        self.local.feedback(self._clock(), channel, fb)

    def _count_bad_packet(self) -> None:
        self.bad_packets += 1

    def _count_bad_feedback(self) -> None:
        self.bad_feedback += 1

    # -- zenoh callbacks (zenoh threads) -----------------------------------------------------

    def _media_callback(self, channel: int) -> Callable[[zenoh.Sample], None]:
        inbox = self._inbox

        def on_media(sample: zenoh.Sample) -> None:
            try:
                pkt, stamp = decode_stamped_packet(sample.payload.to_bytes())
            except BadMessage:
                self._post(self._count_bad_packet)
                return
            if len(inbox) >= self.inbox_limit:
                self.inbox_dropped += 1  # the loop is this far behind: real-time media is stale
                return
            inbox.append((channel, pkt, stamp))
            # One wake-up of the loop per burst, not per packet (deque ops are atomic).
            if not self._drain_posted:
                self._drain_posted = True
                self._post(self._drain_inbox)

        return on_media

    def _drain_inbox(self) -> None:
        self._drain_posted = False  # first: a packet appended from now on posts a new drain
        inbox, deliver, observe = self._inbox, self._deliver, self.hop.observe
        # Only the packets already here, counted before the clocks are read: one appended by a
        # zenoh thread during this drain was stamped after now_stamp and would count as a clock
        # behind; the drain it posted takes it.
        count = len(inbox)
        now = self._clock()  # the packets' arrival: the now of every viewer's sink they reach
        now_stamp = self._stamp_clock()  # ... and the end of their hop (the histogram's clock)
        for _ in range(count):
            channel, pkt, stamp = inbox.popleft()
            pkt.arrival = now
            if stamp >= 0:
                observe(stamp, now_stamp)
            deliver(channel, pkt)

    def _source_callback(self, channel: int) -> Callable[[zenoh.Sample], None]:
        def on_source(sample: zenoh.Sample) -> None:
            member = str(sample.key_expr).rpartition("/")[2]
            live = sample.kind == zenoh.SampleKind.PUT
            self._post(lambda: self._source(channel, member, live))

        return on_source

    def _feedback_callback(self, channel: int) -> Callable[[zenoh.Sample], None]:
        def on_feedback(sample: zenoh.Sample) -> None:
            try:
                fb = decode_feedback(sample.payload.to_bytes())
            except BadMessage:
                self._post(self._count_bad_feedback)
                return
            self._post(lambda: self._remote_feedback(channel, fb))

        return on_feedback

    def _message_callback(self, channel: int) -> Callable[[zenoh.Sample], None]:
        def on_message(sample: zenoh.Sample) -> None:
            try:
                sender, data = decode_message(sample.payload.to_bytes())
            except BadMessage:
                self._post(self._count_bad_message)
                return
            self._post(lambda: self._remote_message(channel, sender, data))

        return on_message
