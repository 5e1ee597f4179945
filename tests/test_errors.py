"""The error split (h11): one ProtocolError base, the remote's fault and ours apart."""

from __future__ import annotations

import pytest

from trackmesh.codecs.payload import PayloadError
from trackmesh.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from trackmesh.rtp.packet import RtpError
from trackmesh.rtp.rtcp import RtcpError
from trackmesh.rtp.srtp import SrtpError
from trackmesh.sdp.model import SdpError
from trackmesh.transports.webrtc.dtls.endpoint import DtlsError
from trackmesh.transports.webrtc.ice.stun import StunProtocolError
from trackmesh.transports.webrtc.sctp.packet import SctpPacketError


def test_remote_and_local_share_the_base_and_nothing_else() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError) and issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    with pytest.raises(ProtocolError):
        raise LocalProtocolError("misuse")


@pytest.mark.parametrize(
    "cls", [PayloadError, RtpError, RtcpError, SrtpError, SdpError, DtlsError, StunProtocolError, SctpPacketError]
)
def test_every_parser_error_is_the_remotes_fault(cls: type[Exception]) -> None:
    assert issubclass(cls, RemoteProtocolError)
    assert issubclass(cls, ValueError)  # callers that predate the split keep working
