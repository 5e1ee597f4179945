"""The WHIP/WHEP transport inside a worker: WHIP/WHEP sessions on the worker's shared UDP port.

Thin glue: it answers the worker calls ``whip|whep.create|patch|delete`` and ``whep.limit`` made by
the HTTP layer (http/whip_whep.py). The connections' lifecycle (port routes, events, timers, close)
is the worker's :class:`~.conn_table.ConnTable`; the resource semantics (404/403, ETag/If-Match,
PATCH trickle or ICE restart, tombstones) are the sans-IO
:mod:`trackmesh.transports.whip_whep.resource`; this module only joins them.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from trackmesh.core.ids import SessionId
from trackmesh.rpc import RpcError
from trackmesh.sdp.model import SdpError
from trackmesh.transports.webrtc.answer import AnswerPolicy, answer_offer
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.whip_whep.resource import (
    Resource,
    ResourceError,
    Tombstones,
    authorize,
    ice_restart_answer,
)
from trackmesh.transports.whip_whep.session import PeerMode, SessionSetupError, WhipWhepSession, default_remote_names

from .conn_table import ConnTable, Timed, origin, short
from .recording import recording_of
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.webrtc")


@dataclass(eq=False)
class Session:
    """One WHIP or WHEP connection on this worker (a :class:`~.conn_table.TableConn`)."""

    mode: PeerMode
    policy: WhipWhepSession  # the room side of the connection: join, publish on connect, auto-follow
    resource: Resource
    ufrags: list[str] = field(default_factory=list)
    closing: bool = False

    @property
    def peer(self) -> WebRtcPeer:
        return self.policy.peer

    @property
    def key(self) -> SessionId:
        return self.peer.endpoint.session

    @property
    def kind(self) -> str:
        return self.mode.value

    @property
    def token_hash(self) -> str:
        return self.resource.token_hash

    @property
    def machine(self) -> Timed:
        return self.peer

    def on_connected(self, now: float) -> None:
        self.policy.on_connected(now)

    def on_application_data(self, now: float, data: bytes) -> None:
        pass  # no data channel is negotiated for WHIP/WHEP; the peer counted the record

    def on_core_events(self, now: float) -> None:
        self.policy.on_core_events(now)

    def close_reason(self) -> str | None:
        return None

    def goaway(self, now: float, reason: str, remain_seconds: int) -> bool:
        return False  # WHIP/WHEP have no such message; the session lives until its client leaves

    def farewell(self, now: float, reason: str) -> None:
        pass


class WebRtcTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.table: ConnTable[Session] = ConnTable(runtime, "webrtc", log, on_closed=self._on_closed)
        self.port = self.table.port
        self.certificate = self.port.certificate
        self.fingerprint = self.port.fingerprint
        self.demux = self.port.demux
        self.tombstones = Tombstones()
        self.counters = runtime.counters
        self.counters.setdefault("webrtc_offers_refused", 0)
        for mode in (PeerMode.WHIP, PeerMode.WHEP):
            kind = mode.value
            runtime.register_rpc(f"{kind}.create", functools.partial(self.create, mode=mode))
            runtime.register_rpc(f"{kind}.patch", functools.partial(self.patch, mode=mode))
            runtime.register_rpc(f"{kind}.delete", functools.partial(self.delete, mode=mode))
        runtime.register_rpc("whep.limit", self.limit)
        runtime.register_rpc("webrtc.stats", self.stats)

    # ---- control calls -------------------------------------------------------------------

    def create(self, now: float, params: dict[str, Any], mode: PeerMode) -> dict[str, Any]:
        self.table.admission.check(str(params["token_hash"]))
        ice = IceLiteAgent()
        creds = ice.local_credentials
        local = self.port.local_params(creds.ufrag, creds.pwd)
        policy = AnswerPolicy.whip() if mode is PeerMode.WHIP else AnswerPolicy.whep()
        remote_ip, app, routed_at = origin(params)
        try:
            answer = answer_offer(str(params["offer"]), local, policy)
        except SdpError as exc:
            self.counters["webrtc_offers_refused"] += 1
            self.table.refused(now, remote_ip, app, routed_at)
            raise RpcError(400, f"cannot accept the offer: {exc}") from None
        room = str(params["room"])
        peer_name = params.get("peer") or f"{mode.value}-{secrets.token_hex(4)}"
        endpoint = self.table.new_endpoint(now, remote_ip, app, routed_at)
        try:
            peer = WebRtcPeer(
                now,
                endpoint,
                answer,
                ice,
                self.certificate,
                self.runtime.outbox,
                wallclock=time.time(),
                remote_names=default_remote_names,
                connect_timeout=self.runtime.config.connect_timeout,
                release_dtls=True,  # WHIP/WHEP answers refuse data channels (AnswerPolicy.whip/whep)
            )
            room_policy = WhipWhepSession(now, peer, mode, room, str(peer_name))
        except SessionSetupError as exc:
            self.table.abort(now, endpoint.session, "setup failed", mode.value)
            raise RpcError(400, f"cannot join room {room!r}: {exc}") from None
        resource = Resource(mode.value, str(params["token_hash"]), answer.transport.ice_ufrag, answer.transport.ice_pwd)
        session = Session(mode, room_policy, resource, [creds.ufrag])
        if mode is PeerMode.WHEP and params.get("max_spatial") is not None:
            peer.set_max_spatial(now, int(params["max_spatial"]))
        self.table.attach(now, session, creds.ufrag)
        recording = recording_of(self.runtime)
        if mode is PeerMode.WHIP and params.get("record") and recording is not None:
            # A record:true token (atm0s): every track this peer publishes is recorded.
            recording.record_peer(now, str(params.get("app") or ""), room, str(peer_name))
        log.info(
            "session created",
            extra={"fields": {"mode": mode.value, "room": room, "peer": peer_name, "conn": short(endpoint.conn_id)}},
        )
        return {"conn_id": endpoint.conn_id, "sdp": answer.sdp, "etag": resource.etag}

    def _session(self, mode: PeerMode, params: dict[str, Any]) -> Session:
        session = self.table.lookup(str(params.get("conn_id", "")))
        try:
            authorize(session.resource if session is not None else None, mode.value, str(params.get("token_hash", "")))
        except ResourceError as exc:
            raise RpcError(exc.status, exc.message) from None
        assert session is not None
        return session

    def patch(self, now: float, params: dict[str, Any], mode: PeerMode) -> dict[str, Any]:
        session = self._session(mode, params)
        try:
            restart = session.resource.patch(str(params["frag"]), params.get("if_match"))
        except ResourceError as exc:
            raise RpcError(exc.status, exc.message) from None
        if restart is None:
            return {}
        local = session.peer.ice.restart(restart.ufrag, restart.pwd)
        self.table.add_ufrag(session, local.ufrag, now, str(params.get("remote_ip") or ""))
        etag = session.resource.restarted(restart)
        first = session.peer.answer.media[0] if session.peer.answer.media else None
        candidate = self.port.local_params(local.ufrag, local.pwd).candidate()
        sdpfrag = ice_restart_answer(local.ufrag, local.pwd, candidate, (first.mid, first.kind) if first else None)
        self.table.after_input(now, session)
        return {"sdpfrag": sdpfrag, "etag": etag}

    def limit(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """Cap (or, with None, uncap) the simulcast layer a WHEP viewer gets: 0 is the lowest."""
        session = self._session(PeerMode.WHEP, params)
        layer = params.get("max_spatial")
        session.peer.set_max_spatial(now, None if layer is None else int(layer))
        self.table.after_input(now, session)
        return {"max_spatial": layer}

    def delete(self, now: float, params: dict[str, Any], mode: PeerMode) -> None:
        conn_id, token_hash = str(params.get("conn_id", "")), str(params.get("token_hash", ""))
        try:
            if self.tombstones.claim(conn_id, mode.value, token_hash, now):
                return
        except ResourceError as exc:
            raise RpcError(exc.status, exc.message) from None
        session = self._session(mode, params)
        self.table.close(now, session, "deleted by the client")

    # ---- teardown ------------------------------------------------------------------------

    def _on_closed(self, now: float, session: Session, reason: str) -> None:
        if reason != "deleted by the client":
            self.tombstones.bury(session.peer.endpoint.conn_id, session.resource, now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session counters", extra={"fields": peer_summary(session.peer)})

    def stats(self, now: float = 0.0, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.table.stats()


def peer_summary(peer: WebRtcPeer) -> dict[str, Any]:
    """A peer's non-zero drop/feedback counters, for the debug log and for diagnosing tests."""
    out: dict[str, Any] = {"conn": short(peer.endpoint.conn_id)}
    out.update({k: v for k, v in peer.counters.items() if v})
    if peer.dtls.connection_released:
        out["dtls_released"] = True  # OpenSSL's connection freed once connected (issue 19)
    if peer.dtls.ignored_datagrams:
        out["dtls_ignored"] = peer.dtls.ignored_datagrams
    out.update({f"in_{k}": v for k, v in peer.inbound.counters.items() if v})
    twcc = peer.inbound.twcc
    if twcc is not None:
        for name in ("recorded", "late", "reported_received", "reported_lost", "feedbacks"):
            out[f"in_twcc_{name}"] = getattr(twcc, name)
    for mid, o in peer.outbound.items():
        out.update({f"out{mid}_{k}": v for k, v in o.counters.items() if v})
        out[f"out{mid}_packets"] = o.packets
    if peer.ctx.estimate is not None:
        out["estimate_bps"] = round(peer.ctx.estimate)
    return out


def install(runtime: WorkerRuntime) -> None:
    WebRtcTransport(runtime)

