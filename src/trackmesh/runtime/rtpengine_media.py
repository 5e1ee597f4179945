"""atm0s 0.2's RTPengine-style media endpoints inside a worker, on the SIP calls' media path.

An external SIP gateway (8xFF/atm0s-media-sip-gateway) keeps the signalling and asks the node for
plain RTP endpoints over HTTP (http/rtpengine_http.py); each one is a call of
:class:`~trackmesh.runtime.sip_media.SipMediaTransport` (its RTP/RTCP port pair, jitter buffer,
transcoders, mix-minus), with two differences from a SIP call (atm0s 0.2, research notes 2.7):

- it joins its room on its first RTP packet, not when the SDP exchange completes;
- it ends after :data:`RTPENGINE_TIMEOUT` seconds without packets (atm0s #482), and nobody is
  told (there is no dialog to hang up: the gateway sends its own BYE).

Worker calls (the HTTP layer finds the worker from the signed conn id):

- ``rtpengine.offer {room, peer, token_hash}`` -> ``{conn_id, sdp}``: our offer (Opus, G722, PCMU,
  PCMA, telephone-event); nothing joins until ``rtpengine.patch`` brings the remote answer;
- ``rtpengine.answer {room, peer, token_hash, offer}`` -> ``{conn_id, sdp}``: our answer to the
  remote offer (its first codec we take, in its order); 488 when none fits;
- ``rtpengine.patch {conn_id, token_hash, answer}`` -> ``{codec}``; 404 unknown, 409 answered already;
- ``rtpengine.delete {conn_id, token_hash}``.

A ``token_hash`` given on PATCH/DELETE must be the creating token's (403); an empty one is
accepted, as atm0s does: the conn id is signed and unguessable.
"""

from __future__ import annotations

import hmac
import logging
import socket
from dataclasses import dataclass
from typing import Any

from trackmesh.core.ids import SessionId
from trackmesh.rpc import RpcError
from trackmesh.sdp.model import SdpError, render
from trackmesh.sdp.model import parse as parse_sdp
from trackmesh.transports.sip.offer_answer import answer_offer, create_offer, negotiated_from_answer

from .pending_offer import PendingOffer
from .sip_media import MEDIA_CODECS, SipMediaTransport, _Call
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.rtpengine")

RTPENGINE_TIMEOUT = 180.0  # no packet for this long ends the endpoint (atm0s #482)
OFFER_TIMEOUT = 180.0  # an offer never answered by PATCH is dropped after this


@dataclass(slots=True)
class _PendingOffer(PendingOffer):
    """Our offer, until the gateway's PATCH brings the answer (or it expires)."""

    token_hash: str
    expires: float


