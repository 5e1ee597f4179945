"""atm0s 0.2's RTPengine-style API: an external SIP gateway asks for plain RTP endpoints in rooms.

- ``POST /rtpengine/offer`` (no body): we offer (the gateway calls a phone with our SDP);
- ``POST /rtpengine/answer`` (body: the phone's SDP offer): we answer;
- both: ``201``, ``application/sdp``, ``Location: /rtpengine/conn/<conn_id>``;
- ``PATCH /rtpengine/conn/<conn_id>`` (body: the phone's SDP answer to our offer);
- ``DELETE /rtpengine/conn/<conn_id>``.

POSTs take a bearer ``rtpengine`` token (``POST /token/rtpengine {room, peer, ttl}``); its room and
peer are the endpoint's. PATCH and DELETE need no token (atm0s: the signed conn id is the
capability); a token given there must be the creating one (403). Refusals are plain text lines,
as for WHIP/WHEP. The media: runtime/rtpengine_media.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import PlainTextResponse

from .headers import bearer
from .requests import problem, read_body, session_token
from .whip_whep import token_hash

if TYPE_CHECKING:
    from .api import NodeApi

SDP = "application/sdp"
# atm0s' gateway and curl users send either; a body without Content-Type is read as SDP too.
ACCEPTED = (SDP, "text/plain", "")
MAX_SDP_BYTES = 16 * 1024

_REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the SDP cannot be parsed"},
    401: {"description": "missing, invalid or expired rtpengine token"},
    409: {"description": "the peer name is taken in the room (checked on the first RTP packet)"},
    413: {"description": "body too large"},
    415: {"description": "wrong Content-Type"},
    488: {"description": "no acceptable audio stream (Opus, G722, PCMU, PCMA over RTP/AVP)"},
    503: {"description": "no free RTP port, or no media worker"},
}
_SDP_BODY = {"requestBody": {"content": {SDP: {"schema": {"type": "string"}}}, "required": True}}


def router(node: NodeApi) -> APIRouter:
    api = APIRouter(tags=["rtpengine"])

    async def create(kind: str, authorization: str | None, offer: str | None) -> Response:
        checked = session_token(node, authorization, "rtpengine")
        if isinstance(checked, PlainTextResponse):
            return checked
        token, raw = checked
        if token.room is None or token.peer is None:
            return problem(401, "invalid rtpengine token: it names no room or no peer")
        params: dict[str, Any] = {"room": token.room, "peer": token.peer, "token_hash": token_hash(raw),
                                  "app": token.app}
        if offer is not None:
            params["offer"] = offer
        result = await node.worker_for_room(token.room).call(f"rtpengine.{kind}", params)
        return Response(
            result["sdp"], status_code=201, media_type=SDP, headers={"Location": f"/rtpengine/conn/{result['conn_id']}"}
        )

    @api.post(
        "/rtpengine/offer",
        status_code=201,
        summary="An RTP endpoint in the token's room: our SDP offer (the gateway calls out)",
        responses={201: {"content": {SDP: {}}, "description": "our offer; Location names the conn"}, **_REFUSALS},
    )
    async def offer(authorization: str | None = Header(None, description="Bearer <rtpengine token>")) -> Response:
        return await create("offer", authorization, None)

    @api.post(
        "/rtpengine/answer",
        status_code=201,
        summary="An RTP endpoint in the token's room: our SDP answer to the phone's offer",
        responses={201: {"content": {SDP: {}}, "description": "our answer; Location names the conn"}, **_REFUSALS},
        openapi_extra=_SDP_BODY,
    )
    async def answer(
        request: Request, authorization: str | None = Header(None, description="Bearer <rtpengine token>")
    ) -> Response:
        body = await read_body(request, ACCEPTED, MAX_SDP_BYTES)
        if isinstance(body, Response):
            return body
        return await create("answer", authorization, body.decode("utf-8", "replace"))

    def presented(authorization: str | None) -> str:
        raw = bearer(authorization)
        return token_hash(raw) if raw else ""

    @api.patch(
        "/rtpengine/conn/{conn_id}",
        summary="The phone's SDP answer to our offer",
        responses={
            200: {"description": "answer taken; the endpoint joins the room on its first RTP packet"},
            403: {"description": "a token was given and it is not the conn's"},
            404: {"description": "unknown conn id"},
            409: {"description": "the conn has its answer already"},
            **_REFUSALS,
        },
        openapi_extra=_SDP_BODY,
    )
    async def patch(conn_id: str, request: Request, authorization: str | None = Header(None)) -> Response:
        body = await read_body(request, ACCEPTED, MAX_SDP_BYTES)
        if isinstance(body, Response):
            return body
        worker = node.worker_for_conn(conn_id)
        params = {"conn_id": conn_id, "token_hash": presented(authorization), "answer": body.decode("utf-8", "replace")}
        await worker.call("rtpengine.patch", params)
        return PlainTextResponse("OK")

    @api.delete(
        "/rtpengine/conn/{conn_id}",
        summary="End the RTP endpoint (the peer leaves the room)",
        responses={403: {"description": "a token was given and it is not the conn's"},
                   404: {"description": "unknown conn id"}},
    )  # fmt: skip
    async def delete(conn_id: str, authorization: str | None = Header(None)) -> Response:
        worker = node.worker_for_conn(conn_id)
        await worker.call("rtpengine.delete", {"conn_id": conn_id, "token_hash": presented(authorization)})
        return PlainTextResponse("OK")

    return api
