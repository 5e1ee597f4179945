"""Identifiers: SessionId (cluster-unique integer) and ConnId (signed, opaque string).

A SessionId packs the node id, the worker index and a per-worker counter into 64 bits, so two
nodes never hand out the same id and a node needs no coordination to make one.

A ConnId names one transport connection. It is the capability a client presents on follow-up
calls (trickle ICE, delete, restart), so unlike atm0s 0.2's plain "<node>-<session>-<worker>"
ids it carries a random nonce and an HMAC-SHA256 tag keyed by a key derived from the secret: a guessed,
forged or altered id is rejected before any lookup.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import NewType

from trackmesh.security.keys import derive_key

SessionId = NewType("SessionId", int)

NODE_ID_BITS = 32
WORKER_BITS = 8
COUNTER_BITS = 24
MAX_NODE_ID = (1 << NODE_ID_BITS) - 1
MAX_WORKER = (1 << WORKER_BITS) - 1
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


class SessionIdGenerator:
    """Hands out SessionIds for one worker of one node.

    ``start`` should differ between restarts of the same node (the driver passes a random
    value) so that ids of a previous run are not reused right away after a crash.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self, node_id: int, worker: int, start: int = 0) -> None:
        if not 0 <= node_id <= MAX_NODE_ID:
            raise ValueError(f"node id must be in 0..{MAX_NODE_ID}, got {node_id}")
        if not 0 <= worker <= MAX_WORKER:
            raise ValueError(f"worker index must be in 0..{MAX_WORKER}, got {worker}")
        self._prefix = (node_id << (WORKER_BITS + COUNTER_BITS)) | (worker << COUNTER_BITS)
        self._counter = start & _COUNTER_MASK

    def next(self) -> SessionId:
        self._counter = (self._counter + 1) & _COUNTER_MASK
        return SessionId(self._prefix | self._counter)


def session_node(session: SessionId) -> int:
    """The node id that created ``session``."""
    return session >> (WORKER_BITS + COUNTER_BITS)


def session_worker(session: SessionId) -> int:
    """The worker index (on its node) that created ``session``."""
    return (session >> COUNTER_BITS) & MAX_WORKER


class InvalidConnId(ValueError):
    """A conn id that is malformed, forged or signed with another secret."""


@dataclass(frozen=True, slots=True)
class ConnIdParts:
    node_id: int
    worker: int
    session: SessionId
    nonce: int


_VERSION = 1
_PAYLOAD = struct.Struct("!BIBQQ")  # version, node, worker, session, nonce
_TAG_LEN = 16  # 128-bit truncated HMAC-SHA256 (RFC 2104 s5 allows truncation to >= half)
_ENCODED_LEN = len(base64.urlsafe_b64encode(b"\0" * (_PAYLOAD.size + _TAG_LEN)).rstrip(b"="))


class ConnIdCodec:
    """Signs and verifies ConnIds with the cluster secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | bytes) -> None:
        # A dedicated key (HKDF, security/keys.py): no other use of the secret shares it.
        self._key = derive_key(secret, "conn-id")

    def encode(self, node_id: int, worker: int, session: SessionId, nonce: int | None = None) -> str:
        if nonce is None:
            nonce = secrets.randbits(64)
        payload = _PAYLOAD.pack(_VERSION, node_id, worker, session, nonce)
        tag = hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_LEN]
        return base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode("ascii")

    def decode(self, conn_id: str) -> ConnIdParts:
        if not isinstance(conn_id, str) or len(conn_id) != _ENCODED_LEN:
            raise InvalidConnId("conn id has the wrong length")
        try:
            raw = base64.urlsafe_b64decode(conn_id + "=" * (-len(conn_id) % 4))
        except (ValueError, TypeError) as exc:
            raise InvalidConnId("conn id is not base64url") from exc
        if len(raw) != _PAYLOAD.size + _TAG_LEN:
            raise InvalidConnId("conn id has the wrong length")
        payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_LEN]
        if not hmac.compare_digest(tag, expected):
            raise InvalidConnId("conn id signature does not verify")
        version, node_id, worker, session, nonce = _PAYLOAD.unpack(payload)
        if version != _VERSION:
            raise InvalidConnId(f"conn id version {version} is not supported")
        return ConnIdParts(node_id, worker, SessionId(session), nonce)


def channel_id(room: str, peer: str, track: str) -> int:
    """The cluster-wide pub/sub channel of one track: a stable 64-bit BLAKE2b of its names.

    Stable across processes, versions and platforms (unlike Python's ``hash``), so every node
    computes the same channel for the same track.
    """
    h = hashlib.blake2b(digest_size=8, person=b"tm-track")
    for part in (room, peer, track):
        data = part.encode()
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return int.from_bytes(h.digest(), "big")
