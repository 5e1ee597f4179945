"""The SDK session's media slots: one :class:`SenderSlot` per declared sender, one :class:`ReceiverSlot` per
declared receiver, and what the core sees of them.

A slot is a name the client declared in its ``Tracks`` (at connect, or added by a renegotiation) with the m-line
it is mapped to (``mid``; None while it has none). :class:`MediaSlots` is the one place that turns slot changes
into core controls and pushes the slot's state to the client:

- senders: :meth:`MediaSlots.add_sender`, :meth:`~MediaSlots.publish` (a core ``Publish`` plus its bitrate
  config), :meth:`~MediaSlots.unpublish`, :meth:`~MediaSlots.attach_sender`, :meth:`~MediaSlots.detach_sender`,
  :meth:`~MediaSlots.configure_sender`; each publish or unpublish pushes ``ServerEvent.sender.state``;
- receivers: :meth:`MediaSlots.add_receiver` and :meth:`~MediaSlots.bind_receiver` (the receiver's LocalTrack,
  bound to its m-line), :meth:`~MediaSlots.attach_receiver` (subscribe or switch), :meth:`~MediaSlots.detach_receiver`,
  :meth:`~MediaSlots.configure_receiver`, and :meth:`~MediaSlots.allocate` (the viewer's estimate split across
  them, :mod:`.allocation`).

The session (RPC dispatch) and the renegotiation (m-lines added, stopped, recycled) both work through this API.
Failures are :class:`~trackmesh.transports.sdk.errors.RpcFailure` (the session answers them as error responses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trackmesh.core.controls import (
    CreateLocalTrack,
    Publish,
    SetRemoteBitrate,
    Subscribe,
    Switch,
    Unpublish,
    Unsubscribe,
)
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.errors import ControlError
from trackmesh.core.model import BitrateLimit, TrackKind, TrackSource
from trackmesh.transports.sdk.allocation import allocate_receivers
from trackmesh.transports.sdk.errors import RpcFailure, check_core
from trackmesh.transports.sdk.protocol import ErrorCode, session_pb2, shared_pb2
from trackmesh.transports.webrtc.peer import WebRtcPeer

__all__ = ["MAX_BITRATE_BPS", "MediaSlots", "ReceiverSlot", "SenderSlot", "VoiceThreshold"]

#: Sender config ``MAX_BITRATE``: the floor asked of the publisher whatever its viewers can take.
MAX_BITRATE_BPS = {TrackKind.AUDIO: 64_000, TrackKind.VIDEO: 2_500_000}
_UNSET: Any = object()


@dataclass(slots=True)
class SenderSlot:
    name: str
    kind: TrackKind
    mid: str | None
    source: shared_pb2.Sender.Source | None = None
    config: shared_pb2.Sender.Config = field(default_factory=shared_pb2.Sender.Config)
    published: bool = False


@dataclass(slots=True)
class ReceiverSlot:
    name: str
    kind: TrackKind
    mid: str | None
    config: shared_pb2.Receiver.Config | None = None
    last_octets: int = 0
    spatial_cap: Any = _UNSET  # the cap last applied with WebRtcPeer.set_max_spatial
    temporal_cap: Any = _UNSET  # the cap last applied with WebRtcPeer.set_max_temporal
    hint_bps: int | None = None  # the SetLocalBitrate hint last sent
    allocated_bps: int | None = None  # its share of the viewer's estimate, last allocation


#: The RFC 6464 level from which an audio receiver's LocalTrack reports voice activity (core ``VoiceActivity``
#: events, drained by the session), or None when it does not; asked when the receiver is bound.
VoiceThreshold = Callable[[ReceiverSlot], int | None]


class MediaSlots:
    """The slot table of one SDK session (see the module docstring)."""

    __slots__ = ("_push", "_voice_threshold", "endpoint", "peer", "receivers", "senders")

    def __init__(
        self,
        endpoint: Endpoint,
        peer: WebRtcPeer,
        push: Callable[[float, session_pb2.ServerEvent], None],
        voice_threshold: VoiceThreshold,
    ) -> None:
        """``push(now, event)``: sends one server event to the client (in order with the session's responses)."""
        self.endpoint = endpoint
        self.peer = peer
        self.senders: dict[str, SenderSlot] = {}
        self.receivers: dict[str, ReceiverSlot] = {}
        self._push = push
        self._voice_threshold = voice_threshold

    @property
    def joined(self) -> bool:
        return self.endpoint.room is not None

    # ---- senders --------------------------------------------------------------------------------

    def add_sender(self, s: shared_pb2.Sender, kind: TrackKind, mid: str | None) -> SenderSlot:
        slot = SenderSlot(s.name, kind, mid)
        if s.state.HasField("source"):
            slot.source = s.state.source
        if s.state.HasField("config"):
            slot.config = s.state.config
        self.senders[s.name] = slot
        return slot

    def publish(self, now: float, slot: SenderSlot) -> None:
        """Publish an attached sender in the room (nothing when published already or detached)."""
        if slot.published or slot.source is None:
            return
        if slot.mid is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NAME_NOT_FOUND, f"sender {slot.name!r} has no m-line")
        src = slot.source
        metadata = src.metadata if src.HasField("metadata") else None
        publish = Publish(slot.name, slot.kind, metadata, src.screen, cache_keyframes=True)
        check_core(self.endpoint.control(now, publish))
        slot.published = True
        self._apply_sender_config(now, slot)
        self.push_sender_state(now, slot, shared_pb2.Sender.ACTIVE)

    def publish_attached(self, now: float) -> None:
        """Publish every attached sender (after a join)."""
        for slot in self.senders.values():
            if slot.source is not None:
                self.publish(now, slot)

    def unpublish(self, now: float, slot: SenderSlot) -> ControlError | None:
        """Stop publishing a published sender (its source stays); the core's error, if any."""
        if not slot.published:
            return None
        slot.published = False
        err = self.endpoint.control(now, Unpublish(slot.name))
        if err is None:
            self.push_sender_state(now, slot, shared_pb2.Sender.INACTIVE)
        return err

    def left_room(self) -> None:
        """The endpoint left its room: nothing is published any more."""
        for slot in self.senders.values():
            slot.published = False

    def attach_sender(
        self, now: float, slot: SenderSlot, source: shared_pb2.Sender.Source, config: shared_pb2.Sender.Config
    ) -> None:
        if slot.source is not None:
            raise RpcFailure(ErrorCode.RPC_TRACK_ALREADY_ATTACHED, f"sender {slot.name!r} is attached")
        slot.source = source
        slot.config = config
        if self.joined:
            self.publish(now, slot)

    def detach_sender(self, now: float, slot: SenderSlot) -> None:
        if slot.source is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NOT_ATTACHED, f"sender {slot.name!r} is not attached")
        slot.source = None
        check_core(self.unpublish(now, slot))

    def configure_sender(self, now: float, slot: SenderSlot, config: shared_pb2.Sender.Config) -> None:
        if slot.source is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NOT_ATTACHED, f"sender {slot.name!r} is not attached")
        slot.config = config
        if slot.published:
            self._apply_sender_config(now, slot)

    def _apply_sender_config(self, now: float, slot: SenderSlot) -> None:
        if slot.config.bitrate == shared_pb2.MAX_BITRATE:
            limit = BitrateLimit(min_bps=MAX_BITRATE_BPS[slot.kind])
        else:
            limit = BitrateLimit()
        self.endpoint.control(now, SetRemoteBitrate(slot.name, limit))

    def push_sender_state(self, now: float, slot: SenderSlot, status: int) -> None:
        state = session_pb2.ServerEvent.Sender.State(status=status)  # type: ignore[arg-type]
        self._push(now, session_pb2.ServerEvent(sender=session_pb2.ServerEvent.Sender(name=slot.name, state=state)))

    # ---- receivers ------------------------------------------------------------------------------

    def add_receiver(self, now: float, name: str, kind: TrackKind, mid: str | None) -> ReceiverSlot:
        """A declared receiver; with an m-line it gets its LocalTrack now, unattached."""
        slot = ReceiverSlot(name, kind, mid)
        self.receivers[name] = slot
        self.bind_receiver(now, slot)
        return slot

    def bind_receiver(self, now: float, slot: ReceiverSlot) -> None:
        """Bind the receiver's LocalTrack (created if needed) to its m-line's outbound track."""
        exists = self.endpoint.local_track(slot.name) is not None
        if slot.mid is None or (not exists and self.endpoint.control(now, CreateLocalTrack(slot.name, slot.kind))):
            return
        self.peer.bind_local_track(now, slot.mid, slot.name)
        slot.spatial_cap = slot.temporal_cap = _UNSET  # a new OutboundTrack: caps are applied again
        track = self.endpoint.local_track(slot.name)
        if slot.kind is TrackKind.AUDIO and track is not None:
            track.voice_threshold = self._voice_threshold(slot)

    def unbind_receiver(self, now: float, slot: ReceiverSlot) -> None:
        """The receiver's m-line goes away: unsubscribed, its LocalTrack kept without a sink."""
        local_track = self.endpoint.local_track(slot.name)
        if local_track is not None:
            if local_track.channel is not None:
                self.endpoint.control(now, Unsubscribe(slot.name))
            local_track.sink = None  # its OutboundTrack goes with the m-line

    def attach_receiver(
        self,
        now: float,
        slot: ReceiverSlot,
        source: shared_pb2.Receiver.Source,
        config: shared_pb2.Receiver.Config | None,
    ) -> None:
        """Subscribe the receiver to ``source`` (or switch it there), then apply ``config`` if given."""
        if not source.peer or not source.track:
            raise RpcFailure(ErrorCode.RPC_INVALID_REQUEST, "the source needs a peer and a track")
        local = self.endpoint.local_track(slot.name)
        if local is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NAME_NOT_FOUND, f"no receiver {slot.name!r}")
        target = TrackSource(source.peer, source.track)
        if local.source == target and local.channel is not None:
            pass  # attached to it already: only the config may change
        else:
            # The SDK switches a receiver's source by attaching it again.
            ctl = Switch(slot.name, target) if local.channel is not None else Subscribe(slot.name, target)
            check_core(self.endpoint.control(now, ctl))
        if config is not None:
            self.configure_receiver(now, slot, config)

    def detach_receiver(self, now: float, slot: ReceiverSlot) -> None:
        local = self.endpoint.local_track(slot.name)
        if local is None or local.channel is None:
            raise RpcFailure(ErrorCode.RPC_TRACK_NOT_ATTACHED, f"receiver {slot.name!r} is not attached")
        check_core(self.endpoint.control(now, Unsubscribe(slot.name)))

    def configure_receiver(self, now: float, slot: ReceiverSlot, config: shared_pb2.Receiver.Config) -> None:
        slot.config = config
        if slot.kind is TrackKind.VIDEO:
            # Layer caps and priority take effect through the allocation, right away.
            self.allocate(now)

    def allocate(self, now: float) -> None:
        """Split the viewer's estimate across its receivers and apply layer caps and publisher hints
        (:mod:`.allocation`)."""
        allocate_receivers(now, self.receivers.values(), self.endpoint, self.peer)
