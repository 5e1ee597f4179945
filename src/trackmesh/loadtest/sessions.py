"""WHIP/WHEP sessions that can also end: the load generator's signalling plus the resource URL and its DELETE.

:class:`trackmesh.loadtest.signalling.TrackmeshWhipWhep` opens sessions for ramps that never close one; the soak
and chaos runs also leave (RFC 9725 section 4.2: ``DELETE`` on the ``Location``) and reconnect, so they need
the resource URL and token of each session.
"""

from __future__ import annotations

from dataclasses import dataclass

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.signalling import (
    HttpError,
    ServerUrl,
    TrackmeshWhipWhep,
    http_request,
    publish_offer,
    view_offer,
)

__all__ = ["Resource", "WhipWhepSessions"]


@dataclass(frozen=True)
class Resource:
    """One WHIP/WHEP session as the server named it."""

    location: str
    token: str


class WhipWhepSessions(TrackmeshWhipWhep):
    """Tokens and offers against ``port`` (a standalone node or a gateway), returning each session's resource."""

    def __init__(self, port: int, secret: str, room: str, *, timeout: float = 10.0) -> None:
        super().__init__(ServerUrl.local(port), secret, room)
        self.timeout = timeout

    async def _offer(self, kind: str, token: str, offer: str) -> tuple[str, str]:
        status, hdrs, raw = await http_request(
            self.server.host, self.server.port, "POST", f"/{kind}/endpoint", offer.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}, timeout=self.timeout,
        )
        if status != 201:
            raise HttpError(f"{kind} POST: {status} {raw[:300]!r}")
        return hdrs.get("location", ""), raw.decode()

    async def view(self, tr: Transport) -> Resource:
        token = await self._token("whep", None)
        location, answer = await self._offer("whep", token, view_offer(tr))
        tr.start(answer, controlling=True)
        return Resource(location, token)

    async def publish_as(self, tr: Transport, ssrcs: tuple[int, int], peer: str) -> Resource:
        token = await self._token("whip", peer)
        location, answer = await self._offer("whip", token, publish_offer(tr, ssrcs))
        tr.start(answer, controlling=True)
        return Resource(location, token)

    async def end(self, res: Resource) -> int:
        """DELETE the session's resource; returns the HTTP status (200 ended, 404 already gone)."""
        if not res.location.startswith("/"):
            raise HttpError(f"unexpected resource URL {res.location!r}")
        status, _, _ = await http_request(
            self.server.host, self.server.port, "DELETE", res.location, None, {"Authorization": f"Bearer {res.token}"},
            timeout=self.timeout,
        )
        return status
