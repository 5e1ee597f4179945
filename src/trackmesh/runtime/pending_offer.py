"""An SDP offer of ours waiting for the far end's answer, with what it reserved in the worker.

Shared by the SIP calls (runtime/sip_media.py: dial-outs, delayed-offer INVITEs) and the
RTPengine-style endpoints (runtime/rtpengine_media.py: an offer until the gateway's PATCH); each
adds its own fields in a subclass.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from trackmesh.sdp.model import SessionDescription


@dataclass(eq=False, slots=True)
class PendingOffer:
    """The endpoint created for the call (not yet connected), the RTP/RTCP socket pair bound for it,
    the offer sent (its port is ``rtp``'s), and the room and peer it joins once answered."""

    endpoint: Any
    rtp: socket.socket
    rtcp: socket.socket
    sdp: SessionDescription
    room: str
    peer: str
