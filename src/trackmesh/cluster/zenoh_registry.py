"""ZenohRegistry: the core's Registry across the cluster, on a zenoh session.

Layout
------
- Each node (a *member*: one zenoh session, named by its zid, new on every start) owns the
  entries it puts. They live under its own key space ``tm/reg/<member>/<key>``: a put is a zenoh
  put, a delete a zenoh delete, each carrying the member's sequence number (8 bytes, attachment).
- Each member declares a liveliness token ``tm/live/<member>`` and a queryable
  ``tm/reg/<member>/**`` that answers with its current entries.
- ``watch(prefix)`` subscribes to ``tm/reg/*/<prefix>**`` and then queries the same key
  expression: every other member replies with its entries (the replay). Sequence numbers make the
  race between replies and live samples harmless: an older value never overwrites a newer one,
  and a delete seen while a replay is in flight leaves a tombstone so a late reply cannot revive
  the entry.
- A liveliness subscriber on ``tm/live/*`` reports members leaving: when a member's token goes
  (its process died: at once; it hangs or is cut off: after the lease, see zenoh_session), every
  watcher is told its entries are deleted. When a member appears (first time, or back) its
  entries are queried, so a healed partition restores them and a newcomer's first puts, made
  before our subscription reached it, are not lost.

Same-node semantics equal LocalRegistry's: this node's own puts and deletes reach this node's
watchers synchronously (zenoh delivers them to the other nodes only), and ``watch`` replays this
node's entries synchronously, with the ``now`` of that call. Other nodes' entries arrive later,
through ``post``: the watchers get the time the loop runs them at, read from ``clock`` (the driver
passes the clock its worker's ``now`` comes from, so both are on one time line).

Threads: zenoh calls back on its own threads. Those callbacks only decode and hand a closure to
``post`` (the driver passes ``loop.call_soon_threadsafe``); every watcher callback, and all
state except the own-entry table read by the queryable, runs on the thread that drains ``post``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import zenoh

from trackmesh.core.registry import RegistryWatcher

Post = Callable[[Callable[[], None]], None]

REG_ROOT = "tm/reg/"
LIVE_ROOT = "tm/live/"
DEFAULT_QUERY_TIMEOUT = 5.0


def undeclare(entity: Any) -> None:
    """Undeclare a zenoh entity; a no-op once its session is closed (zenoh's stubs are untyped)."""
    with contextlib.suppress(zenoh.ZError):
        entity.undeclare()


def _seq_bytes(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


def _seq_of(attachment: zenoh.ZBytes | None) -> int | None:
    if attachment is None:
        return None
    raw = attachment.to_bytes()
    return int.from_bytes(raw, "big") if len(raw) == 8 else None


def _split(key_expr: str) -> tuple[str, str] | None:
    """``tm/reg/<member>/<key>`` -> (member, key)."""
    if not key_expr.startswith(REG_ROOT):
        return None
    member, sep, key = key_expr[len(REG_ROOT) :].partition("/")
    if not sep or not member or not key:
        return None
    return member, key


class ZenohRegistry:
    """The cluster-wide Registry of one node. Call every method from the ``post`` thread."""

    def __init__(
        self,
        session: zenoh.Session,
        post: Post,
        clock: Callable[[], float],
        *,
        member: str | None = None,
        query_timeout: float = DEFAULT_QUERY_TIMEOUT,
    ) -> None:
        self._session = session
        self._post_fn = post
        self._clock = clock
        self.member = member if member is not None else str(session.zid())
        if "/" in self.member or not self.member:
            raise ValueError("a registry member name is one non-empty key chunk")
        self._query_timeout = query_timeout
        self._closed = False
        self._seq = 0
        self._own: dict[str, tuple[int, bytes, zenoh.KeyExpr]] = {}
        self._own_lock = threading.Lock()
        self._watchers: dict[str, list[RegistryWatcher]] = {}
        self._subs: dict[str, zenoh.Subscriber[None]] = {}
        self._remote: dict[str, dict[str, tuple[int, bytes]]] = {}
        self._dead: set[str] = set()
        self._seen: set[str] = set()  # members whose liveliness token we have seen
        self._tombstones: dict[tuple[str, str], int] = {}
        self._inflight = 0
        # Counters (read them for metrics).
        self.bad_samples = 0
        self.members_lost = 0
        self._queryable = session.declare_queryable(
            f"{REG_ROOT}{self.member}/**", self._on_query, allowed_origin=zenoh.Locality.REMOTE
        )
        self._token = session.liveliness().declare_token(f"{LIVE_ROOT}{self.member}")
        self._live_sub = session.liveliness().declare_subscriber(f"{LIVE_ROOT}*", self._on_liveliness, history=True)

    # -- the Registry protocol ---------------------------------------------------------------

    def put(self, now: float, key: str, value: bytes) -> None:
        value = bytes(value)
        old = self._own.get(key)
        if old is not None and old[1] == value:
            return
        full = zenoh.KeyExpr(f"{REG_ROOT}{self.member}/{key}") if old is None else old[2]
        self._seq += 1
        with self._own_lock:
            self._own[key] = (self._seq, value, full)
        if not self._closed:
            self._session.put(full, value, attachment=_seq_bytes(self._seq), allowed_destination=zenoh.Locality.REMOTE)
        for watcher in self._watchers_of(key):
            watcher.on_registry_put(now, key, value)

    def delete(self, now: float, key: str) -> None:
        old = self._own.get(key)
        if old is None:
            return
        self._seq += 1
        with self._own_lock:
            del self._own[key]
        if not self._closed:
            self._session.delete(old[2], attachment=_seq_bytes(self._seq), allowed_destination=zenoh.Locality.REMOTE)
        for watcher in self._watchers_of(key):
            watcher.on_registry_delete(now, key)

    def watch(self, now: float, prefix: str, watcher: RegistryWatcher) -> None:
        if not prefix.endswith("/"):
            raise ValueError("registry watch prefixes end with '/'")
        watchers = self._watchers.get(prefix)
        first = watchers is None
        if watchers is None:
            watchers = self._watchers[prefix] = []
        watchers.append(watcher)
        if first and not self._closed:
            selector = f"{REG_ROOT}*/{prefix}**"
            self._subs[prefix] = self._session.declare_subscriber(
                selector, self._on_sample, allowed_origin=zenoh.Locality.REMOTE
            )
            self._query(selector)
        for key, (_, value, _) in [(k, e) for k, e in self._own.items() if k.startswith(prefix)]:
            watcher.on_registry_put(now, key, value)
        for entries in list(self._remote.values()):
            for key, (_, value) in [(k, e) for k, e in entries.items() if k.startswith(prefix)]:
                watcher.on_registry_put(now, key, value)

    def unwatch(self, prefix: str, watcher: RegistryWatcher) -> None:
        watchers = self._watchers.get(prefix)
        if watchers is None or watcher not in watchers:
            return
        watchers.remove(watcher)
        if watchers:
            return
        del self._watchers[prefix]
        sub = self._subs.pop(prefix, None)
        if sub is not None:
            undeclare(sub)
        # Forget remote entries nobody watches any more (a later watch queries them again).
        for entries in self._remote.values():
            for key in [k for k in entries if k.startswith(prefix) and not self._is_watched(k)]:
                del entries[key]

    # -- helpers ------------------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        """The value this node sees for ``key`` (own or watched remote entry)."""
        own = self._own.get(key)
        if own is not None:
            return own[1]
        for entries in self._remote.values():
            entry = entries.get(key)
            if entry is not None:
                return entry[1]
        return None

    def remote_members(self) -> list[str]:
        """Members whose entries this node currently holds."""
        return [m for m, entries in self._remote.items() if entries]

    def close(self) -> None:
        """Undeclare everything (other nodes see this member's entries vanish)."""
        if self._closed:
            return
        self._closed = True
        for sub in self._subs.values():
            undeclare(sub)
        self._subs.clear()
        for entity in (self._live_sub, self._queryable, self._token):
            undeclare(entity)

    def _watchers_of(self, key: str) -> list[RegistryWatcher]:
        found: list[RegistryWatcher] = []
        idx = key.find("/")
        while idx != -1:
            found.extend(self._watchers.get(key[: idx + 1], ()))
            idx = key.find("/", idx + 1)
        return found

    def _is_watched(self, key: str) -> bool:
        idx = key.find("/")
        while idx != -1:
            if key[: idx + 1] in self._watchers:
                return True
            idx = key.find("/", idx + 1)
        return False

    def _post(self, fn: Callable[[], None]) -> None:
        # RuntimeError: the driver's loop is gone, we are shutting down.
        with contextlib.suppress(RuntimeError):
            self._post_fn(fn)

    def _query(self, selector: str) -> None:
        self._inflight += 1

        def on_reply(reply: zenoh.Reply) -> None:
            sample = reply.ok
            if sample is None:
                return
            parsed = _split(str(sample.key_expr))
            seq = _seq_of(sample.attachment)
            if parsed is None or seq is None:
                self._post(self._count_bad)
                return
            value = sample.payload.to_bytes()
            self._post(lambda: self._remote_put(parsed[0], parsed[1], seq, value))

        def on_done() -> None:
            self._post(self._query_done)

        self._session.get(
            selector,
            zenoh.handlers.Callback(on_reply, on_done),
            consolidation=zenoh.ConsolidationMode.NONE,
            timeout=self._query_timeout,
            allowed_destination=zenoh.Locality.REMOTE,
        )

    def _query_done(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._tombstones.clear()

    def _count_bad(self) -> None:
        self.bad_samples += 1

    # -- zenoh threads --------------------------------------------------------------------------

    def _on_query(self, query: zenoh.Query) -> None:
        with self._own_lock:
            entries = list(self._own.values())
        wanted = query.key_expr
        for seq, value, full in entries:
            if wanted.intersects(full):
                query.reply(full, value, attachment=_seq_bytes(seq))

    def _on_sample(self, sample: zenoh.Sample) -> None:
        parsed = _split(str(sample.key_expr))
        seq = _seq_of(sample.attachment)
        if parsed is None or seq is None:
            self._post(self._count_bad)
            return
        member, key = parsed
        if sample.kind == zenoh.SampleKind.PUT:
            value = sample.payload.to_bytes()
            self._post(lambda: self._remote_put(member, key, seq, value))
        else:
            self._post(lambda: self._remote_delete(member, key, seq))

    def _on_liveliness(self, sample: zenoh.Sample) -> None:
        member = str(sample.key_expr)[len(LIVE_ROOT) :]
        if member == self.member:
            return
        if sample.kind == zenoh.SampleKind.PUT:
            self._post(lambda: self._member_alive(member))
        else:
            self._post(lambda: self._member_gone(member))

    # -- applied on the post thread ---------------------------------------------------------

    def _remote_put(self, member: str, key: str, seq: int, value: bytes) -> None:
        if self._closed or member in self._dead or member == self.member or not self._is_watched(key):
            return
        tomb = self._tombstones.get((member, key))
        if tomb is not None and tomb >= seq:
            return
        entries = self._remote.setdefault(member, {})
        old = entries.get(key)
        if old is not None and old[0] >= seq:
            return
        entries[key] = (seq, value)
        if old is not None and old[1] == value:
            return
        now = self._clock()  # run on the loop now: the time the watchers are told
        for watcher in self._watchers_of(key):
            watcher.on_registry_put(now, key, value)

    def _remote_delete(self, member: str, key: str, seq: int) -> None:
        if self._closed:
            return
        if self._inflight:
            tkey = (member, key)
            self._tombstones[tkey] = max(seq, self._tombstones.get(tkey, 0))
        entries = self._remote.get(member)
        old = entries.get(key) if entries is not None else None
        if entries is None or old is None or old[0] > seq:
            return
        del entries[key]
        now = self._clock()
        for watcher in self._watchers_of(key):
            watcher.on_registry_delete(now, key)

    def _member_alive(self, member: str) -> None:
        if self._closed:
            return
        was_dead = member in self._dead
        first = member not in self._seen
        self._dead.discard(member)
        self._seen.add(member)
        if was_dead or first:
            # Back after a partition (or a router failover: cluster/topology.py): its entries were
            # dropped, fetch them again. New: its first puts may have gone out before our
            # subscription reached it (its link is up before the declarations are exchanged; seen
            # in bench/cluster_growth.py with a full mesh), so fetch what it holds once.
            for prefix in self._watchers:
                self._query(f"{REG_ROOT}{member}/{prefix}**")

    def _member_gone(self, member: str) -> None:
        if self._closed:
            return
        self._dead.add(member)
        entries = self._remote.pop(member, None)
        self.members_lost += 1
        if not entries:
            return
        now = self._clock()
        for key in list(entries):
            for watcher in self._watchers_of(key):
                watcher.on_registry_delete(now, key)
