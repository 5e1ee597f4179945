"""The atm0s SDK transport inside a worker: SDK sessions on the worker's shared UDP port.

Thin glue between the asyncio worker and the sans-IO :class:`~trackmesh.transports.sdk.session.SdkSession` (which
drives a :class:`~trackmesh.transports.webrtc.peer.WebRtcPeer` in ``PeerMode.SDK``). It answers the worker calls
``sdk.connect``, ``sdk.ice_candidate`` and ``sdk.restart_ice`` made by :mod:`trackmesh.http.sdk_http`, and shares
the UDP port with the WHIP/WHEP transport: datagrams whose ICE ufrag or address belongs to an SDK session are
handled here, all others go to the handler installed before (the WHIP/WHEP one).

On node drain (worker shutdown) every session gets ``session.goway`` then ``session.disconnected`` before it is
closed.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from trackmesh.core.errors import ControlError
from trackmesh.core.ids import SessionId
from trackmesh.security.tokens import TokenError, verify
from trackmesh.transports.sdk.naming import assign_mlines
from trackmesh.transports.sdk.protocol import (
    ConnectResponse,
    ProtocolDecodeError,
    RemoteIceResponse,
    decode_connect_request,
    decode_remote_ice_request,
)
from trackmesh.transports.sdk.renegotiation import apply_plan, plan_for
from trackmesh.transports.sdk.session import RpcFailure, SdkSession, TokenClaims, check_join
from trackmesh.transports.webrtc.ice import IceLiteAgent
from trackmesh.transports.webrtc.peer import PeerSetupError, WebRtcPeer
from trackmesh.transports.webrtc.peer_events import Connected, Disconnected, IceSelected, PeerMode
from trackmesh.transports.webrtc.sdp import SdpError
from trackmesh.transports.webrtc.sdp_answer import AnswerPolicy, LocalParams, answer_offer

from .webrtc_port import ConnTimer, WebRtcPort
from .worker import RpcError, WorkerRuntime

log = logging.getLogger("trackmesh.sdk")

#: How long a client is told it has after ``goway`` (we close right away on drain, so none).
GOAWAY_REMAIN_SECONDS = 0


@dataclass(eq=False)
class Conn:
    """One SDK connection on this worker."""

    sdk: SdkSession
    token_hash: str
    ufrags: list[str] = field(default_factory=list)
    closing: bool = False

    @property
    def key(self) -> SessionId:
        return self.sdk.endpoint.session


class SdkTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.port = WebRtcPort.of(runtime)
        self.certificate = self.port.certificate
        self.fingerprint = self.port.fingerprint
        self.demux = self.port.demux
        self.clock = self.port.clock
        self.conns: dict[SessionId, Conn] = {}
        self.timers: dict[SessionId, ConnTimer[Conn]] = {}
        self.counters = runtime.counters
        for name in ("sdk_sessions_created", "sdk_sessions_closed", "sdk_offers_refused", "sdk_malformed"):
            self.counters.setdefault(name, 0)
        runtime.register_rpc("sdk.connect", self.connect)
        runtime.register_rpc("sdk.ice_candidate", self.ice_candidate)
        runtime.register_rpc("sdk.restart_ice", self.restart_ice)
        runtime.register_rpc("sdk.stats", self.stats)
        runtime.on_shutdown(self.on_shutdown)

    # ---- media path ----------------------------------------------------------------------

    def on_datagram(self, now: float, data: bytes, addr: tuple[str, int], *, conn: Conn) -> None:
        """A datagram the worker's WebRtcPort routed to ``conn``."""
        conn.sdk.peer.handle_datagram(now, data, addr)
        self.after_input(now, conn)

    def after_input(self, now: float, conn: Conn) -> None:
        sdk = conn.sdk
        while (event := sdk.peer.poll_event()) is not None:
            if isinstance(event, IceSelected):
                self.demux.bind(event.addr, conn.key)
            elif isinstance(event, Connected):
                sdk.on_connected(now)
                if self.runtime.core.audit is not None:
                    self.runtime.core.audit.connected(now, conn.key, "")
                log.info("connected", extra={"fields": {"conn": _short(sdk.endpoint.conn_id), "mode": "sdk"}})
            elif isinstance(event, Disconnected):
                self.close(now, conn, event.reason)
                return
        if sdk.close_reason is not None:
            self.close(now, conn, sdk.close_reason)
            return
        timer = self.timers.get(conn.key)
        if timer is not None:
            self.runtime.track(timer)

    def on_core_events(self, now: float, *, conn: Conn) -> None:
        conn.sdk.on_core_events(now)
        self.after_input(now, conn)

    # ---- control calls -------------------------------------------------------------------

    def _verify(self, raw: str) -> TokenClaims | None:
        try:
            token = verify(self.runtime.config.secret, raw, "webrtc", int(time.time()))
        except TokenError:
            return None
        return TokenClaims(token.room, token.peer, token.extra_data)

    def _local(self) -> tuple[IceLiteAgent, LocalParams]:
        ice = IceLiteAgent()
        creds = ice.local_credentials
        return ice, self.port.local_params(creds.ufrag, creds.pwd)

    def connect(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """params: ``request`` (ConnectRequest bytes), ``room``/``peer``/``extra_data`` (token claims),
        ``token_hash``. Returns ``{"response": ConnectResponse bytes}``."""
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
        try:
            answer = answer_offer(req.sdp, local, AnswerPolicy.sdk())
        except SdpError as exc:
            self.counters["sdk_offers_refused"] += 1
            raise RpcError(400, f"cannot accept the offer: {exc}") from None
        names = assign_mlines(req.tracks, answer.media)
        endpoint = self.runtime.core.create_endpoint()
        self.clock.advance(now)
        try:
            peer = WebRtcPeer(
                now,
                endpoint,
                answer,
                ice,
                self.certificate,
                self.runtime.outbox,
                mode=PeerMode.SDK,
                wallclock=time.time(),
                clock=self.clock,
                remote_names=lambda media: names.senders,
                local_names=lambda media: names.receivers,
            )
        except PeerSetupError as exc:
            self.runtime.core.close_endpoint(now, endpoint.session, "setup failed")
            raise RpcError(400, f"cannot set up the session: {exc}") from None
        audit = self.runtime.core.audit  # the connector's event source, when there is one
        if audit is not None:
            audit.connecting(now, endpoint.session, str(params.get("remote_ip") or ""), str(params.get("app") or ""))
        sdk = SdkSession(
            now, peer, names, req.tracks, claims, self._verify, local, cookie_key=os.urandom(32)
        )  # fmt: skip
        if req.HasField("join"):
            failure = sdk.join_at_connect(now, req.join)
            if failure is not None:
                peer.close(now, "join refused")
                self.runtime.core.close_endpoint(now, endpoint.session, "join refused")
                if audit is not None:
                    audit.disconnected(now, endpoint.session, "join refused")
                raise RpcError(400 if failure.code != 0x2008 else 403, failure.message)
        conn = Conn(sdk, str(params.get("token_hash", "")), [local.ice_ufrag])
        key = endpoint.session
        self.conns[key] = conn
        self.timers[key] = ConnTimer(conn, conn.sdk, self.after_input)
        self.port.attach(key, local.ice_ufrag, functools.partial(self.on_datagram, conn=conn))
        self.runtime.listen(key, functools.partial(self.on_core_events, conn=conn))
        self.counters["sdk_sessions_created"] += 1
        self.after_input(now, conn)
        log.info(
            "sdk session created",
            extra={
                "fields": {
                    "room": req.join.room if req.HasField("join") else None,
                    "peer": req.join.peer if req.HasField("join") else None,
                    "senders": len(sdk.senders),
                    "receivers": len(sdk.receivers),
                    "conn": _short(endpoint.conn_id),
                }
            },
        )
        response = ConnectResponse(conn_id=endpoint.conn_id, sdp=answer.sdp, ice_lite=True)
        return {"response": response.SerializeToString()}

    def _conn(self, conn_id: str) -> Conn:
        found = self.runtime.core.lookup(conn_id)
        conn = None if isinstance(found, ControlError) else self.conns.get(found.session)
        if conn is None or conn.closing:
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
        sdk = conn.sdk
        same_token = hmac.compare_digest(conn.token_hash, str(params.get("token_hash", "")))
        claims = TokenClaims(params.get("room"), params.get("peer"), params.get("extra_data"))
        if sdk.joined and not same_token:
            why = check_join(claims, sdk.endpoint.room or "", sdk.endpoint.peer or "")
            if why is not None:
                raise RpcError(403, why)
        try:
            # Checked (m-lines added, stopped or recycled included) before the ICE agent restarts, so that a
            # refused offer leaves the session as it was.
            probe = plan_for(sdk, req.sdp, req.tracks, ice_restart=True)
        except RpcFailure as exc:
            self.counters["sdk_offers_refused"] += 1
            raise RpcError(400, exc.message) from None
        ice = sdk.peer.ice
        remote = probe.answer.transport
        new_local: LocalParams | None = None
        plan = probe
        if remote.ice_ufrag != ice.remote_ufrag or remote.ice_pwd != ice.remote_pwd:
            creds = ice.restart(remote.ice_ufrag, remote.ice_pwd)
            new_local = self.port.local_params(creds.ufrag, creds.pwd)
            plan = plan_for(sdk, req.sdp, req.tracks, new_local, ice_restart=True)
        sdp = apply_plan(sdk, now, plan, new_local)
        if new_local is not None:
            self.demux.register(new_local.ice_ufrag, conn.key)
            conn.ufrags.append(new_local.ice_ufrag)
        self.after_input(now, conn)
        response = ConnectResponse(conn_id=sdk.endpoint.conn_id, sdp=sdp, ice_lite=True)
        return {"response": response.SerializeToString()}

    # ---- teardown ------------------------------------------------------------------------

    def close(self, now: float, conn: Conn, reason: str) -> None:
        if conn.closing:
            return
        conn.closing = True
        key = conn.key
        sdk = conn.sdk
        sdk.peer.close(now, reason)
        while sdk.peer.poll_event() is not None:
            pass
        self.runtime.core.close_endpoint(now, key, reason)
        if self.runtime.core.audit is not None:
            self.runtime.core.audit.disconnected(now, key, reason)
        self.port.detach(key)
        self.runtime.unlisten(key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            self.runtime.untrack(timer)
        self.conns.pop(key, None)
        self.counters["sdk_sessions_closed"] += 1
        log.info("sdk session closed", extra={"fields": {"conn": _short(sdk.endpoint.conn_id), "reason": reason}})

    def on_shutdown(self, now: float) -> None:
        for conn in list(self.conns.values()):
            conn.sdk.goaway("node stopping", GOAWAY_REMAIN_SECONDS)
            conn.sdk.disconnected_event("node stopping")
            self.close(now, conn, "node stopping")

    def stats(self, now: float = 0.0, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"sessions": len(self.conns), "demux": dict(self.demux.counters)}


def _short(conn_id: str) -> str:
    return conn_id[-10:]


def install(runtime: WorkerRuntime) -> None:
    SdkTransport(runtime)
