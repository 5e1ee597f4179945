"""The MoQ relay across the cluster: a namespace published on one node is subscribable on every
node, and each track crosses to each interested node once (docs/moq.md "Cluster"). Sans-IO: it
is fed ``now`` and works on the core's :class:`~trackmesh.core.registry.Registry` and
:class:`~trackmesh.core.channel.MessageHub` (zenoh on a media node, in process in tests).

- **Where a namespace lives**: every namespace a MoQ session publishes on this node
  (PUBLISH_NAMESPACE, seen through a :class:`~.local_subscriber.LocalSubscriber` watching every
  namespace) is put in the registry as ``moq/ns/<namespace>/<member>``; so is the namespace of a
  publisher-initiated track (PUBLISH, ``Relay.on_published_track``) while one lives here. The registry drops a dead
  member's entries, so a crashed node's namespaces vanish everywhere.
- **Importing (the subscriber's node)**: for each namespace some other member publishes, a
  :class:`~.local_publisher.LocalPublisher` is the relay's provider of that prefix. The relay asks
  it for a track when a local subscriber wants one (sessions published here take precedence, as
  do longer prefixes). It then subscribes the track's message channel and puts
  ``moq/want/<namespace>/<track>/<member>``; the first answer (OK, or the first object) accepts the
  track, REFUSED refuses it with the publisher's code. The relay shares that one import between
  all local subscribers of the track; when the last leaves, the want is deleted. Each such
  namespace is announced to this node's SUBSCRIBE_NAMESPACE sessions (NAMESPACE, then
  NAMESPACE_DONE when no node publishes it any more), as one published here is. A namespace
  published on several nodes is imported from one of them (the want names it, and only its
  messages are taken); when that node withdraws it, the imported tracks end (GOING_AWAY).
- **Tracks offered across nodes**: each publisher-initiated track here is also put in the registry,
  as ``moq/track/<namespace>/<track>/<member>``. A session on another node whose namespace
  subscription asks for tracks (SUBSCRIBE_NAMESPACE with the PUBLISH option, draft-20
  SUBSCRIBE_TRACKS) under a prefix of its namespace makes that node open the track through its
  import (``Relay.open_track``): once the publisher's node answers, the relay offers it by PUBLISH,
  as it offers a track published on its own node. One import serves every offer of a node; a track
  whose offers are all refused or ended is let go.
- **Exporting (the publisher's node)**: each want for a namespace published here makes one local
  subscription through the relay, whose objects are sent once on the track's message channel,
  however many nodes and subscribers want it (zenoh sends one copy to each interested node). The
  last want deleted ends the local subscription.

The message channel of a track is ``blake2b("moq" namespace track)``; its messages (network byte
order): ``1`` OK; ``2 code:u64 reason`` REFUSED; ``3 group:u64 object:u64 ext_len:u32 ext payload``
OBJECT; ``4 status:u64 reason`` DONE (PUBLISH_DONE). Malformed messages are dropped and counted.

Across nodes each group is one subgroup (0); the publisher's subgroups, priorities and datagram
framing are not carried. A node that joins a track already exported starts on the next group.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from trackmesh.core.channel import MessageHub, MessageSender
from trackmesh.core.registry import Registry
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import PublishDoneCode, RequestErrorCode
from trackmesh.transports.moq.local_publisher import LocalPublisher, LocalTrack
from trackmesh.transports.moq.local_subscriber import LocalSubscriber
from trackmesh.transports.moq.relay import NamespaceSubscriber, Relay

__all__ = ["ClusterRelay", "decode_message", "encode_object", "namespace_key", "track_channel"]

NS_ROOT = "moq/ns/"
TRACK_ROOT = "moq/track/"
WANT_ROOT = "moq/want/"
KIND = "moq"  # the hub counts this kind of message channel apart (moq_channels_exported/imported)

OK, REFUSED, OBJECT, DONE = 1, 2, 3, 4
_OBJECT = struct.Struct("!BQQI")
_CODE = struct.Struct("!BQ")
WITHDRAWN = "the namespace was withdrawn on its node, or its node left the cluster"


class BadClusterMessage(ValueError):
    """A message on a MoQ track channel that does not parse (dropped and counted)."""


def _field(data: bytes) -> str:
    return "x" + data.hex()  # never an empty key chunk, never a character zenoh reserves


def namespace_key(namespace: m.TrackNamespace) -> str:
    return ".".join(_field(f) for f in namespace)


def parse_namespace_key(text: str) -> m.TrackNamespace:
    fields = text.split(".")
    if not all(f.startswith("x") for f in fields):
        raise ValueError(f"not a namespace key: {text!r}")
    return tuple(bytes.fromhex(f[1:]) for f in fields)


def track_channel(namespace: m.TrackNamespace, name: bytes) -> int:
    key = f"moq/{namespace_key(namespace)}/{_field(name)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def encode_object(group: int, object_id: int, payload: bytes, extensions: bytes) -> bytes:
    return _OBJECT.pack(OBJECT, group, object_id, len(extensions)) + extensions + payload


def encode_code(kind: int, code: int, reason: str) -> bytes:
    return _CODE.pack(kind, code) + reason.encode()[:1024]


def decode_message(data: bytes) -> tuple[int, int, int, bytes, bytes]:
    """(kind, group or code, object id, extensions, payload or reason)."""
    if not data:
        raise BadClusterMessage("empty message")
    kind = data[0]
    if kind == OK:
        return OK, 0, 0, b"", b""
    if kind in (REFUSED, DONE):
        if len(data) < _CODE.size:
            raise BadClusterMessage("code message shorter than its header")
        _, code = _CODE.unpack_from(data)
        return kind, code, 0, b"", data[_CODE.size :]
    if kind == OBJECT:
        if len(data) < _OBJECT.size:
            raise BadClusterMessage("object shorter than its header")
        _, group, object_id, ext_len = _OBJECT.unpack_from(data)
        end = _OBJECT.size + ext_len
        if end > len(data):
            raise BadClusterMessage("object extensions past its end")
        return OBJECT, group, object_id, data[_OBJECT.size : end], data[end:]
    raise BadClusterMessage(f"unknown message kind {kind}")


@dataclass(eq=False)
class _Export:
    """One track published here that other nodes want: one local subscription, one sender."""

    relay: ClusterRelay
    namespace: m.TrackNamespace
    name: bytes
    sender: MessageSender
    wants: set[str] = field(default_factory=set)
    request_id: int | None = None
    ok: bool = False
    ended: bool = False

    def send(self, data: bytes) -> None:
        self.sender.send(self.relay.now, self.relay.member, data)

    # -- TrackHandler (the local subscription's answers and objects) -------------------------

    def on_subscribed(self) -> None:
        self.ok = True
        self.send(bytes([OK]))

    def on_refused(self, code: int, reason: str) -> None:
        self.send(encode_code(REFUSED, code, reason))
        self.relay._end_export(self)

    def on_object(self, group: int, object_id: int, payload: bytes, extensions: bytes) -> None:
        self.send(encode_object(group, object_id, payload, extensions))
        self.relay.counters["objects_out"] += 1

    def on_done(self, status: int, reason: str) -> None:
        self.send(encode_code(DONE, status, reason))
        self.relay._end_export(self)


@dataclass(eq=False)
class _Import:
    """One track of another node's namespace that local subscribers watch."""

    local: LocalTrack
    channel: int
    want_key: str
    source: str  # the member this node imports from (a namespace published on several nodes)


