"""The atm0s SDK session over its data channel (sans-IO).

One :class:`SdkSession` per SDK connection. It owns the connection's SCTP association and data channels (fed by
the :class:`~trackmesh.transports.webrtc.peer.WebRtcPeer`'s DTLS application data), decodes each data-channel
message as a ``ClientEvent``, maps its request onto core controls and answers with a ``ServerEvent.response``; it
turns core events into ``ServerEvent`` pushes (room, session, sender, receiver). What a request does to the
connection's senders and receivers is :class:`~trackmesh.transports.sdk.slots.MediaSlots`' job (``self.slots``).

Driver contract (all synchronous, ``now`` monotonic seconds), on top of the peer's own:

- after :class:`~trackmesh.transports.webrtc.events.Connected` from the peer: :meth:`SdkSession.on_connected`
  (we start SCTP as its client, as atm0s does; the SDK's negotiated channel 0 "data" opens with it);
- when the core marks the endpoint ready: :meth:`SdkSession.on_core_events` (instead of the peer's);
- at :meth:`SdkSession.next_deadline`: :meth:`SdkSession.handle_timeout` (drives the peer too);
- after each input: if :attr:`SdkSession.close_reason` is set, close the session (peer, endpoint).

The session never raises on client input: undecodable messages are counted and dropped (there is no ``req_id``
to answer), every decodable request gets a response, possibly an error with the codes of
:class:`~trackmesh.transports.sdk.protocol.ErrorCode`, and the session stays usable after it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trackmesh.core.controls import (
    Join,
    Leave,
    MessageChannelPub,
    MessageChannelStartPub,
    MessageChannelStopPub,
    MessageChannelSub,
    MessageChannelUnsub,
    MixerAttach,
    MixerConfig,
    MixerDetach,
    MixerMode,
    PeerSubscribe,
    PeerUnsubscribe,
    RoomSubscribe,
    RoomUnsubscribe,
)
from trackmesh.core.events import (
    Closed,
    EndpointEvent,
    Joined,
    Left,
    LocalTrackStateChanged,
    MessageChannelMessage,
    MixerSlotSet,
    MixerSlotUnset,
    PeerJoined,
    PeerLeft,
    PeerUpdated,
    TrackStarted,
    TrackStopped,
    TrackUpdated,
    VoiceActivity,
)
from trackmesh.core.message_channel import MessageChannelControl
from trackmesh.core.model import (
    InfoMode,
    JoinOptions,
    LocalTrackState,
    TrackInfo,
    TrackKind,
    TrackSource,
)
from trackmesh.errors import LocalProtocolError
from trackmesh.sdp.model import SdpError
from trackmesh.transports.sdk.errors import RpcFailure, check_core
from trackmesh.transports.sdk.naming import MlineNames
from trackmesh.transports.sdk.protocol import (
    DATA_CHANNEL_ID,
    DATA_CHANNEL_LABEL,
    ErrorCode,
    ProtocolDecodeError,
    decode_client_event,
    error_response,
    features_mixer_pb2,
    features_pb2,
    session_pb2,
    shared_pb2,
)
from trackmesh.transports.sdk.renegotiation import renegotiate
from trackmesh.transports.sdk.slots import MediaSlots, ReceiverSlot, SenderSlot
from trackmesh.transports.sdk.stats import receiver_stats
from trackmesh.transports.webrtc.answer import LocalParams
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.webrtc.sctp.association import AssociationClosed, SctpAssociation
from trackmesh.transports.webrtc.sctp.datachannel import ChannelClosed, ChannelOpened, DataChannelManager, Message

log = logging.getLogger("trackmesh.sdk")

__all__ = ["RpcFailure", "SdkSession", "TokenClaims", "TokenVerifier"]

#: Receiver stats are pushed this often for every attached receiver.
STATS_INTERVAL = 1.0
#: The viewer's bandwidth estimate is split across its receivers this often (core.bitrate).
ALLOC_INTERVAL = 0.5
#: voice_activity: an audio level at or above this (dBov) counts as voice (reported at most every
#: core.tracks.VOICE_ACTIVITY_INTERVAL per receiver).
VOICE_THRESHOLD_DBOV = -40
#: After answering ``session.disconnect`` the connection is closed this much later, so that the response (one SCTP
#: packet) gets a chance to be acknowledged first.
DISCONNECT_GRACE = 0.3

_PROTO_KIND = {TrackKind.AUDIO: shared_pb2.AUDIO, TrackKind.VIDEO: shared_pb2.VIDEO}
_CORE_KIND = {shared_pb2.AUDIO: TrackKind.AUDIO, shared_pb2.VIDEO: TrackKind.VIDEO}
_RECEIVER_STATUS = {
    LocalTrackState.WAITING: shared_pb2.Receiver.WAITING,
    LocalTrackState.ACTIVE: shared_pb2.Receiver.ACTIVE,
    LocalTrackState.INACTIVE: shared_pb2.Receiver.INACTIVE,
}
@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified webrtc token allows: ``None`` room/peer means any."""

    room: str | None = None
    peer: str | None = None
    extra_data: str | None = None
    #: ``record: true`` (atm0s): every track the peer publishes is recorded
    record: bool = False


