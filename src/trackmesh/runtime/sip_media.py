"""The media of SIP calls inside a worker: one RTP/RTCP socket pair per call, the call's endpoint
in its room, one timer for all calls (the 20 ms mix toward the phones).

Thin glue around :class:`~trackmesh.transports.sip.call_media.CallMedia`. The node's SIP driver
(runtime/sip_listener.py) signals and calls, on the room's worker:

- ``sip.open {room, peer, offer, call_id}`` -> ``{session, answer}`` (SDP) or an RpcError
  (488 no acceptable codec, 409 a join refused (a bad room or peer name), 503 no RTP port);
- ``sip.update {session, offer}`` -> ``{answer}``: a re-INVITE/UPDATE (hold, resume);
- ``sip.close {session, reason}``; ``sip.dtmf {session, digits}`` -> ``{sent}``;
- ``sip.ended {}`` -> ``{ended: [[session, reason], ...]}``: calls this worker ended (no RTP for
  30 s, the worker shutting down) since the last poll; the SIP driver sends their BYE.
- Dial-out: ``sip.offer {room, peer}`` -> ``{session, offer}`` (RTP ports bound, the peer in the
  room as "connecting"), then ``sip.answer {session, answer}`` -> ``{codec}`` (the call is
  connected) or 488; ``sip.close`` also drops an offer never answered. A delayed-offer INVITE (no
  SDP, RFC 3261 s13.2.1) takes the same path with ``inbound: true`` (and ``record``): our offer goes
  in the 200, the ACK's answer to ``sip.answer``; such a call does not end when the room empties.
- ``sip.reoffer {session}`` -> ``{offer}``: our offer for a re-INVITE without SDP (the call's codec,
  sendrecv; the ``o=`` version goes up only when it differs from our last SDP, RFC 3264 s8); then
  ``sip.answer {session, answer}`` applies the ACK's answer (hold, resume); a refused answer ends the
  call's media (488) and the driver sends BYE.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from trackmesh.core.controls import Join
from trackmesh.core.events import PeerJoined, PeerLeft
from trackmesh.core.ids import SessionId
from trackmesh.core.model import JoinOptions
from trackmesh.rpc import RpcError
from trackmesh.sdp.codecs import G722, OPUS, PCMA, PCMU, CodecSpec
from trackmesh.sdp.model import SdpError, SessionDescription, render
from trackmesh.sdp.model import parse as parse_sdp
from trackmesh.transports.sip.audio import SharedDecoders
from trackmesh.transports.sip.call_media import CallMedia, CallSetupError
from trackmesh.transports.sip.offer_answer import answer_offer, create_offer, negotiated_from_answer, reoffer

from .console_rpc import ConsoleRpc
from .pending_offer import PendingOffer
from .recording import recording_of
from .worker import WorkerRuntime

log = logging.getLogger("trackmesh.sip")

#: Codecs the bridge transcodes, in our order of preference for dial-out offers.
MEDIA_CODECS: tuple[CodecSpec, ...] = (OPUS, G722, PCMU, PCMA)
_BY_NAME = {spec.name.lower(): spec for spec in (OPUS, G722, PCMU, PCMA)}
RECV_BATCH = 64


class _Call:
    __slots__ = ("kind", "local_sdp", "media", "offered", "rtcp", "rtp", "session", "token_hash", "version")

    def __init__(self, session: SessionId, media: CallMedia, rtp: socket.socket, rtcp: socket.socket) -> None:
        self.session = session
        self.media = media
        self.rtp = rtp
        self.rtcp = rtcp
        self.version = 1
        self.kind = "sip"  # or "rtpengine" (runtime/rtpengine_media.py): no BYE to send when it ends
        self.token_hash = ""  # rtpengine: the bearer token's hash (PATCH/DELETE may present it)
        self.local_sdp: SessionDescription | None = None  # the last SDP we sent (offer or answer)
        self.offered: SessionDescription | None = None  # our re-offer, until the ACK's answer


@dataclass(eq=False, slots=True)
class _PendingOffer(PendingOffer):
    """Our offer, until the far end's answer (a dial-out's 2xx, a delayed-offer INVITE's ACK)."""

    inbound: bool = False  # a delayed-offer INVITE: not ended when the room empties
    record: bool = False


