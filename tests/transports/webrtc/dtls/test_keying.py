"""SRTP sessions from a finished DTLS-SRTP handshake (RFC 5764 s4.2)."""

from __future__ import annotations

import pytest

from trackmesh.errors import LocalProtocolError
from trackmesh.rtp.srtp import SrtpError, SrtpProfile
from trackmesh.transports.webrtc.dtls.endpoint import DtlsConnected
from trackmesh.transports.webrtc.dtls.keying import srtp_sessions_from_dtls

GCM_KEY = bytes(range(28))  # 16-byte key + 12-byte salt (RFC 7714 s12)


def test_sessions_from_dtls_checks_role_and_profile() -> None:
    event = DtlsConnected("server", SrtpProfile.AEAD_AES_128_GCM, GCM_KEY, bytes(28))
    session = srtp_sessions_from_dtls(event, "server")
    assert session.profile is SrtpProfile.AEAD_AES_128_GCM
    with pytest.raises(LocalProtocolError):
        srtp_sessions_from_dtls(event, "client")
    with pytest.raises(SrtpError):
        srtp_sessions_from_dtls(DtlsConnected("client", None, b"", b""), "client")
