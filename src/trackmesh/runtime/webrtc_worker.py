"""The WebRTC transport inside a worker: WHIP/WHEP sessions on the worker's shared UDP port.

Thin glue between the asyncio worker (:mod:`.worker`) and the sans-IO
:class:`~trackmesh.transports.webrtc.peer.WebRtcPeer`: it answers the worker calls
``whip|whep.create|patch|delete`` made by the HTTP layer, demultiplexes the port's datagrams
to peers (by ICE ufrag, then by address: RFC 7983 classification), keeps each peer's deadline
in the worker's scheduler and turns peer events into demux bindings and endpoint closes.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from trackmesh.core.errors import ControlError
from trackmesh.core.ids import SessionId
from trackmesh.transports.webrtc.ice import IceLiteAgent
from trackmesh.transports.webrtc.peer import PeerSetupError, WebRtcPeer
from trackmesh.transports.webrtc.peer_events import Connected, Disconnected, IceSelected, PeerMode
from trackmesh.transports.webrtc.sdp import SdpError
from trackmesh.transports.webrtc.sdp_answer import AnswerPolicy, answer_offer
from trackmesh.transports.webrtc.sdpfrag import is_ice_restart, parse_sdpfrag, render_sdpfrag, restart_answer

from .webrtc_port import ConnTimer, WebRtcPort
from .worker import RpcError, WorkerRuntime

log = logging.getLogger("trackmesh.webrtc")

# A session that ended on its own (DTLS close, consent expiry) is remembered this long, so the
# client's DELETE that usually follows its own close still gets 200, not 404.
TOMBSTONE_TTL = 120.0


@dataclass(eq=False)
class Session:
    """One WHIP or WHEP connection on this worker."""

    mode: PeerMode
    peer: WebRtcPeer
    token_hash: str
    etag: str
    remote_ufrag: str
    remote_pwd: str
    ufrags: list[str] = field(default_factory=list)
    closing: bool = False

    @property
    def key(self) -> SessionId:
        return self.peer.endpoint.session


class WebRtcTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.port = WebRtcPort.of(runtime)
        self.certificate = self.port.certificate
        self.fingerprint = self.port.fingerprint
        self.demux = self.port.demux
        self.clock = self.port.clock
        self.sessions: dict[SessionId, Session] = {}
        self.timers: dict[SessionId, ConnTimer[Session]] = {}
        # conn id -> (mode, token hash, until): sessions that ended recently.
        self.tombstones: dict[str, tuple[PeerMode, str, float]] = {}
        self.counters = runtime.counters
        for name in ("webrtc_sessions_created", "webrtc_sessions_closed", "webrtc_offers_refused"):
            self.counters.setdefault(name, 0)
        for mode in (PeerMode.WHIP, PeerMode.WHEP):
            kind = mode.value
            runtime.register_rpc(f"{kind}.create", functools.partial(self.create, mode=mode))
            runtime.register_rpc(f"{kind}.patch", functools.partial(self.patch, mode=mode))
            runtime.register_rpc(f"{kind}.delete", functools.partial(self.delete, mode=mode))
        runtime.register_rpc("whep.limit", self.limit)
        runtime.register_rpc("webrtc.stats", self.stats)
        runtime.on_shutdown(self.on_shutdown)

    # ---- media path ----------------------------------------------------------------------

    def on_datagram(self, now: float, data: bytes, addr: tuple[str, int], *, session: Session) -> None:
        """A datagram the worker's WebRtcPort routed to ``session``."""
        session.peer.handle_datagram(now, data, addr)
        self.after_input(now, session)

    def after_input(self, now: float, session: Session) -> None:
        peer = session.peer
        while (event := peer.poll_event()) is not None:
            if isinstance(event, IceSelected):
                self.demux.bind(event.addr, session.key)
            elif isinstance(event, Connected):
                if self.runtime.core.audit is not None:
                    self.runtime.core.audit.connected(now, session.key, "")
                log.info(
                    "connected", extra={"fields": {"conn": _short(peer.endpoint.conn_id), "mode": session.mode.value}}
                )
            elif isinstance(event, Disconnected):
                self.close(now, session, event.reason)
                return
        timer = self.timers.get(session.key)
        if timer is not None:
            self.runtime.track(timer)

    def on_core_events(self, now: float, *, session: Session) -> None:
        session.peer.on_core_events(now)
        self.after_input(now, session)

    # ---- control calls -------------------------------------------------------------------

    def create(self, now: float, params: dict[str, Any], mode: PeerMode) -> dict[str, Any]:
        ice = IceLiteAgent()
        creds = ice.local_credentials
        local = self.port.local_params(creds.ufrag, creds.pwd)
        policy = AnswerPolicy.whip() if mode is PeerMode.WHIP else AnswerPolicy.whep()
        try:
            answer = answer_offer(str(params["offer"]), local, policy)
        except SdpError as exc:
            self.counters["webrtc_offers_refused"] += 1
            raise RpcError(400, f"cannot accept the offer: {exc}") from None
        room = str(params["room"])
        peer_name = params.get("peer") or f"{mode.value}-{secrets.token_hex(4)}"
        endpoint = self.runtime.core.create_endpoint()
        audit = self.runtime.core.audit  # the connector's event source, when there is one
        if audit is not None:
            audit.connecting(now, endpoint.session, str(params.get("remote_ip") or ""), str(params.get("app") or ""))
        self.clock.advance(now)
        try:
            peer = WebRtcPeer(
                now,
                endpoint,
                answer,
                ice,
                self.certificate,
                self.runtime.outbox,
                mode=mode,
                wallclock=time.time(),
                clock=self.clock,
                room=room,
                peer=str(peer_name),
            )
        except PeerSetupError as exc:
            self.runtime.core.close_endpoint(now, endpoint.session, "setup failed")
            if audit is not None:
                audit.disconnected(now, endpoint.session, "setup failed")
            raise RpcError(400, f"cannot join room {room!r}: {exc}") from None
        session = Session(
            mode,
            peer,
            str(params["token_hash"]),
            secrets.token_hex(8),
            answer.transport.ice_ufrag,
            answer.transport.ice_pwd,
            [creds.ufrag],
        )
        key = endpoint.session
        self.sessions[key] = session
        self.timers[key] = ConnTimer(session, session.peer, self.after_input)
        self.port.attach(key, creds.ufrag, functools.partial(self.on_datagram, session=session))
        self.runtime.listen(key, functools.partial(self.on_core_events, session=session))
        self.counters["webrtc_sessions_created"] += 1
        if mode is PeerMode.WHEP and params.get("max_spatial") is not None:
            peer.set_max_spatial(now, int(params["max_spatial"]))
        self.after_input(now, session)
        log.info(
            "session created",
            extra={"fields": {"mode": mode.value, "room": room, "peer": peer_name, "conn": _short(endpoint.conn_id)}},
        )
        return {"conn_id": endpoint.conn_id, "sdp": answer.sdp, "etag": session.etag}

    def _session(self, mode: PeerMode, params: dict[str, Any]) -> Session:
        found = self.runtime.core.lookup(str(params.get("conn_id", "")))
        session = None if isinstance(found, ControlError) else self.sessions.get(found.session)
        if session is None or session.mode is not mode:
            raise RpcError(404, "unknown conn id")
        if not hmac.compare_digest(session.token_hash, str(params.get("token_hash", ""))):
            raise RpcError(403, "this token did not create the session")
        return session

    def patch(self, now: float, params: dict[str, Any], mode: PeerMode) -> dict[str, Any]:
        session = self._session(mode, params)
        if_match = params.get("if_match")
        if if_match is not None and if_match != session.etag:
            raise RpcError(412, "If-Match does not match the session's ETag")
        try:
            frag = parse_sdpfrag(str(params["frag"]))
        except SdpError as exc:
            raise RpcError(400, f"bad trickle-ice-sdpfrag: {exc}") from None
        if not is_ice_restart(frag, session.remote_ufrag, session.remote_pwd):
            # We are ICE-lite (RFC 8445 s2.5): the client's candidates need no action from us,
            # its checks reach our one port and are answered there.
            return {}
        creds = frag.credentials()
        if creds is None:
            raise RpcError(400, "bad trickle-ice-sdpfrag: an ICE restart needs ice-ufrag and ice-pwd")
        new_ufrag, new_pwd = creds
        local = session.peer.ice.restart(new_ufrag, new_pwd)
        session.remote_ufrag, session.remote_pwd = new_ufrag, new_pwd
        self.demux.register(local.ufrag, session.key)
        session.ufrags.append(local.ufrag)
        session.etag = secrets.token_hex(8)
        first = session.peer.answer.media[0] if session.peer.answer.media else None
        cand = self.port.local_params(local.ufrag, local.pwd)
        answer = restart_answer(
            local.ufrag, local.pwd, cand.candidate(), first.mid if first else "0", first.kind if first else "audio"
        )
        self.after_input(now, session)
        return {"sdpfrag": render_sdpfrag(answer), "etag": session.etag}

    def limit(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """Cap (or, with None, uncap) the simulcast layer a WHEP viewer gets: 0 is the lowest."""
        session = self._session(PeerMode.WHEP, params)
        layer = params.get("max_spatial")
        session.peer.set_max_spatial(now, None if layer is None else int(layer))
        self.after_input(now, session)
        return {"max_spatial": layer}

    def delete(self, now: float, params: dict[str, Any], mode: PeerMode) -> None:
        conn_id = str(params.get("conn_id", ""))
        gone = self.tombstones.get(conn_id)
        if gone is not None and gone[0] is mode and gone[2] > now:
            if not hmac.compare_digest(gone[1], str(params.get("token_hash", ""))):
                raise RpcError(403, "this token did not create the session")
            del self.tombstones[conn_id]
            return
        session = self._session(mode, params)
        self.close(now, session, "deleted by the client")

    # ---- teardown ------------------------------------------------------------------------

    def close(self, now: float, session: Session, reason: str) -> None:
        if session.closing:
            return
        session.closing = True
        key = session.key
        session.peer.close(now, reason)
        while session.peer.poll_event() is not None:
            pass
        self.runtime.core.close_endpoint(now, key, reason)
        if self.runtime.core.audit is not None:
            self.runtime.core.audit.disconnected(now, key, reason)
        self.port.detach(key)
        self.runtime.unlisten(key)
        timer = self.timers.pop(key, None)
        if timer is not None:
            self.runtime.untrack(timer)
        self.sessions.pop(key, None)
        if reason != "deleted by the client":
            self._bury(now, session)
        self.counters["webrtc_sessions_closed"] += 1
        log.info("session closed", extra={"fields": {"conn": _short(session.peer.endpoint.conn_id), "reason": reason}})
        if log.isEnabledFor(logging.DEBUG):
            log.debug("session counters", extra={"fields": peer_summary(session.peer)})

    def _bury(self, now: float, session: Session) -> None:
        if len(self.tombstones) > 10_000:
            for conn_id in [c for c, (_, _, until) in self.tombstones.items() if until <= now]:
                del self.tombstones[conn_id]
        self.tombstones[session.peer.endpoint.conn_id] = (session.mode, session.token_hash, now + TOMBSTONE_TTL)

    def on_shutdown(self, now: float) -> None:
        for session in list(self.sessions.values()):
            self.close(now, session, "node stopping")

    def stats(self, now: float = 0.0, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "demux": dict(self.demux.counters),
        }


def peer_summary(peer: WebRtcPeer) -> dict[str, Any]:
    """A peer's non-zero drop/feedback counters, for the debug log and for diagnosing tests."""
    out: dict[str, Any] = {"conn": _short(peer.endpoint.conn_id)}
    out.update({k: v for k, v in peer.counters.items() if v})
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


def _short(conn_id: str) -> str:
    # The head of a conn id is its version and node; the tail (nonce and tag) tells them apart.
    return conn_id[-10:]


def install(runtime: WorkerRuntime) -> None:
    WebRtcTransport(runtime)