class _Watcher:
    """A registry watcher of one prefix, handing its changes to two of the relay's methods."""

    __slots__ = ("delete", "put")

    def __init__(self, put: Callable[[float, str, bytes], None], delete: Callable[[float, str], None]) -> None:
        self.put = put
        self.delete = delete

    def on_registry_put(self, now: float, key: str, value: bytes) -> None:
        self.put(now, key, value)

    def on_registry_delete(self, now: float, key: str) -> None:
        self.delete(now, key)


class ClusterRelay:
    """This node's relay as one member of the cluster-wide relay (see the module docstring)."""

    channel_kind = KIND  # as a MessageSubscriber of the track channels

    def __init__(self, relay: Relay, registry: Registry, hub: MessageHub, member: str, now: float) -> None:
        self.relay = relay
        self.registry = registry
        self.hub = hub
        self.member = member
        self.now = now
        self.counters = {
            "objects_out": 0,  # objects sent on track channels (once per object, whoever wants it)
            "objects_in": 0,  # objects received from other nodes
            "exports_total": 0,
            "imports_total": 0,
            "bad_messages": 0,
            "tracks_opened": 0,  # tracks of other nodes opened to offer them to namespace subscribers
        }
        self.local_namespaces: set[m.TrackNamespace] = set()  # in the registry as ours
        self.announced: set[m.TrackNamespace] = set()  # PUBLISH_NAMESPACE by a session here
        self.published_tracks: dict[m.TrackNamespace, int] = {}  # PUBLISHed tracks here, per namespace
        self.track_entries: set[str] = set()  # our moq/track/ registry entries
        #: Publisher-initiated tracks of other nodes: (namespace, name) -> the members publishing them.
        self.remote_tracks: dict[tuple[m.TrackNamespace, bytes], set[str]] = {}
        self.remote: dict[m.TrackNamespace, set[str]] = {}  # namespace -> members publishing it
        self.providers: dict[m.TrackNamespace, LocalPublisher] = {}
        self.exports: dict[tuple[m.TrackNamespace, bytes], _Export] = {}
        self.imports: dict[int, _Import] = {}  # channel -> import
        self._closed = False
        self._ns_watcher = _Watcher(self._namespace_put, self._namespace_delete)
        self._want_watcher = _Watcher(self._want_put, self._want_delete)
        self._track_watcher = _Watcher(self._track_put, self._track_delete)
        self.subscriber = LocalSubscriber(relay, self._local_namespace)
        registry.watch(now, NS_ROOT, self._ns_watcher)
        registry.watch(now, WANT_ROOT, self._want_watcher)
        registry.watch(now, TRACK_ROOT, self._track_watcher)
        self.subscriber.watch_namespaces(())
        relay.on_published_track = self._published_track
        relay.on_track_subscriber = self._track_subscriber

    def tick(self, now: float) -> None:
        self.now = now

    def metrics(self) -> dict[str, int]:
        c = self.counters
        return {
            "cluster_namespaces_here": len(self.local_namespaces),
            "cluster_namespaces_remote": len(self.remote),
            "cluster_tracks_exported": len(self.exports),
            "cluster_tracks_imported": len(self.imports),
            "cluster_tracks_remote": len(self.remote_tracks),
            "cluster_tracks_opened_total": c["tracks_opened"],
            "cluster_exports_total": c["exports_total"],
            "cluster_imports_total": c["imports_total"],
            "cluster_objects_out_total": c["objects_out"],
            "cluster_objects_in_total": c["objects_in"],
            "cluster_bad_messages_total": c["bad_messages"],
        }

    def close(self, now: float) -> None:
        """The node stops: imports end (GOING_AWAY), exports stop, our registry entries go."""
        if self._closed:
            return
        self.now = now
        for imp in list(self.imports.values()):
            imp.local.end(now, "node stopping", PublishDoneCode.GOING_AWAY)
            self._drop_import(imp)
        for export in list(self.exports.values()):
            self._end_export(export)
        self._closed = True
        if self.relay.on_published_track == self._published_track:
            self.relay.on_published_track = None
        if self.relay.on_track_subscriber == self._track_subscriber:
            self.relay.on_track_subscriber = None
        self.subscriber.close()
        for namespace, provider in self.providers.items():
            provider.close()
            self.relay.remote_namespace(namespace, False)
        self.providers.clear()
        self.registry.unwatch(NS_ROOT, self._ns_watcher)
        self.registry.unwatch(WANT_ROOT, self._want_watcher)
        self.registry.unwatch(TRACK_ROOT, self._track_watcher)
        for namespace in self.local_namespaces:
            self.registry.delete(now, self._ns_entry(namespace))
        self.local_namespaces.clear()
        for key in self.track_entries:
            self.registry.delete(now, key)
        self.track_entries.clear()
        self.remote_tracks.clear()

    # -- namespaces published here -------------------------------------------------------------

    def _ns_entry(self, namespace: m.TrackNamespace) -> str:
        return f"{NS_ROOT}{namespace_key(namespace)}/{self.member}"

    def _local_namespace(self, namespace: m.TrackNamespace, live: bool) -> None:
        if live:
            self.announced.add(namespace)
        else:
            self.announced.discard(namespace)
        self._sync_local(namespace)

    def _published_track(self, namespace: m.TrackNamespace, name: bytes, live: bool) -> None:
        """A publisher-initiated track (PUBLISH, no PUBLISH_NAMESPACE needed) starts or goes: its
        namespace is published here while it has one, so the other nodes can import its tracks, and
        the track itself is listed, so the other nodes offer it to their namespace subscribers."""
        count = self.published_tracks.get(namespace, 0) + (1 if live else -1)
        if count > 0:
            self.published_tracks[namespace] = count
        else:
            self.published_tracks.pop(namespace, None)
        self._sync_local(namespace)
        if self._closed or not namespace:
            return
        key = f"{TRACK_ROOT}{namespace_key(namespace)}/{_field(name)}/{self.member}"
        if live and key not in self.track_entries:
            self.track_entries.add(key)
            self.registry.put(self.now, key, b"")
        elif not live and key in self.track_entries:
            self.track_entries.discard(key)
            self.registry.delete(self.now, key)

    # -- tracks of other nodes, offered to namespace subscribers ----------------------------------

    def _parse_track(self, key: str) -> tuple[m.TrackNamespace, bytes, str] | None:
        parts = self._split(key, TRACK_ROOT, 3)
        if parts is None or parts[2] == self.member or not parts[1].startswith("x"):
            return None
        try:
            return parse_namespace_key(parts[0]), bytes.fromhex(parts[1][1:]), parts[2]
        except ValueError:
            return None

    def _track_put(self, now: float, key: str, value: bytes) -> None:
        self.now = now
        parsed = self._parse_track(key)
        if parsed is None:
            return
        namespace, name, member = parsed
        self.remote_tracks.setdefault((namespace, name), set()).add(member)
        self._open_for_offers(namespace, name)

    def _track_delete(self, now: float, key: str) -> None:
        self.now = now
        parsed = self._parse_track(key)
        if parsed is None:
            return
        namespace, name, member = parsed
        members = self.remote_tracks.get((namespace, name))
        if members is not None:
            members.discard(member)
            if not members:
                del self.remote_tracks[(namespace, name)]
        # An open import ends by the publisher's own PUBLISH_DONE, or as its namespace is withdrawn.

    def _track_subscriber(self, ns_sub: NamespaceSubscriber) -> None:
        """A session here asks for the tracks under a prefix: open those of other nodes."""
        for namespace, name in list(self.remote_tracks):
            if namespace[: len(ns_sub.prefix)] == ns_sub.prefix and ns_sub.allows(namespace):
                self._open_for_offers(namespace, name)

    def _open_for_offers(self, namespace: m.TrackNamespace, name: bytes) -> None:
        """Import a track of another node if some session here asked for the tracks under its
        namespace; the relay offers it to them once it is live. Only through our import of its
        namespace: a session here that publishes it (or a longer prefix) takes precedence."""
        if self._closed:
            return
        provider = self.providers.get(namespace)
        if provider is None or self.relay.namespace_publisher(namespace) is not provider:
            return  # its namespace is not (yet) known here: _namespace_put opens it then
        wanted = any(
            s.remote and s.wants_tracks() and namespace[: len(s.prefix)] == s.prefix and s.allows(namespace)
            for s in self.relay.namespace_subscribers
        )
        if wanted and self.relay.open_track(namespace, name, self.now):
            self.counters["tracks_opened"] += 1

    def _sync_local(self, namespace: m.TrackNamespace) -> None:
        if self._closed or not namespace:
            return
        live = namespace in self.announced or namespace in self.published_tracks
        if live and namespace not in self.local_namespaces:
            self.local_namespaces.add(namespace)
            self.registry.put(self.now, self._ns_entry(namespace), b"")
        elif not live and namespace in self.local_namespaces:
            self.local_namespaces.discard(namespace)
            self.registry.delete(self.now, self._ns_entry(namespace))

    # -- namespaces published elsewhere ------------------------------------------------------

    @staticmethod
    def _split(key: str, root: str, parts: int) -> list[str] | None:
        rest = key[len(root) :].split("/")
        return rest if len(rest) == parts and all(rest) else None

    def _namespace_put(self, now: float, key: str, value: bytes) -> None:
        self.now = now
        parts = self._split(key, NS_ROOT, 2)
        if parts is None or parts[1] == self.member:
            return
        try:
            namespace = parse_namespace_key(parts[0])
        except ValueError:
            return
        self.remote.setdefault(namespace, set()).add(parts[1])
        if namespace in self.providers or namespace in self.relay.providers:
            return  # already imported, or an in-process provider of this very prefix (the rooms')
        self.providers[namespace] = LocalPublisher(self.relay, namespace, self._import, self._cancel_import)
        self.relay.remote_namespace(namespace, True)  # NAMESPACE to this node's namespace subscribers
        for ns, name in [k for k in self.remote_tracks if k[0] == namespace]:
            self._open_for_offers(ns, name)  # its track entries came first

    def _namespace_delete(self, now: float, key: str) -> None:
        self.now = now
        parts = self._split(key, NS_ROOT, 2)
        if parts is None or parts[1] == self.member:
            return
        try:
            namespace = parse_namespace_key(parts[0])
        except ValueError:
            return
        members = self.remote.get(namespace)
        if members is None:
            return
        members.discard(parts[1])
        provider = self.providers.get(namespace)
        if provider is not None:
            for local in list(provider.tracks.values()):
                imp = self.imports.get(track_channel(local.namespace, local.name))
                if imp is None or imp.local is not local or imp.source == parts[1] or not members:
                    local.end(now, WITHDRAWN, PublishDoneCode.GOING_AWAY)
                    if imp is not None:
                        self._drop_import(imp)
        if members:
            return  # published on other nodes still: new subscriptions import from one of them
        del self.remote[namespace]
        if provider is not None:
            del self.providers[namespace]
            provider.close()
            self.relay.remote_namespace(namespace, False)

    # -- importing -------------------------------------------------------------------------------

    def _import(self, local: LocalTrack) -> None:
        channel = track_channel(local.namespace, local.name)
        if channel in self.imports:  # a stale import of an ended track: replace it
            self._drop_import(self.imports[channel])
        want = f"{WANT_ROOT}{namespace_key(local.namespace)}/{_field(local.name)}/{self.member}"
        source = min(self.remote.get(local.publisher.prefix) or {""})
        self.imports[channel] = _Import(local, channel, want, source)
        self.counters["imports_total"] += 1
        # Subscribe first: the publisher's node answers on the channel once it sees the want.
        self.hub.subscribe_messages(self.now, channel, self)
        self.registry.put(self.now, want, source.encode())

    def _cancel_import(self, local: LocalTrack) -> None:
        imp = self.imports.get(track_channel(local.namespace, local.name))
        if imp is not None and imp.local is local:
            self._drop_import(imp)

    def _drop_import(self, imp: _Import) -> None:
        if self.imports.get(imp.channel) is imp:
            del self.imports[imp.channel]
        self.hub.unsubscribe_messages(self.now, imp.channel, self)
        self.registry.delete(self.now, imp.want_key)

    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        self.now = now
        imp = self.imports.get(channel)
        if imp is None or sender != imp.source:
            return
        try:
            kind, number, object_id, extensions, rest = decode_message(data)
        except BadClusterMessage:
            self.counters["bad_messages"] += 1
            return
        local = imp.local
        if kind == OBJECT:
            if not local.accepted:
                local.accept()
            self.counters["objects_in"] += 1
            local.publish(number, object_id, rest, extensions or None)
        elif kind == OK:
            if not local.accepted:
                local.accept()
        elif kind == REFUSED:
            if not local.accepted:
                code = number if number != RequestErrorCode.INTERNAL_ERROR else RequestErrorCode.DOES_NOT_EXIST
                local.refuse(code, rest.decode(errors="replace"))
            else:
                local.end(now, rest.decode(errors="replace"), PublishDoneCode.TRACK_ENDED)
            self._drop_import(imp)
        elif kind == DONE:
            if local.accepted:
                local.end(now, rest.decode(errors="replace"), number)
            else:
                local.refuse(RequestErrorCode.DOES_NOT_EXIST, rest.decode(errors="replace"))
            self._drop_import(imp)

    # -- exporting -------------------------------------------------------------------------------

    def _parse_want(self, key: str) -> tuple[m.TrackNamespace, bytes, str] | None:
        parts = self._split(key, WANT_ROOT, 3)
        if parts is None or parts[2] == self.member or not parts[1].startswith("x"):
            return None
        try:
            return parse_namespace_key(parts[0]), bytes.fromhex(parts[1][1:]), parts[2]
        except ValueError:
            return None

    def _published_here(self, namespace: m.TrackNamespace) -> bool:
        return any(namespace[:size] in self.local_namespaces for size in range(len(namespace), 0, -1))

    def _want_put(self, now: float, key: str, source: bytes) -> None:
        self.now = now
        want = self._parse_want(key)
        if want is None or self._closed or source != self.member.encode():
            return
        namespace, name, member = want
        if not self._published_here(namespace):
            return  # another node's namespace (that node answers), or none any more
        export = self.exports.get((namespace, name))
        if export is not None:
            export.wants.add(member)
            if export.ok:
                export.send(bytes([OK]))  # the newcomer starts on the next group
            return
        sender = self.hub.open_messages(now, track_channel(namespace, name), KIND)
        export = self.exports[(namespace, name)] = _Export(self, namespace, name, sender, {member})
        self.counters["exports_total"] += 1
        rid = self.subscriber.subscribe(namespace, name, export, now)
        if not export.ended:
            export.request_id = rid

    def _want_delete(self, now: float, key: str) -> None:
        self.now = now
        want = self._parse_want(key)
        if want is None:
            return
        namespace, name, member = want
        export = self.exports.get((namespace, name))
        if export is None:
            return
        export.wants.discard(member)
        if not export.wants:
            self._end_export(export)

    def _end_export(self, export: _Export) -> None:
        if export.ended:
            return
        export.ended = True
        if self.exports.get((export.namespace, export.name)) is export:
            del self.exports[(export.namespace, export.name)]
        if export.request_id is not None and export.request_id in self.subscriber.handlers:
            self.subscriber.unsubscribe(export.request_id)
        export.sender.close(self.now)
