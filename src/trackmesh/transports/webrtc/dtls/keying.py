"""SRTP sessions keyed from a completed DTLS-SRTP handshake (RFC 5764 s4.2).

This is the one place where DTLS meets SRTP: :mod:`trackmesh.rtp.srtp` is keyed by a profile
and raw key material and knows nothing of DTLS, so SDES-keyed SRTP (SIP) can share it; this
module turns a :class:`~trackmesh.transports.webrtc.dtls.endpoint.DtlsConnected` event into
that material.
"""

from __future__ import annotations

from typing import Literal

from trackmesh.errors import LocalProtocolError
from trackmesh.rtp.srtp import DEFAULT_GCM_BACKEND, GcmBackend, SrtpError, SrtpSession
from trackmesh.transports.webrtc.dtls.endpoint import DtlsConnected

__all__ = ["srtp_sessions_from_dtls"]


def srtp_sessions_from_dtls(
    event: DtlsConnected, role: Literal["client", "server"], *, gcm_backend: GcmBackend = DEFAULT_GCM_BACKEND
) -> SrtpSession:
    """Build the SRTP session for a completed DTLS-SRTP handshake.

    RFC 5764 s4.2: the DTLS client protects with the client write key and unprotects with
    the server's, and vice versa. :class:`DtlsConnected` already carries the material split
    into our (local) and the peer's (remote) halves; ``role`` must be the role that produced
    it, which guards against wiring a server's event into a client's session.
    """
    if role != event.role:
        raise LocalProtocolError(f"DTLS event is for the {event.role} role, not {role}")
    if event.profile is None:
        # The peer completed DTLS without use_srtp (RFC 5764 s4.1.1): no keys for media.
        raise SrtpError("peer did not negotiate a DTLS-SRTP protection profile")
    return SrtpSession(event.profile, event.local_keying, event.remote_keying, gcm_backend=gcm_backend)
