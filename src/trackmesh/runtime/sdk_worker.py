"""The atm0s SDK transport inside a worker: SDK sessions on the worker's shared UDP port.

Thin glue between the asyncio worker and the sans-IO :class:`~trackmesh.transports.sdk.session.SdkSession` (which
drives a :class:`~trackmesh.transports.webrtc.peer.WebRtcPeer`). It answers the worker calls
``sdk.connect``, ``sdk.ice_candidate`` and ``sdk.restart_ice`` made by :mod:`trackmesh.http.sdk_http`; the ICE
restart's decisions are :mod:`trackmesh.transports.sdk.ice_restart`. The connections' lifecycle (routes on the
worker's shared :class:`~.webrtc_port.WebRtcPort`, events, timers, close) is the worker's
:class:`~.conn_table.ConnTable`, as for WHIP/WHEP.

When the node drains (``WorkerRuntime.drain``) every client gets ``session.goway``; when the worker stops every
session gets ``session.goway`` then ``session.disconnected`` before it is closed.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from trackmesh.core.ids import SessionId
from trackmesh.rpc import RpcError
from trackmesh.sdp.model import SdpError
from trackmesh.security.tokens import TokenError, verify_for_app
from trackmesh.transports.sdk.ice_restart import restart_claims_refusal, restart_ice
from trackmesh.transports.sdk.naming import assign_mlines
from trackmesh.transports.sdk.protocol import (
    ConnectResponse,
    ProtocolDecodeError,
    RemoteIceResponse,
    decode_connect_request,
    decode_remote_ice_request,
)
from trackmesh.transports.sdk.session import RpcFailure, SdkSession, TokenClaims, check_join
from trackmesh.transports.webrtc.answer import AnswerPolicy, LocalParams, answer_offer
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent
from trackmesh.transports.webrtc.peer import WebRtcPeer

from .conn_table import ConnTable, Timed, origin, short
from .recording import RecordingService, recording_of
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.sdk")

#: How long a client is told it has after ``goway`` (we close right away on drain, so none).
GOAWAY_REMAIN_SECONDS = 0


@dataclass(eq=False)
class Conn:
    """One SDK connection on this worker (a :class:`~.conn_table.TableConn`)."""

    sdk: SdkSession
    token_hash: str
    ufrags: list[str] = field(default_factory=list)
    closing: bool = False
    kind = "sdk"

    @property
    def key(self) -> SessionId:
        return self.sdk.endpoint.session

    @property
    def peer(self) -> WebRtcPeer:
        return self.sdk.peer

    @property
    def machine(self) -> Timed:
        return self.sdk

    def on_connected(self, now: float) -> None:
        self.sdk.on_connected(now)

    def on_application_data(self, now: float, data: bytes) -> None:
        self.sdk.on_application_data(now, data)

    def on_core_events(self, now: float) -> None:
        self.sdk.on_core_events(now)

    def close_reason(self) -> str | None:
        return self.sdk.close_reason

    def goaway(self, now: float, reason: str, remain_seconds: int) -> bool:
        self.sdk.goaway(now, reason, remain_seconds)
        return True

    def farewell(self, now: float, reason: str) -> None:
        self.sdk.goaway(now, reason, GOAWAY_REMAIN_SECONDS)
        self.sdk.disconnected_event(now, reason)


class SdkTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.table: ConnTable[Conn] = ConnTable(runtime, "sdk", log)
        self.port = self.table.port
        self.certificate = self.port.certificate
        self.fingerprint = self.port.fingerprint
        self.demux = self.port.demux
        self.counters = runtime.counters
        for name in ("sdk_offers_refused", "sdk_malformed"):
            self.counters.setdefault(name, 0)
        runtime.register_rpc("sdk.connect", self.connect)
        runtime.register_rpc("sdk.ice_candidate", self.ice_candidate)
        runtime.register_rpc("sdk.restart_ice", self.restart_ice)
        runtime.register_rpc("sdk.stats", self.stats)

    # ---- control calls -------------------------------------------------------------------

    def _verify(self, app: str, raw: str) -> TokenClaims | None:
        """A later ``session.join`` token of a session of ``app``: valid, and of that same app (a
        token of another app, even a valid one, must not open this app's rooms to the session)."""
        try:
            token = verify_for_app(self.runtime.token_key_of, raw, "webrtc", int(time.time()))
        except TokenError:
            return None
        if token.app != app:
            return None
        return TokenClaims(token.room, token.peer, token.extra_data, token.record)

    @staticmethod
    def _joined(recording: RecordingService, app: str, now: float, room: str, peer: str, claims: TokenClaims) -> None:
        """A later ``session.join`` with a ``record: true`` token: that peer's tracks are recorded,
        as for a join at connect."""
        if claims.record:
            recording.record_peer(now, app, room, peer)

    def _local(self) -> tuple[IceLiteAgent, LocalParams]:
        ice = IceLiteAgent()
        creds = ice.local_credentials
        return ice, self.port.local_params(creds.ufrag, creds.pwd)

    def connect(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """params: ``request`` (ConnectRequest bytes), ``room``/``peer``/``extra_data`` (token claims),
        ``token_hash``. Returns ``{"response": ConnectResponse bytes}``."""
        self.table.admission.check(str(params.get("token_hash", "")))
        try:
            req = decode_connect_request(bytes(params["request"]))
        except ProtocolDecodeError as exc:
            self.counters["sdk_malformed"] += 1
            raise RpcError(400, str(exc)) from None
        claims = TokenClaims(params.get("room"), params.get("peer"), params.get("extra_data"))
        if req.HasField("join"):
            why = check_join(claims, req.join.room, req.join.peer)
            if why is not None:
                raise RpcError(403, why)
        ice, local = self._local()
        remote_ip, app, routed_at = origin(params)
        try:
            answer = answer_offer(req.sdp, local, AnswerPolicy.sdk())
        except SdpError as exc:
            self.counters["sdk_offers_refused"] += 1
            self.table.refused(now, remote_ip, app, routed_at)
            raise RpcError(400, f"cannot accept the offer: {exc}") from None
        names = assign_mlines(req.tracks, answer.media)
        endpoint = self.table.new_endpoint(now, remote_ip, app, routed_at)
        peer = WebRtcPeer(
            now,
            endpoint,
            answer,
            ice,
            self.certificate,
            self.runtime.outbox,
            wallclock=time.time(),
            remote_names=lambda media: names.senders,
            connect_timeout=self.runtime.config.connect_timeout,
            release_dtls=True,  # the data channel's records go on without OpenSSL's 90 KB (dtls/records.py)
        )
        sdk = SdkSession(
            now, peer, names, req.tracks, claims, functools.partial(self._verify, app), local,
            cookie_key=os.urandom(32),
        )  # fmt: skip
        if req.HasField("join"):
            failure = sdk.join_at_connect(now, req.join)
            if failure is not None:
                peer.close(now, "join refused")
                self.table.abort(now, endpoint.session, "join refused")
                raise RpcError(400 if failure.code != 0x2008 else 403, failure.message)
        conn = Conn(sdk, str(params.get("token_hash", "")), [local.ice_ufrag])
        self.table.attach(now, conn, local.ice_ufrag)
        recording = recording_of(self.runtime)
        if params.get("record") and req.HasField("join") and recording is not None:
            # A record:true token (atm0s): every track this peer publishes is recorded.
            recording.record_peer(now, str(params.get("app") or ""), req.join.room, req.join.peer)
        if recording is not None:
            sdk.on_join = functools.partial(self._joined, recording, str(params.get("app") or ""))
        log.info(
            "sdk session created",
            extra={
                "fields": {
                    "room": req.join.room if req.HasField("join") else None,
                    "peer": req.join.peer if req.HasField("join") else None,
                    "senders": len(sdk.senders),
                    "receivers": len(sdk.receivers),
                    "conn": short(endpoint.conn_id),
                }
            },
        )
        response = ConnectResponse(conn_id=endpoint.conn_id, sdp=answer.sdp, ice_lite=True)
        return {"response": response.SerializeToString()}

    def _conn(self, conn_id: str) -> Conn:
        conn = self.table.lookup(conn_id)
        if conn is None:
            raise RpcError(404, "unknown conn id")
        return conn

    def ice_candidate(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """We are ICE-lite: the client's candidates need no action (its checks reach our port and are answered
        there), so they are only counted."""
        self._conn(str(params.get("conn_id", "")))
        try:
            req = decode_remote_ice_request(bytes(params["request"]))
        except ProtocolDecodeError as exc:
            self.counters["sdk_malformed"] += 1
            raise RpcError(400, str(exc)) from None
        added = sum(1 for c in req.candidates if c.strip())
        return {"response": RemoteIceResponse(added=added).SerializeToString()}

    def restart_ice(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """ICE restart of a session of this worker; 404 when the conn id is unknown here (the HTTP layer then
        rebuilds the session with ``sdk.connect``)."""
        conn = self._conn(str(params.get("conn_id", "")))
        try:
            req = decode_connect_request(bytes(params["request"]))
        except ProtocolDecodeError as exc:
            self.counters["sdk_malformed"] += 1
            raise RpcError(400, str(exc)) from None
        same_token = hmac.compare_digest(conn.token_hash, str(params.get("token_hash", "")))
        claims = TokenClaims(params.get("room"), params.get("peer"), params.get("extra_data"))
        why = restart_claims_refusal(conn.sdk, claims, same_token)
        if why is not None:
            raise RpcError(403, why)
        try:
            answer = restart_ice(conn.sdk, now, req.sdp, req.tracks, self.port.local_params)
        except RpcFailure as exc:
            self.counters["sdk_offers_refused"] += 1
            raise RpcError(400, exc.message) from None
        if answer.local is not None:
            self.table.add_ufrag(conn, answer.local.ice_ufrag, now, str(params.get("remote_ip") or ""))
        self.table.after_input(now, conn)
        response = ConnectResponse(conn_id=conn.sdk.endpoint.conn_id, sdp=answer.sdp, ice_lite=True)
        return {"response": response.SerializeToString()}

    def stats(self, now: float = 0.0, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.table.stats()


def install(runtime: WorkerRuntime) -> None:
    SdkTransport(runtime)
