"""The one error type RTMP input raises: the remote peer's fault, dropped, counted and closed."""

from __future__ import annotations

from trackmesh.errors import RemoteProtocolError


class RtmpError(RemoteProtocolError):
    """Bytes from an RTMP peer that break the protocol (handshake, chunk stream, AMF, FLV tags)."""
