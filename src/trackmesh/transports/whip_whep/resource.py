"""WHIP/WHEP sessions as HTTP resources (RFC 9725 s4.3, s4.4): who may touch one, ETag/If-Match,
trickle versus ICE restart in a PATCH, and tombstones for the DELETE after a session ended on its own.

Sans-IO and free of HTTP machinery: the decisions return values or raise :class:`ResourceError`
carrying the HTTP status the API answers with (404, 403, 412, 400); the driver
(runtime/webrtc_worker.py) holds the sessions, restarts the ICE agent and routes the new ufrag.
Time is the ``now`` argument; new ETags come from ``new_etag`` (random by default).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from trackmesh.sdp.model import Candidate, SdpError

from .sdpfrag import is_ice_restart, parse_sdpfrag, render_sdpfrag, restart_answer

__all__ = [
    "TOMBSTONE_TTL",
    "IceRestart",
    "Resource",
    "ResourceError",
    "Tombstones",
    "authorize",
    "ice_restart_answer",
    "new_etag",
]

#: A session that ended on its own (DTLS close, consent expiry) is remembered this long, so the
#: client's DELETE that usually follows its own close still gets 200, not 404.
TOMBSTONE_TTL = 120.0
#: At most this many tombstones are kept: past it the oldest goes first, even before its TTL (a DELETE
#: for it then gets 404, as it would after the TTL), so a burst of endings cannot grow memory unbounded.
MAX_TOMBSTONES = 10_000


def new_etag() -> str:
    return secrets.token_hex(8)


class ResourceError(Exception):
    """A request on a resource refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class IceRestart:
    """A PATCH asked for an ICE restart (RFC 9725 s4.3.2): the client's new credentials."""

    ufrag: str
    pwd: str


@dataclass(eq=False)
class Resource:
    """One WHIP or WHEP session as a resource: its kind, the hash of the token that created it, its
    ETag and the client's current ICE credentials."""

    kind: str  # "whip" or "whep"
    token_hash: str
    remote_ufrag: str
    remote_pwd: str
    etag: str = ""

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = new_etag()

    def patch(self, frag_text: str, if_match: str | None) -> IceRestart | None:
        """Judge a PATCH body (a trickle-ice-sdpfrag, RFC 8840). ``None``: candidates only, nothing to do
        (we are ICE-lite, RFC 8445 s2.5: the client's checks reach our one port and are answered there).

        412 when ``If-Match`` names another ETag (RFC 9725 s4.3.1); 400 for a malformed fragment."""
        if if_match is not None and if_match != self.etag:
            raise ResourceError(412, "If-Match does not match the session's ETag")
        try:
            frag = parse_sdpfrag(frag_text)
        except SdpError as exc:
            raise ResourceError(400, f"bad trickle-ice-sdpfrag: {exc}") from None
        if not is_ice_restart(frag, self.remote_ufrag, self.remote_pwd):
            return None
        creds = frag.credentials()
        assert creds is not None  # is_ice_restart: the fragment carries credentials
        return IceRestart(*creds)

    def restarted(self, restart: IceRestart, etag: str | None = None) -> str:
        """The ICE agent restarted with ``restart``'s credentials: a new ICE generation is a new
        version of the resource, so a new ETag (RFC 9725 s4.3.2). Returns it."""
        self.remote_ufrag, self.remote_pwd = restart.ufrag, restart.pwd
        self.etag = etag or new_etag()
        return self.etag


def authorize(resource: Resource | None, kind: str, token_hash: str) -> Resource:
    """The resource a request may act on: 404 for an unknown session or one of the other kind (a WHEP
    URL does not reach a WHIP session), 403 when the request's token did not create it."""
    if resource is None or resource.kind != kind:
        raise ResourceError(404, "unknown conn id")
    if not hmac.compare_digest(resource.token_hash, token_hash):
        raise ResourceError(403, "this token did not create the session")
    return resource


def ice_restart_answer(
    local_ufrag: str, local_pwd: str, candidate: Candidate, first_media: tuple[str, str] | None
) -> str:
    """Our PATCH answer to an ICE restart: the new local credentials and our one candidate in the
    first bundled m= section (``(mid, kind)``; ``None`` for an answer without media)."""
    mid, kind = first_media or ("0", "audio")
    return render_sdpfrag(restart_answer(local_ufrag, local_pwd, candidate, mid, kind))


class Tombstones:
    """Sessions that ended on their own, by conn id, so the client's DELETE still succeeds (200)."""

    def __init__(self, ttl: float = TOMBSTONE_TTL, limit: int = MAX_TOMBSTONES) -> None:
        self.ttl = ttl
        self.limit = limit
        self._dead: dict[str, tuple[str, str, float]] = {}  # conn id -> (kind, token hash, until)

    def __len__(self) -> int:
        return len(self._dead)

    def bury(self, conn_id: str, resource: Resource, now: float) -> None:
        self.prune(now)
        while len(self._dead) >= self.limit:
            del self._dead[next(iter(self._dead))]
        self._dead.pop(conn_id, None)  # re-buried: it moves to the end, keeping insertion = expiry order
        self._dead[conn_id] = (resource.kind, resource.token_hash, now + self.ttl)

    def prune(self, now: float) -> None:
        """Drop expired tombstones. The TTL is one constant and ``now`` only grows, so insertion
        order is expiry order: only the oldest entries need looking at (amortised O(1) per bury)."""
        dead = self._dead
        while dead:
            oldest = next(iter(dead))
            if dead[oldest][2] > now:
                break
            del dead[oldest]

    def claim(self, conn_id: str, kind: str, token_hash: str, now: float) -> bool:
        """A DELETE of ``conn_id``: True when it names a buried session of this kind (answer 200, the
        tombstone is used up); False when it does not (look for a live session). 403 when the
        token did not create the buried session."""
        dead = self._dead.get(conn_id)
        if dead is None or dead[0] != kind or dead[2] <= now:
            return False
        if not hmac.compare_digest(dead[1], token_hash):
            raise ResourceError(403, "this token did not create the session")
        del self._dead[conn_id]
        return True
