"""Demultiplexing of one shared UDP port between many peers and protocols.

Every WebRTC peer of a worker talks to the same UDP port, so each datagram must be sorted
twice: by protocol (RFC 7983 s7, on the first byte) and by peer. STUN connectivity checks
carry the peer in USERNAME ("<our ufrag>:<their ufrag>", RFC 8445 s7.2.2), so they are routed
by our ufrag. DTLS, RTP and RTCP carry no such identity: they are routed by the source address
that a *successful* (authenticated) STUN check bound to the peer. The demultiplexer never
binds an address by itself; the caller does it via :meth:`SharedPortDemux.bind` once the ICE
agent has verified MESSAGE-INTEGRITY, so a spoofed packet can never steal a peer's route.

What the sorting found travels on with the datagram (:data:`Routed`): the peer does not classify
it again and the ICE agent does not parse a STUN message again.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Generic, TypeVar

from trackmesh.errors import LocalProtocolError
from trackmesh.net import Address
from trackmesh.transports.webrtc.ice.stun import Buffer, StunMessage, StunProtocolError
from trackmesh.transports.webrtc.ice.stun import parse as parse_stun

__all__ = [
    "DROP_REASONS",
    "PacketKind",
    "Routed",
    "SharedPortDemux",
    "classify",
    "is_rtcp",
]


class PacketKind(enum.IntEnum):
    STUN = 0
    DTLS = 1
    RTP = 2  # RTP or RTCP; tell them apart with is_rtcp()
    UNKNOWN = 3


def _kind_of(b: int) -> PacketKind:
    # RFC 7983 s7: [0..3] STUN, [20..63] DTLS, [128..191] RTP/RTCP. ZRTP [16..19] and TURN
    # channels [64..79] are not used by this server and are treated as unknown.
    if b <= 3:
        return PacketKind.STUN
    if 20 <= b <= 63:
        return PacketKind.DTLS
    if 128 <= b <= 191:
        return PacketKind.RTP
    return PacketKind.UNKNOWN


# One tuple index per datagram instead of a chain of comparisons.
_KIND_TABLE: tuple[PacketKind, ...] = tuple(_kind_of(b) for b in range(256))


def classify(first_byte: int) -> PacketKind:
    """Protocol of a datagram from its first byte (RFC 7983 s7)."""
    return _KIND_TABLE[first_byte & 0xFF]


def is_rtcp(data: Buffer) -> bool:
    """RFC 5761 s4: with the marker bit, RTCP packet types 192-223 (SR, RR, SDES, BYE, APP,
    RTPFB, PSFB, ...) occupy the second byte; RTP payload types 64-95 are never used so the
    ranges do not collide."""
    return len(data) >= 2 and 192 <= data[1] <= 223


K = TypeVar("K", bound=Hashable)

#: What :meth:`SharedPortDemux.route` found out about a datagram: its peer, its kind and, for STUN, the
#: parsed message. The peer takes the kind and the ICE agent the message as they are (str0m's
#: ``DatagramRecv``): each datagram is classified and parsed once.
Routed = tuple[K, PacketKind, StunMessage | None]

#: Every counter :class:`SharedPortDemux` keeps; drops are the ``drop_*`` ones.
DROP_REASONS = (
    "drop_empty",
    "drop_unknown_kind",
    "drop_malformed_stun",
    "drop_unknown_ufrag",
    "drop_stun_unknown_address",
    "drop_unknown_address",
)
_COUNTERS = (*DROP_REASONS, "routed_stun", "routed_dtls", "routed_rtp", "rebind", "evicted_address")


class SharedPortDemux(Generic[K]):
    """Maps datagrams on one shared UDP port to a peer key ``K`` with O(1) dict lookups.

    A peer may own several ufrags (old and new during an ICE restart) and several addresses
    (candidate pairs being checked, or a path change). The newest ``max_addresses_per_key``
    addresses are kept per peer; older ones are evicted, so an active peer cannot grow the
    table without bound.
    """

    __slots__ = ("_addr_key", "_key_addrs", "_key_ufrags", "_ufrag_key", "counters", "max_addresses_per_key")

    def __init__(self, *, max_addresses_per_key: int = 8) -> None:
        if max_addresses_per_key < 1:
            raise LocalProtocolError("max_addresses_per_key must be >= 1")
        self.max_addresses_per_key = max_addresses_per_key
        self._ufrag_key: dict[str, K] = {}
        self._key_ufrags: dict[K, set[str]] = {}
        self._addr_key: dict[Address, K] = {}
        # dict used as an insertion-ordered set so the oldest address is evicted first.
        self._key_addrs: dict[K, dict[Address, None]] = {}
        self.counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    # -- registration -----------------------------------------------------------------

    def register(self, ufrag: str, key: K) -> None:
        """Route STUN checks whose USERNAME starts with ``ufrag:`` to ``key``.

        Call again with the new ufrag on ICE restart; both stay routed until the old one is
        removed with :meth:`unregister_ufrag`.
        """
        owner = self._ufrag_key.get(ufrag)
        if owner is not None and owner != key:
            # Two live peers with one ufrag would make STUN routing ambiguous; the caller
            # must generate fresh credentials (48 random bits make this very unlikely).
            raise LocalProtocolError(f"ufrag {ufrag!r} is already registered to another peer")
        self._ufrag_key[ufrag] = key
        self._key_ufrags.setdefault(key, set()).add(ufrag)

    def unregister_ufrag(self, ufrag: str) -> None:
        key = self._ufrag_key.pop(ufrag, None)
        if key is not None:
            ufrags = self._key_ufrags.get(key)
            if ufrags is not None:
                ufrags.discard(ufrag)

    def unregister(self, key: K) -> None:
        """Forget a peer: all its ufrags and addresses."""
        for ufrag in self._key_ufrags.pop(key, set()):
            if self._ufrag_key.get(ufrag) == key:
                del self._ufrag_key[ufrag]
        for addr in self._key_addrs.pop(key, {}):
            if self._addr_key.get(addr) == key:
                del self._addr_key[addr]

    def bind(self, addr: Address, key: K) -> None:
        """Route non-STUN traffic from ``addr`` to ``key`` (after an authenticated check).

        If another peer owned ``addr`` (NAT mapping reused, or a spoofing attempt that later
        authenticated) the latest authenticated check wins.
        """
        owner = self._addr_key.get(addr)
        if owner is not None and owner != key:
            self.counters["rebind"] += 1
            owner_addrs = self._key_addrs.get(owner)
            if owner_addrs is not None:
                owner_addrs.pop(addr, None)
        self._addr_key[addr] = key
        addrs = self._key_addrs.setdefault(key, {})
        addrs.pop(addr, None)  # re-insert to mark as most recent
        addrs[addr] = None
        while len(addrs) > self.max_addresses_per_key:
            oldest = next(iter(addrs))
            del addrs[oldest]
            if self._addr_key.get(oldest) == key:
                del self._addr_key[oldest]
            self.counters["evicted_address"] += 1

    def unbind(self, addr: Address) -> None:
        key = self._addr_key.pop(addr, None)
        if key is not None:
            addrs = self._key_addrs.get(key)
            if addrs is not None:
                addrs.pop(addr, None)

    def lookup_address(self, addr: Address) -> K | None:
        return self._addr_key.get(addr)

    def addresses(self, key: K) -> tuple[Address, ...]:
        """Addresses bound to ``key``, oldest first."""
        return tuple(self._key_addrs.get(key, ()))

    def __len__(self) -> int:
        return len(self._key_ufrags.keys() | self._key_addrs.keys())

    # -- hot path ---------------------------------------------------------------------

    def route(self, data: Buffer, addr: Address) -> Routed[K] | None:
        """The peer a datagram belongs to, with its kind (RFC 7983 s7) and, for STUN, the parsed
        message; None when it is dropped (and counted)."""
        if not data:
            self.counters["drop_empty"] += 1
            return None
        kind = _KIND_TABLE[data[0]]
        counters = self.counters
        if kind is PacketKind.STUN:
            try:
                msg = parse_stun(data)
            except StunProtocolError:
                counters["drop_malformed_stun"] += 1
                return None
            username = msg.username
            if username is None:
                # Responses and indications carry no USERNAME; only known addresses may
                # send them.
                key = self._addr_key.get(addr)
                if key is None:
                    counters["drop_stun_unknown_address"] += 1
                    return None
            else:
                # RFC 8445 s7.2.2: USERNAME is "<our ufrag>:<their ufrag>". Integrity is the ICE agent's to check.
                ufrag, colon, _ = username.partition(":")
                if not colon:
                    counters["drop_malformed_stun"] += 1
                    return None
                key = self._ufrag_key.get(ufrag)
                if key is None:
                    counters["drop_unknown_ufrag"] += 1
                    return None
            counters["routed_stun"] += 1
            return key, kind, msg
        if kind is PacketKind.UNKNOWN:
            counters["drop_unknown_kind"] += 1
            return None
        key = self._addr_key.get(addr)
        if key is None:
            counters["drop_unknown_address"] += 1
            return None
        counters["routed_dtls" if kind is PacketKind.DTLS else "routed_rtp"] += 1
        return key, kind, None