class RtpEngineMedia:
    def __init__(self, runtime: WorkerRuntime, media: SipMediaTransport) -> None:
        self.runtime = runtime
        self.media = media
        self.offers: dict[str, _PendingOffer] = {}  # conn id -> an offer waiting for PATCH
        self.sessions: dict[str, SessionId] = {}  # conn id -> the call's session
        self.counters = runtime.counters
        for name in ("rtpengine_offers", "rtpengine_answers", "rtpengine_refused", "rtpengine_offers_expired"):
            self.counters.setdefault(name, 0)
        for name, handler in (
            ("rtpengine.offer", self.offer),
            ("rtpengine.answer", self.answer),
            ("rtpengine.patch", self.patch),
            ("rtpengine.delete", self.delete),
        ):
            runtime.register_rpc(name, handler)
        runtime.on_shutdown(self._shutdown)

    # ---- control calls -------------------------------------------------------------------------

    def offer(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """The server offers (the gateway calls a phone): ports bound, the room not joined yet."""
        rtp, rtcp = self.media._bind_pair()
        port = rtp.getsockname()[1]
        sdp = create_offer(
            address=self.runtime.config.node_ip, port=port, session_id=str(port), version=1, codecs=MEDIA_CODECS
        )
        endpoint = self.runtime.core.create_endpoint(str(params.get("app", "")))  # the token's app
        conn_id = str(endpoint.conn_id)
        self.offers[conn_id] = _PendingOffer(
            endpoint, rtp, rtcp, sdp, str(params["room"]), str(params["peer"]), str(params.get("token_hash", "")),
            now + OFFER_TIMEOUT,
        )  # fmt: skip
        self.counters["rtpengine_offers"] += 1
        self.runtime.track(self)
        return {"conn_id": conn_id, "sdp": render(sdp)}

    def answer(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """The remote side offered (a phone calls the gateway): our answer, the call waits for RTP."""
        try:
            offer = parse_sdp(str(params["offer"]))
        except SdpError as exc:
            self.counters["rtpengine_refused"] += 1
            raise RpcError(400, f"bad SDP offer: {exc}") from None
        rtp, rtcp = self.media._bind_pair()
        port = rtp.getsockname()[1]
        try:
            sdp, negotiated = answer_offer(
                offer, address=self.runtime.config.node_ip, port=port, session_id=str(port), version=1,
                supported=MEDIA_CODECS,
            )  # fmt: skip
        except SdpError:
            negotiated = None
        if negotiated is None:
            rtp.close()
            rtcp.close()
            self.counters["rtpengine_refused"] += 1
            raise RpcError(488, "no acceptable audio stream (we take opus/48000/2, G722, PCMU, PCMA over RTP/AVP)")
        endpoint = self.runtime.core.create_endpoint(str(params.get("app", "")))  # the token's app
        call = self._open(now, endpoint, str(params["room"]), str(params["peer"]), negotiated, rtp, rtcp,
                          str(params.get("token_hash", "")))  # fmt: skip
        self.counters["rtpengine_answers"] += 1
        return {"conn_id": str(endpoint.conn_id), "sdp": render(sdp), "codec": call.media.negotiated.codec}

    def patch(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """The remote answer to our offer: the codec it chose; the call waits for its first packet."""
        conn_id = str(params["conn_id"])
        pending = self.offers.get(conn_id)
        if pending is None:
            raise RpcError(409 if conn_id in self.sessions else 404, "no offer waiting for an answer on this conn")
        self._check_token(pending.token_hash, params)
        del self.offers[conn_id]
        try:
            negotiated = negotiated_from_answer(pending.sdp, parse_sdp(str(params["answer"])))
        except SdpError:
            negotiated = None
        if negotiated is None:
            self.runtime.core.close_endpoint(now, pending.endpoint.session, "no acceptable answer")
            pending.rtp.close()
            pending.rtcp.close()
            self.counters["rtpengine_refused"] += 1
            raise RpcError(488, "the answer has no audio stream of our offer")
        call = self._open(now, pending.endpoint, pending.room, pending.peer, negotiated, pending.rtp, pending.rtcp,
                          pending.token_hash)  # fmt: skip
        return {"codec": call.media.negotiated.codec}

    def delete(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        conn_id = str(params["conn_id"])
        pending = self.offers.get(conn_id)
        if pending is not None:
            self._check_token(pending.token_hash, params)
            del self.offers[conn_id]
            self.runtime.core.close_endpoint(now, pending.endpoint.session, "rtpengine conn deleted")
            pending.rtp.close()
            pending.rtcp.close()
            return {"deleted": conn_id}
        session = self.sessions.get(conn_id)
        call = self.media.calls.get(session) if session is not None else None
        if call is None:
            self.sessions.pop(conn_id, None)
            raise RpcError(404, "unknown conn id")
        self._check_token(call.token_hash, params)
        del self.sessions[conn_id]
        self.media.close(now, {"session": int(call.session), "reason": "rtpengine conn deleted"})
        return {"deleted": conn_id}

    @staticmethod
    def _check_token(expected: str, params: dict[str, Any]) -> None:
        given = str(params.get("token_hash") or "")
        if given and not hmac.compare_digest(given, expected):
            raise RpcError(403, "the token is not the conn's")

    def _open(
        self, now: float, endpoint: Any, room: str, peer: str, negotiated: Any, rtp: socket.socket,
        rtcp: socket.socket, token_hash: str,
    ) -> _Call:  # fmt: skip
        call = self.media._admit(now, endpoint, room, peer, negotiated, rtp, rtcp, join=False)
        call.kind = "rtpengine"
        call.token_hash = token_hash
        call.media.media_timeout = RTPENGINE_TIMEOUT
        self.sessions[str(endpoint.conn_id)] = endpoint.session
        log.info("rtpengine conn ready", extra={"fields": {"room": room, "peer": peer, "codec": negotiated.codec,
                                                           "rtp_port": rtp.getsockname()[1]}})  # fmt: skip
        return call

    # ---- time: offers never answered ---------------------------------------------------------

    def next_deadline(self) -> float | None:
        # Ended calls leave stale conn ids behind; they are swept with the offers.
        return min((p.expires for p in self.offers.values()), default=None)

    def handle_timeout(self, now: float) -> None:
        for conn_id, pending in list(self.offers.items()):
            if pending.expires <= now:
                self.counters["rtpengine_offers_expired"] += 1
                self.delete(now, {"conn_id": conn_id})
        calls = self.media.calls
        for conn_id, session in list(self.sessions.items()):
            if session not in calls:
                del self.sessions[conn_id]
        self.runtime.track(self)

    def _shutdown(self, now: float) -> None:
        for conn_id in list(self.offers):
            self.delete(now, {"conn_id": conn_id})


def install(runtime: WorkerRuntime) -> None:
    """After runtime/sip_media.py's install: the endpoints are calls of its transport."""
    media = runtime.services.get(SipMediaTransport)
    if isinstance(media, SipMediaTransport):
        runtime.services[RtpEngineMedia] = RtpEngineMedia(runtime, media)