class SipMediaTransport:
    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.calls: dict[SessionId, _Call] = {}
        self.ended: list[tuple[int, str]] = []
        self.decoders = SharedDecoders()  # a voice heard by many phones is decoded once
        # Our offers waiting for the far end's answer (dial-outs, delayed-offer INVITEs).
        self.offers: dict[SessionId, _PendingOffer] = {}
        self.ringing_others: dict[SessionId, set[str]] = {}  # a ringing dial-out: the room's other peers
        self.counters = runtime.counters
        for name in ("sip_calls_opened", "sip_calls_refused", "sip_calls_timed_out", "sip_rtp_in", "sip_rtp_out"):
            self.counters.setdefault(name, 0)
        low, high = runtime.config.sip_rtp_ports
        # Each worker takes its own stripe of the range, so workers never race for a port.
        workers = max(1, runtime.config.workers)
        span = (high - low + 1) // workers
        self._low = low + span * runtime.index
        self._high = self._low + span - 1
        self._next_port = self._low
        for name, handler in (
            ("sip.open", self.open),
            ("sip.update", self.update),
            ("sip.close", self.close),
            ("sip.dtmf", self.dtmf),
            ("sip.offer", self.offer),
            ("sip.answer", self.answer),
            ("sip.reoffer", self.reoffer),
            ("sip.ended", self.take_ended),
            ("sip.waiting", self.waiting),
            ("sip.stats", self.stats),
        ):
            runtime.register_rpc(name, handler)
        runtime.on_shutdown(self._shutdown)
        ConsoleRpc.of(runtime).others.append(SipSessions(self))  # the console's kick and end room

    # ---- ports ---------------------------------------------------------------------------------

    def _bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """An even RTP port and the next one for RTCP (RFC 3550 s11), from this worker's stripe."""
        ip = self.runtime.config.node_ip
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        tries = max(1, (self._high - self._low + 1) // 2)
        for _ in range(tries):
            port = self._next_port + (self._next_port & 1)
            if port + 1 > self._high:
                port = self._low + (self._low & 1)
            self._next_port = port + 2
            rtp = socket.socket(family, socket.SOCK_DGRAM)
            rtcp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                rtp.bind((ip, port))
                rtcp.bind((ip, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            rtp.setblocking(False)
            rtcp.setblocking(False)
            return rtp, rtcp
        raise RpcError(503, "no free RTP port in --sip-rtp-ports")

    # ---- control calls -------------------------------------------------------------------------

    def open(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        try:
            offer = parse_sdp(str(params["offer"]))
        except SdpError as exc:
            self.counters["sip_calls_refused"] += 1
            raise RpcError(400, f"bad SDP offer: {exc}") from None
        rtp, rtcp = self._bind_pair()
        ip = self.runtime.config.node_ip
        port = rtp.getsockname()[1]
        try:
            answer, negotiated = answer_offer(
                offer, address=ip, port=port, session_id=str(port), version=1, supported=MEDIA_CODECS
            )
        except SdpError as exc:
            negotiated = None
            log.info("sip offer refused: %s", exc)
        if negotiated is None:
            rtp.close()
            rtcp.close()
            self.counters["sip_calls_refused"] += 1
            raise RpcError(488, "no acceptable audio stream (we take opus/48000/2, PCMU, PCMA over RTP/AVP)")
        endpoint = self.runtime.core.create_endpoint(str(params.get("app", "")))  # the caller's token's app
        call = self._admit(now, endpoint, str(params["room"]), str(params["peer"]), negotiated, rtp, rtcp)
        call.local_sdp = answer
        self._record(now, params.get("record") is True, call)
        return {"session": int(endpoint.session), "answer": render(answer), "codec": negotiated.codec}

    def _record(self, now: float, record: bool, call: _Call) -> None:
        recording = recording_of(self.runtime)
        if record and recording is not None:
            # A record:true token (atm0s): the caller's audio track is recorded.
            recording.record_peer(now, call.media.endpoint.app, call.media.room, call.media.peer)

    def _admit(
        self,
        now: float,
        endpoint: Any,
        room: str,
        peer: str,
        negotiated: Any,
        rtp: socket.socket,
        rtcp: socket.socket,
        *,
        join: bool = True,
    ) -> _Call:
        """The call's endpoint joins the room (at once, or with ``join=False`` on its first RTP
        packet: the RTPengine-style API); its sockets are read from now on."""
        media = CallMedia(endpoint, room, peer, negotiated, now, self.decoders)
        try:
            if join:
                media.start(now)
        except CallSetupError as exc:
            self.runtime.core.close_endpoint(now, endpoint.session, "sip call refused")
            rtp.close()
            rtcp.close()
            self.counters["sip_calls_refused"] += 1
            raise RpcError(409, str(exc)) from None
        call = _Call(endpoint.session, media, rtp, rtcp)
        self.calls[endpoint.session] = call
        self.runtime.listen(endpoint.session, media.on_core_events)
        loop = self.runtime._loop
        if loop is not None:
            loop.add_reader(rtp.fileno(), self._on_rtp, call)
            loop.add_reader(rtcp.fileno(), self._on_rtcp, call)
        self.runtime.track(self)
        self.counters["sip_calls_opened"] += 1
        port = rtp.getsockname()[1]
        log.info("sip call joined", extra={"fields": {"room": room, "peer": peer, "codec": negotiated.codec,
                                                      "rtp_port": port}})  # fmt: skip
        return call

    def offer(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """A dial-out's offer: RTP ports and our codecs (Opus, PCMU, PCMA, telephone-event). The peer
        is in the room at once with metadata ``{"sip": true, "state": "connecting"}`` (atm0s shows
        a ringing call); ``sip.answer`` makes it ``connected``."""
        endpoint = self.runtime.core.create_endpoint(str(params.get("app", "")))
        metadata = json.dumps({"sip": True, "state": "connecting"})
        err = endpoint.control(now, Join(str(params["room"]), str(params["peer"]), JoinOptions(metadata=metadata)))
        if err is not None:
            self.runtime.core.close_endpoint(now, endpoint.session, "dial-out refused")
            self.counters["sip_calls_refused"] += 1
            raise RpcError(409, f"the call cannot join: {err.message}")
        others: set[str] = set()
        self.ringing_others[endpoint.session] = others
        self.runtime.listen(endpoint.session, lambda now: _note_peers(endpoint, str(params["peer"]), others))
        try:
            rtp, rtcp = self._bind_pair()
        except RpcError:
            self.runtime.unlisten(endpoint.session)
            self.runtime.core.close_endpoint(now, endpoint.session, "no RTP port")
            raise
        port = rtp.getsockname()[1]
        sdp = create_offer(
            address=self.runtime.config.node_ip, port=port, session_id=str(port), version=1, codecs=MEDIA_CODECS
        )
        self.offers[endpoint.session] = _PendingOffer(
            endpoint, rtp, rtcp, sdp, str(params["room"]), str(params["peer"]),
            inbound=params.get("inbound") is True, record=params.get("record") is True,
        )  # fmt: skip
        return {"session": int(endpoint.session), "offer": render(sdp)}

    def answer(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        session = SessionId(int(params["session"]))
        pending = self.offers.pop(session, None)
        if pending is None:
            return self._reanswer(now, session, str(params["answer"]))
        endpoint = pending.endpoint
        try:
            negotiated = negotiated_from_answer(pending.sdp, parse_sdp(str(params["answer"])))
        except SdpError:
            negotiated = None
        if negotiated is None:
            self.ringing_others.pop(endpoint.session, None)
            self.runtime.unlisten(endpoint.session)
            self.runtime.core.close_endpoint(now, endpoint.session, "no acceptable answer")
            pending.rtp.close()
            pending.rtcp.close()
            self.counters["sip_calls_refused"] += 1
            raise RpcError(488, "the far end's answer has no audio stream we can use")
        others = self.ringing_others.pop(endpoint.session, set())
        call = self._admit(now, endpoint, pending.room, pending.peer, negotiated, pending.rtp, pending.rtcp)
        # What our later offers (a session refresh re-INVITE) carry: the agreed codec only, as a new
        # version of our SDP (RFC 3264 s8), not the whole first offer the far end could re-pick from.
        port = pending.rtp.getsockname()[1]
        call.version = 2
        call.local_sdp = reoffer(negotiated, pending.sdp, address=self.runtime.config.node_ip, port=port,
                                 session_id=str(port), version=call.version)  # fmt: skip
        if not pending.inbound:
            call.media.end_when_alone = True  # a dial-out ends when everybody else has left (atm0s)
            call.media.others |= others  # (an empty room: it ends once someone came and left, as before)
        else:
            call.media.others |= others
            self._record(now, pending.record, call)
        return {"codec": negotiated.codec, "sdp": render(call.local_sdp)}

    def reoffer(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """Our offer for a re-INVITE without SDP: the same ``o=`` version when it equals the last SDP
        we sent, else one higher (RFC 3264 s8: the version changes with the session description)."""
        call = self._call(params)
        port = call.rtp.getsockname()[1]
        address = self.runtime.config.node_ip
        previous = call.local_sdp or SessionDescription()
        sdp = reoffer(call.media.negotiated, previous, address=address, port=port, session_id=str(port),
                      version=call.version)  # fmt: skip
        if call.local_sdp is None or render(sdp) != render(call.local_sdp):
            call.version += 1
            sdp = reoffer(call.media.negotiated, previous, address=address, port=port, session_id=str(port),
                          version=call.version)  # fmt: skip
        call.offered = call.local_sdp = sdp
        return {"offer": render(sdp)}

    def _reanswer(self, now: float, session: SessionId, text: str) -> dict[str, Any]:
        """The ACK's answer to our re-offer: hold, resume or a new address. Unusable: the call's media
        ends (the driver sends BYE, RFC 3261 s13.2.1)."""
        call = self.calls.get(session)
        if call is None or call.offered is None:
            raise RpcError(404, "no such offer on this worker")
        offered, call.offered = call.offered, None
        try:
            negotiated = negotiated_from_answer(offered, parse_sdp(text))
        except SdpError:
            negotiated = None
        if negotiated is None or negotiated.codec.lower() != call.media.negotiated.codec.lower():
            self._end(now, call, "no acceptable answer", report=False)
            raise RpcError(488, "the far end's answer has no audio stream we can use")
        call.media.renegotiate(negotiated, now)
        return {"codec": negotiated.codec, "direction": negotiated.direction}

    def _call(self, params: dict[str, Any]) -> _Call:
        call = self.calls.get(SessionId(int(params["session"])))
        if call is None:
            raise RpcError(404, "no such call on this worker")
        return call

    def update(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """A re-offer: answered with the call's codec on the same port (RFC 3264 s8)."""
        call = self._call(params)
        try:
            offer = parse_sdp(str(params["offer"]))
        except SdpError as exc:
            raise RpcError(400, f"bad SDP offer: {exc}") from None
        current = call.media.negotiated
        spec = _BY_NAME.get(current.codec.lower())
        call.version += 1
        answer, negotiated = answer_offer(
            offer,
            address=self.runtime.config.node_ip,
            port=call.rtp.getsockname()[1],
            session_id=str(call.rtp.getsockname()[1]),
            version=call.version,
            supported=(spec,) if spec is not None else MEDIA_CODECS,
        )
        if negotiated is None:
            raise RpcError(488, "the re-offer drops the call's codec")
        call.media.renegotiate(negotiated, now)
        call.local_sdp, call.offered = answer, None
        log.info("sip call updated", extra={"fields": {"peer": call.media.peer, "direction": negotiated.direction}})
        return {"answer": render(answer), "direction": negotiated.direction}

    def close(self, now: float, params: dict[str, Any]) -> None:
        pending = self.offers.pop(SessionId(int(params["session"])), None)
        if pending is not None:
            session = pending.endpoint.session
            self.ringing_others.pop(session, None)
            self.runtime.unlisten(session)
            self.runtime.core.close_endpoint(now, session, "dial-out ended")
            pending.rtp.close()
            pending.rtcp.close()
        call = self.calls.get(SessionId(int(params["session"])))
        if call is not None:
            self._end(now, call, str(params.get("reason", "hung up")), report=False)

    def dtmf(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        call = self._call(params)
        sent = call.media.send_dtmf(str(params["digits"]))
        self._send(call)
        return {"sent": sent}

    def waiting(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        """A call that rings until someone else is in the room (WaitOtherPeers): how many others are.
        Its media timeout starts again (the phone sends no RTP before our 200)."""
        session = SessionId(int(params["session"]))
        if session in self.offers:  # a delayed-offer INVITE: its peer is in the room, "connecting"
            return {"others": len(self.ringing_others.get(session, ()))}
        call = self._call(params)
        call.media.last_rtp = now
        return {"others": len(call.media.others)}

    def take_ended(self, now: float, params: dict[str, Any]) -> dict[str, Any]:
        ended, self.ended = self.ended, []
        return {"ended": ended}

    def stats(self, now: float = 0.0, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "opus_decoders": len(self.decoders),
            "calls": [
                {
                    "session": int(c.session),
                    "worker": self.runtime.index,
                    "kind": c.kind,
                    "joined": c.media.started,
                    "room": c.media.room,
                    "peer": c.media.peer,
                    "codec": c.media.negotiated.codec,
                    "direction": c.media.negotiated.direction,
                    "rtp_in": c.media.leg.stats.received,
                    "rtp_out": c.media.leg.stats.sent,
                    "uplink_packets": c.media.stats.uplink_packets,
                    "downlink_packets": c.media.stats.downlink_packets,
                    "dtmf": "".join(c.media.digits),
                    "foreign_rtp": c.media.leg.stats.foreign,
                    "lost": c.media.jitter.stats.lost,
                    "early": c.media.jitter.stats.early,
                }
                for c in self.calls.values()
            ]
        }

    # ---- media -------------------------------------------------------------------------------

    def _on_rtp(self, call: _Call) -> None:
        now = self.runtime.now()
        media = call.media
        if not media.started and not self._join_late(now, call):
            return
        for _ in range(RECV_BATCH):
            try:
                data, addr = call.rtp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self.counters["sip_rtp_in"] += 1
            try:
                media.handle_rtp(now, data, (addr[0], addr[1]))
            except Exception:
                self.counters["handler_errors"] += 1
                log.exception("sip rtp handler failed")
        self._send(call)
        self.runtime.flush(now)

    def _join_late(self, now: float, call: _Call) -> bool:
        """An RTPengine-style call joins its room on its first packet (atm0s 0.2); a refused join
        (the peer name is taken...) ends the call."""
        try:
            call.media.start(now)
        except CallSetupError as exc:
            self.counters["sip_calls_refused"] += 1
            self._end(now, call, f"join refused: {exc}", report=True)
            return False
        log.info("rtpengine call joined on its first packet", extra={"fields": {"peer": call.media.peer}})
        return True

    def _on_rtcp(self, call: _Call) -> None:
        now = self.runtime.now()
        for _ in range(RECV_BATCH):
            try:
                data, addr = call.rtcp.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            call.media.handle_rtcp(now, data, (addr[0], addr[1]))

    def _send(self, call: _Call) -> None:
        leg = call.media.leg
        while (tx := leg.poll_transmit()) is not None:
            data, dest, is_rtcp = tx
            with contextlib.suppress(OSError):
                (call.rtcp if is_rtcp else call.rtp).sendto(data, dest)
                self.counters["sip_rtp_out"] += 1

    # ---- time (one scheduler entry for every call of the worker) -------------------------------

    def next_deadline(self) -> float | None:
        return min((c.media.next_deadline() for c in self.calls.values()), default=None)

    def handle_timeout(self, now: float) -> None:
        wall = time.time()
        self.decoders.sweep(now)
        for call in list(self.calls.values()):
            reason = call.media.dead(now)
            if reason is not None:
                self.counters["sip_calls_timed_out"] += 1
                self._end(now, call, reason, report=True)
                continue
            call.media.tick(now, wall)
            self._send(call)
        self.runtime.track(self)

    def _end(self, now: float, call: _Call, reason: str, *, report: bool) -> None:
        self.calls.pop(call.session, None)
        loop = self.runtime._loop
        for sock in (call.rtp, call.rtcp):
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self.runtime.unlisten(call.session)
        self.runtime.core.close_endpoint(now, call.session, reason)
        if report and call.kind == "sip":  # the SIP listener polls these to send their BYE
            self.ended.append((int(call.session), reason))
        log.info("sip call left", extra={"fields": {"peer": call.media.peer, "reason": reason}})

    def hang_up(self, now: float, session: SessionId, reason: str) -> bool:
        """End a call now, as a media timeout does: the SIP driver sends its BYE (the console's kick)."""
        call = self.calls.get(session)
        if call is None:
            return False
        self._end(now, call, reason, report=True)
        return True

    def _shutdown(self, now: float) -> None:
        for call in list(self.calls.values()):
            self._end(now, call, "server shutting down", report=True)
        for session in list(self.offers):
            self.close(now, {"session": int(session)})


def _note_peers(endpoint: Any, peer: str, others: set[str]) -> None:
    """A ringing dial-out's endpoint: which other peers are in the room (CallMedia takes the set on
    the answer, for its end-when-alone rule); nothing else to do with its events yet."""
    while (event := endpoint.poll_event()) is not None:
        if isinstance(event, PeerJoined) and event.info.peer != peer:
            others.add(event.info.peer)
        elif isinstance(event, PeerLeft):
            others.discard(event.peer)


def install(runtime: WorkerRuntime) -> None:
    """Always: SIP calls (when --sip-port is not 0) and the RTPengine-style API share this media
    path; nothing is bound until a call opens."""
    runtime.services[SipMediaTransport] = SipMediaTransport(runtime)


class SipSessions:
    """The console's view of SIP and rtpengine calls: a kick ends the call's media and the SIP driver
    sends the BYE (RFC 3261 s15), as after a media timeout; an rtpengine call ends (its SIP proxy owns
    the dialog and hangs up itself)."""

    def __init__(self, sip: SipMediaTransport) -> None:
        self.sip = sip

    def rows(self, app: str | None) -> list[dict[str, Any]]:
        endpoints = self.sip.runtime.core.endpoints
        out = []
        for call in self.sip.calls.values():
            endpoint = endpoints.get(call.session)
            if endpoint is None or (app is not None and endpoint.app != app):
                continue
            joined = call.media.started  # in its room from its first RTP packet (runtime/sip_media.py)
            out.append({"app": endpoint.app, "session": int(call.session), "room": call.media.room if joined else None,
                        "peer": call.media.peer, "transport": call.kind, "connected": joined, "remote": None})
        return out

    def close(self, now: float, session: int, reason: str) -> bool:
        return self.sip.hang_up(now, SessionId(session), reason)