#: Verifies a raw token (from ``session.join``); None when it is invalid or expired.
TokenVerifier = Callable[[str], TokenClaims | None]


def check_join(claims: TokenClaims, room: str, peer: str) -> str | None:
    """Why a join does not match the token ("Wrong room"/"Wrong peer" as atm0s says), or None."""
    if claims.room is not None and claims.room != room:
        return "Wrong room"
    if claims.peer is not None and claims.peer != peer:
        return "Wrong peer"
    return None


class SdkSession:
    def __init__(
        self,
        now: float,
        peer: WebRtcPeer,
        names: MlineNames,
        tracks: shared_pb2.Tracks,
        claims: TokenClaims,
        verify_token: TokenVerifier,
        local: LocalParams,
        *,
        cookie_key: bytes,
    ) -> None:
        self.peer = peer
        self.endpoint = peer.endpoint
        self.claims = claims
        self.local = local
        self._verify = verify_token
        #: told (now, room, peer, claims) after a ``session.join`` request joined a room (the
        #: worker records a ``record: true`` token's peer); a join at connect is the worker's own
        self.on_join: Callable[[float, str, str, TokenClaims], None] | None = None
        self.session_version = 1
        app = next((m for m in peer.answer.media if m.kind == "application"), None)
        remote_port = app.remote_sctp_port if app is not None else None
        self.has_data_channel = remote_port is not None
        assoc = SctpAssociation(cookie_key=cookie_key, remote_port=remote_port or 5000)
        # RFC 8841 s6.1: never send a message larger than the client's a=max-message-size.
        max_size = app.remote_max_message_size if app is not None else None
        self.dc = DataChannelManager(assoc, dtls_role="server", max_message_size=max_size)
        self.dc.open(DATA_CHANNEL_LABEL, negotiated_id=DATA_CHANNEL_ID)
        self.channel_open = False
        self.counters: dict[str, int] = dict.fromkeys(
            ("requests", "errors", "malformed", "events_sent", "events_dropped", "send_failed"), 0
        )
        self.close_reason: str | None = None
        self.disconnected = False
        self._close_at: float | None = None
        self._seq = 0
        self._pending: deque[session_pb2.ServerEvent] = deque()  # pushed before the channel opened
        self._next_stats: float | None = None
        self._next_alloc: float | None = None
        #: The media slots (senders and receivers the client declared): the one API to publish, attach and configure.
        # (``_push`` looked up per event: the tests capture pushes by replacing it.)
        self.slots = MediaSlots(self.endpoint, peer, lambda now, ev: self._push(now, ev), self._voice_threshold)
        #: The receivers the audio mixer of the current room uses as output slots (slot order).
        self.mixer_outputs: tuple[str, ...] = ()
        mid_of_sender = {v: k for k, v in names.senders.items()}
        mid_of_receiver = {v: k for k, v in names.receivers.items()}
        for s in tracks.senders:
            kind = _CORE_KIND.get(s.kind)
            if kind is None or not s.name or s.name in self.senders:
                continue
            self.slots.add_sender(s, kind, mid_of_sender.get(s.name))
        for r in tracks.receivers:
            kind = _CORE_KIND.get(r.kind)
            if kind is None or not r.name or r.name in self.receivers:
                continue
            self.slots.add_receiver(now, r.name, kind, mid_of_receiver.get(r.name))
        self._initial_receivers = [
            (r.name, r.state.source, r.state.config if r.state.HasField("config") else None)
            for r in tracks.receivers
            if r.state.HasField("source") and r.name in self.receivers
        ]

    # ---- setup ----------------------------------------------------------------------------------

    def join_at_connect(self, now: float, join: session_pb2.RoomJoin) -> RpcFailure | None:
        """The join carried by the connect request (or rebuilt on a migrating restart-ice)."""
        try:
            self._join(now, join, self.claims)
        except RpcFailure as exc:
            return exc
        for name, source, config in self._initial_receivers:
            # A source that is gone is skipped: the client attaches again when it sees it.
            with contextlib.suppress(RpcFailure):
                self.slots.attach_receiver(now, self.receivers[name], source, config)
        return None

    @property
    def joined(self) -> bool:
        return self.endpoint.room is not None

    @property
    def senders(self) -> dict[str, SenderSlot]:
        return self.slots.senders

    @property
    def receivers(self) -> dict[str, ReceiverSlot]:
        return self.slots.receivers

    # ---- inputs ---------------------------------------------------------------------------------

    def on_connected(self, now: float) -> None:
        """DTLS is up: start SCTP (we send INIT; the client's own INIT, if any, is a collision the association
        resolves)."""
        if self.has_data_channel:
            self.dc.connect(now)
            self._pump(now)
        self._next_stats = now + STATS_INTERVAL
        self._next_alloc = now + ALLOC_INTERVAL

    def on_application_data(self, now: float, data: bytes) -> None:
        """The peer's ``ApplicationData`` event: one SCTP packet (RFC 8261) for the data channels."""
        self.dc.handle_data(now, data)
        self._pump(now)

    def on_message(self, now: float, data: bytes) -> None:
        """One data-channel message of channel 0 (public for tests that bypass SCTP)."""
        try:
            event = decode_client_event(data)
        except ProtocolDecodeError:
            self.counters["malformed"] += 1
            return
        if not event.HasField("request"):
            self.counters["malformed"] += 1
            return
        self.counters["requests"] += 1
        response = self.handle_request(now, event.request)
        self._push(now, session_pb2.ServerEvent(response=response))

    def handle_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        """Answer one request; never raises."""
        try:
            if self.disconnected:
                raise RpcFailure(ErrorCode.RPC_ALREADY_DISCONNECTED, "the session is disconnected")
            which = req.WhichOneof("request")
            if which == "session":
                return self._session_request(now, req)
            if which == "room":
                return self._room_request(now, req)
            if which == "sender":
                return self._sender_request(now, req)
            if which == "receiver":
                return self._receiver_request(now, req)
            if which == "features":
                return self._features_request(now, req)
            if which == "message_channel":
                return self._message_channel_request(now, req)
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "the request names no known kind")
        except RpcFailure as exc:
            self.counters["errors"] += 1
            return error_response(req.req_id, exc.code, exc.message)
        except (SdpError, ValueError, LocalProtocolError) as exc:
            self.counters["errors"] += 1
            return error_response(req.req_id, ErrorCode.INTERNAL_SERVER_ERROR, str(exc)[:200])

    def on_core_events(self, now: float) -> None:
        for ev in self.peer.on_core_events(now):
            self._on_core_event(now, ev)

    def handle_timeout(self, now: float) -> None:
        self.peer.handle_timeout(now)
        self.dc.handle_timeout(now)
        self._pump(now)
        if self._close_at is not None and now >= self._close_at:
            self._close_at = None
            self.close_reason = self.close_reason or "disconnected by the client"
        if self._next_alloc is not None and now >= self._next_alloc:
            self._next_alloc = now + ALLOC_INTERVAL
            self.allocate_bitrate(now)
        if self._next_stats is not None and now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            self._push_stats(now)

    def next_deadline(self) -> float | None:
        candidates = (
            self.peer.next_deadline(), self.dc.next_deadline(), self._close_at, self._next_stats, self._next_alloc
        )  # fmt: skip
        return min((d for d in candidates if d is not None), default=None)

    def goaway(self, now: float, reason: str, remain_seconds: int = 0) -> None:
        """Tell the client this node is going away (sent before a drain closes the session)."""
        goway = session_pb2.ServerEvent.Session.GoAway(reason=reason, remain_seconds=remain_seconds)
        self._push(now, session_pb2.ServerEvent(session=session_pb2.ServerEvent.Session(goway=goway)))

    def disconnected_event(self, now: float, reason: str) -> None:
        ev = session_pb2.ServerEvent.Session.Disconnected(reason=reason)
        self._push(now, session_pb2.ServerEvent(session=session_pb2.ServerEvent.Session(disconnected=ev)))

    # ---- requests -------------------------------------------------------------------------------

    def _session_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        r = req.session
        which = r.WhichOneof("request")
        out = session_pb2.Response.Session()
        if which == "join":
            claims = self._verify(r.join.token)
            if claims is None:
                raise RpcFailure(ErrorCode.RPC_TOKEN_INVALID, "invalid or expired webrtc token")
            if self.joined:
                raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, f"already in room {self.endpoint.room!r}: leave first")
            self._join(now, r.join.info, claims)
            self.claims = claims
            if self.on_join is not None:
                self.on_join(now, r.join.info.room, r.join.info.peer, claims)
            out.join.SetInParent()
        elif which == "leave":
            if not self.joined:
                raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "not in a room")
            check_core(self.endpoint.control(now, Leave()))
            self.slots.left_room()
            out.leave.SetInParent()
        elif which == "sdp":
            out.sdp.sdp = self.renegotiate(now, r.sdp.sdp, r.sdp.tracks if r.sdp.HasField("tracks") else None)
        elif which == "disconnect":
            self.disconnected = True
            self._close_at = now + DISCONNECT_GRACE
            out.disconnect.SetInParent()
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty session request")
        return session_pb2.Response(req_id=req.req_id, session=out)

    def _join(self, now: float, info: session_pb2.RoomJoin, claims: TokenClaims) -> None:
        why = check_join(claims, info.room, info.peer)
        if why is not None:
            raise RpcFailure(ErrorCode.RPC_TOKEN_ROOM_PEER_NOT_MATCH, why)
        options = JoinOptions(
            peer_info=InfoMode.AUTO if info.subscribe.peers else InfoMode.MANUAL,
            track_info=InfoMode.AUTO if info.subscribe.tracks else InfoMode.MANUAL,
            publish_peer=info.publish.peer,
            publish_tracks=info.publish.tracks,
            metadata=info.metadata if info.HasField("metadata") else None,
            extra_data=claims.extra_data,
        )
        mixer = self._mixer_config(info)
        check_core(self.endpoint.control(now, Join(info.room, info.peer, options)))
        if mixer is not None:
            err = self.endpoint.control(now, mixer)
            if err is not None:
                self.endpoint.control(now, Leave())
                check_core(err)
            self.mixer_outputs = mixer.outputs
            self._watch_voice()
        self.slots.publish_attached(now)

    def _mixer_config(self, info: session_pb2.RoomJoin) -> MixerConfig | None:
        """The core MixerConfig of a join's ``features.mixer`` (checked before joining, so that a bad one refuses
        the join instead of half-joining); None when the join asks for no mixer."""
        if not info.HasField("features") or not info.features.HasField("mixer"):
            return None
        cfg = info.features.mixer
        if not cfg.outputs:
            return None
        for name in cfg.outputs:
            slot = self.receivers.get(name)
            if slot is None or slot.mid is None or slot.kind is not TrackKind.AUDIO:
                raise RpcFailure(ErrorCode.RPC_TRACK_NAME_NOT_FOUND, f"mixer output {name!r} is no audio receiver")
        mode = MixerMode.MANUAL if cfg.mode == features_mixer_pb2.MANUAL else MixerMode.AUTO
        sources = tuple(TrackSource(s.peer, s.track) for s in cfg.sources) if mode is MixerMode.MANUAL else ()
        return MixerConfig(mode, tuple(cfg.outputs), sources)

    def _features_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        if not self.joined:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "join a room first")
        r = req.features
        if r.WhichOneof("request") != "mixer":
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty features request")
        m = r.mixer
        which = m.WhichOneof("request")
        out = features_mixer_pb2.Response()
        if which == "attach":
            srcs = tuple(TrackSource(s.peer, s.track) for s in m.attach.sources)
            check_core(self.endpoint.control(now, MixerAttach(srcs)))
            out.attach.SetInParent()
        elif which == "detach":
            srcs = tuple(TrackSource(s.peer, s.track) for s in m.detach.sources)
            check_core(self.endpoint.control(now, MixerDetach(srcs)))
            out.detach.SetInParent()
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty mixer request")
        return session_pb2.Response(req_id=req.req_id, features=features_pb2.Response(mixer=out))

    def _message_channel_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        if not self.joined:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "join a room first")
        r = req.message_channel
        label = r.label
        if not label:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "a message channel needs a label")
        which = r.WhichOneof("request")
        out = session_pb2.Response.MessageChannel(label=label)
        ctl: MessageChannelControl
        if which == "start_pub":
            ctl = MessageChannelStartPub(label)
        elif which == "stop_pub":
            ctl = MessageChannelStopPub(label)
        elif which == "sub":
            ctl = MessageChannelSub(label)
        elif which == "unsub":
            ctl = MessageChannelUnsub(label)
        elif which == "pub":
            ctl = MessageChannelPub(label, bytes(r.pub.data))
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty message channel request")
        check_core(self.endpoint.control(now, ctl))
        getattr(out, which).SetInParent()
        return session_pb2.Response(req_id=req.req_id, message_channel=out)

    def _room_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        r = req.room
        which = r.WhichOneof("request")
        if not self.joined:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "join a room first")
        out = session_pb2.Response.Room()
        if which == "subscribe":
            peer = r.subscribe.peer
            check_core(self.endpoint.control(now, PeerSubscribe(peer) if peer else RoomSubscribe()))
            out.subscribe.SetInParent()
        elif which == "unsubscribe":
            peer = r.unsubscribe.peer
            check_core(self.endpoint.control(now, PeerUnsubscribe(peer) if peer else RoomUnsubscribe()))
            out.unsubscribe.SetInParent()
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty room request")
        return session_pb2.Response(req_id=req.req_id, room=out)

    def _sender_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        r = req.sender
        slot = self.senders.get(r.name)
        if slot is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NAME_NOT_FOUND, f"no sender {r.name!r}")
        which = r.WhichOneof("request")
        out = session_pb2.Response.Sender()
        if which == "attach":
            self.slots.attach_sender(now, slot, r.attach.source, r.attach.config)
            out.attach.SetInParent()
        elif which == "detach":
            self.slots.detach_sender(now, slot)
            out.detach.SetInParent()
        elif which == "config":
            self.slots.configure_sender(now, slot, r.config)
            out.config.SetInParent()
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty sender request")
        return session_pb2.Response(req_id=req.req_id, sender=out)

    def _receiver_request(self, now: float, req: session_pb2.Request) -> session_pb2.Response:
        r = req.receiver
        slot = self.receivers.get(r.name)
        if slot is None or slot.mid is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NAME_NOT_FOUND, f"no receiver {r.name!r}")
        which = r.WhichOneof("request")
        out = session_pb2.Response.Receiver()
        if which == "attach":
            if not self.joined:
                raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "join a room first")
            config = r.attach.config if r.attach.HasField("config") else None
            self.slots.attach_receiver(now, slot, r.attach.source, config)
            out.attach.SetInParent()
        elif which == "detach":
            self.slots.detach_receiver(now, slot)
            out.detach.SetInParent()
        elif which == "config":
            self.slots.configure_receiver(now, slot, r.config)
            out.config.SetInParent()
        else:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "empty receiver request")
        return session_pb2.Response(req_id=req.req_id, receiver=out)

    # ---- bitrate control ------------------------------------------------------------------------

    def allocate_bitrate(self, now: float) -> None:
        """Split the viewer's estimate across its receivers and apply layer caps and publisher
        hints (sdk/allocation.py)."""
        self.slots.allocate(now)

    # ---- core events -> server events -------------------------------------------------------------

    def _on_core_event(self, now: float, ev: EndpointEvent) -> None:
        S, R = session_pb2.ServerEvent.Session, session_pb2.ServerEvent.Room
        if isinstance(ev, Joined):
            self._push(now, session_pb2.ServerEvent(session=S(joined=S.JoinedRoom(room=ev.room, peer=ev.peer))))
        elif isinstance(ev, Left):
            self.mixer_outputs = ()
            self._watch_voice()
            self._push(now, session_pb2.ServerEvent(session=S(leaved=S.LeavedRoom(room=ev.room, peer=ev.peer))))
        elif isinstance(ev, PeerJoined):
            pj = R.PeerJoined(peer=ev.info.peer)
            if ev.info.metadata is not None:
                pj.metadata = ev.info.metadata
            if ev.info.extra_data is not None:
                pj.extra_data = ev.info.extra_data
            self._push(now, session_pb2.ServerEvent(room=R(peer_joined=pj)))
        elif isinstance(ev, PeerUpdated):
            pu = R.PeerUpdated(peer=ev.info.peer)
            if ev.info.metadata is not None:
                pu.metadata = ev.info.metadata
            self._push(now, session_pb2.ServerEvent(room=R(peer_updated=pu)))
        elif isinstance(ev, PeerLeft):
            self._push(now, session_pb2.ServerEvent(room=R(peer_leaved=R.PeerLeaved(peer=ev.peer))))
        elif isinstance(ev, TrackStarted):
            self._push(now, session_pb2.ServerEvent(room=R(track_started=_track(R.TrackStarted, ev.info))))
        elif isinstance(ev, TrackUpdated):
            self._push(now, session_pb2.ServerEvent(room=R(track_updated=_track(R.TrackUpdated, ev.info))))
        elif isinstance(ev, TrackStopped):
            ts = R.TrackStopped(peer=ev.peer, track=ev.track, kind=_PROTO_KIND[ev.kind])
            self._push(now, session_pb2.ServerEvent(room=R(track_stopped=ts)))
        elif isinstance(ev, LocalTrackStateChanged):
            if ev.local_track in self.receivers:
                state = session_pb2.ServerEvent.Receiver.State(status=_RECEIVER_STATUS[ev.state])
                rec = session_pb2.ServerEvent.Receiver(name=ev.local_track, state=state)
                self._push(now, session_pb2.ServerEvent(receiver=rec))
        elif isinstance(ev, MixerSlotSet):
            src = shared_pb2.Receiver.Source(peer=ev.source.peer, track=ev.source.track)
            ss = features_mixer_pb2.ServerEvent.SlotSet(slot=ev.slot, source=src)
            self._push_mixer(now, features_mixer_pb2.ServerEvent(slot_set=ss))
        elif isinstance(ev, MixerSlotUnset):
            su = features_mixer_pb2.ServerEvent.SlotUnset(slot=ev.slot)
            self._push_mixer(now, features_mixer_pb2.ServerEvent(slot_unset=su))
        elif isinstance(ev, VoiceActivity):
            if ev.local_track in self.receivers:
                va = session_pb2.ServerEvent.Receiver.VoiceActivity(audio_level=ev.audio_level)
                rec = session_pb2.ServerEvent.Receiver(name=ev.local_track, voice_activity=va)
                self._push(now, session_pb2.ServerEvent(receiver=rec))
        elif isinstance(ev, MessageChannelMessage):
            MC = session_pb2.ServerEvent.MessageChannel
            mc = MC(label=ev.label, message=MC.Message(peer=ev.peer, message=ev.data))
            self._push(now, session_pb2.ServerEvent(message_channel=mc))
        elif isinstance(ev, Closed):
            self.disconnected_event(now, ev.reason)
            self.close_reason = self.close_reason or ev.reason

    def _push_mixer(self, now: float, ev: features_mixer_pb2.ServerEvent) -> None:
        self._push(now, session_pb2.ServerEvent(features=features_pb2.ServerEvent(mixer=ev)))

    def _push_stats(self, now: float) -> None:
        if not self.channel_open:
            return
        for slot in self.receivers.values():
            local = self.endpoint.local_track(slot.name)
            out = self.peer.outbound.get(slot.mid) if slot.mid is not None else None
            if local is None or local.channel is None or out is None:
                continue
            stats = receiver_stats(out, slot.last_octets, STATS_INTERVAL)
            slot.last_octets = out.octets
            rec = session_pb2.ServerEvent.Receiver(name=slot.name, stats=stats)
            self._push(now, session_pb2.ServerEvent(receiver=rec))

    def _voice_threshold(self, slot: ReceiverSlot) -> int | None:
        """Audio receivers report voice activity through their LocalTrack's ``VoiceActivity`` events, except the
        audio mixer's outputs: the mixer reports those itself (from the smoothed level of the source it carries)."""
        return None if slot.name in self.mixer_outputs else -VOICE_THRESHOLD_DBOV

    def _watch_voice(self) -> None:
        """The mixer's outputs changed: every bound audio receiver's threshold again."""
        for slot in self.receivers.values():
            track = self.endpoint.local_track(slot.name) if slot.kind is TrackKind.AUDIO else None
            if track is not None:
                track.voice_threshold = self._voice_threshold(slot)

    # ---- the data channel -------------------------------------------------------------------------

    def _push(self, now: float, event: session_pb2.ServerEvent) -> None:
        if self.channel_open:
            self._seq += 1
            event.seq = self._seq
            try:
                self.dc.send(now, DATA_CHANNEL_ID, event.SerializeToString())
            except LocalProtocolError:
                self.counters["send_failed"] += 1
                return
            self.counters["events_sent"] += 1
            self._flush_sctp(now)
        elif len(self._pending) < 1000:
            self._pending.append(event)
        else:
            self.counters["events_dropped"] += 1

    def _flush_sctp(self, now: float) -> None:
        while (packet := self.dc.poll_transmit(now)) is not None:
            if not self.peer.send_application_data(packet):
                self.counters["send_failed"] += 1

    def _pump(self, now: float) -> None:
        """Send what SCTP has to send, then act on its events."""
        self._flush_sctp(now)
        while (ev := self.dc.poll_event()) is not None:
            if isinstance(ev, ChannelOpened) and ev.channel_id == DATA_CHANNEL_ID:
                self.channel_open = True
                connected = session_pb2.ServerEvent.Session(connected=session_pb2.ServerEvent.Session.Connected())
                self._push(now, session_pb2.ServerEvent(session=connected))
                while self._pending:
                    self._push(now, self._pending.popleft())
            elif isinstance(ev, Message) and ev.channel_id == DATA_CHANNEL_ID:
                self.on_message(now, ev.data)
            elif isinstance(ev, ChannelClosed) and ev.channel_id == DATA_CHANNEL_ID:
                self.channel_open = False
                self.close_reason = self.close_reason or "data channel closed"
            elif isinstance(ev, AssociationClosed):
                self.channel_open = False
                self.close_reason = self.close_reason or "sctp association closed"
        self._flush_sctp(now)

    def renegotiate(
        self, now: float, offer: str, tracks: shared_pb2.Tracks | None = None, local: LocalParams | None = None
    ) -> str:
        """Answer a new offer on the same transport (``session.sdp``, or an ICE restart with new ``local``
        credentials); m-lines may be added, stopped or recycled. Raises RpcFailure (nothing changed)."""
        return renegotiate(self, now, offer, tracks, local)


def _track(cls: Any, info: TrackInfo) -> Any:
    msg = cls(peer=info.peer, track=info.track, kind=_PROTO_KIND[info.kind])
    if info.metadata is not None:
        msg.metadata = info.metadata
    return msg
