"""Bitrate control for one SDK viewer: its bandwidth estimate split across its receivers.

Every :data:`~trackmesh.transports.sdk.session.ALLOC_INTERVAL` and on every receiver config
change, :func:`allocate_receivers` splits the viewer's estimate by priority
(:func:`trackmesh.core.bitrate.allocate`), then for each video receiver:

- caps its spatial layer (within the config's min/max spatial, core.bitrate), gives the
  forwarder ``min_spatial`` as a floor under its own estimate check, and lets an upward
  probe aim at the configured max above that cap (``OutboundTrack.probe_cap``: the estimate of
  a transport-cc viewer only grows by probing, and the cap only rises once it has);
- caps its temporal layer within the config's min/max temporal (:mod:`.temporal`);
- hints the source's publisher what this viewer can take (a core ``SetLocalBitrate``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from trackmesh.core.bitrate import ReceiverDemand, allocate
from trackmesh.core.controls import SetLocalBitrate
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.model import BitrateLimit, TrackKind
from trackmesh.transports.sdk.protocol import shared_pb2
from trackmesh.transports.sdk.temporal import probe_target, temporal_cap
from trackmesh.transports.webrtc.media_out import OutboundTrack
from trackmesh.transports.webrtc.peer import WebRtcPeer

__all__ = ["HINT_CHANGE", "AllocatedReceiver", "allocate_receivers"]

#: A publisher hint is re-sent when it moves by more than this fraction (the core refreshes it anyway).
HINT_CHANGE = 0.1


class AllocatedReceiver(Protocol):
    """What the allocation reads and records of a receiver (the session's ``slots.ReceiverSlot``)."""

    name: str
    kind: TrackKind
    mid: str | None
    config: shared_pb2.Receiver.Config | None
    spatial_cap: Any  # the caps and hint last applied, so that only changes are applied again
    temporal_cap: Any
    hint_bps: int | None
    allocated_bps: int | None


def allocate_receivers(
    now: float, receivers: Iterable[AllocatedReceiver], endpoint: Endpoint, peer: WebRtcPeer
) -> None:
    demands: list[ReceiverDemand] = []
    slots: dict[str, AllocatedReceiver] = {}
    for slot in receivers:
        slots[slot.name] = slot
        local = endpoint.local_track(slot.name)
        out = peer.outbound.get(slot.mid) if slot.mid is not None else None
        if local is None or local.channel is None or out is None:
            continue
        cfg = slot.config
        if slot.kind is TrackKind.VIDEO:
            out.probe_cap = cfg.max_spatial if cfg is not None else None
            out.min_spatial = cfg.min_spatial if cfg is not None and cfg.HasField("min_spatial") else None
            demands.append(
                ReceiverDemand(
                    slot.name,
                    TrackKind.VIDEO,
                    priority=cfg.priority if cfg is not None else 1,
                    layer_rates=out.layer_rates,
                    min_spatial=cfg.min_spatial if cfg is not None and cfg.HasField("min_spatial") else None,
                    max_spatial=cfg.max_spatial if cfg is not None else None,
                )
            )
        else:
            demands.append(ReceiverDemand(slot.name, TrackKind.AUDIO))
    for name, alloc in allocate(peer.ctx.estimate, demands).items():
        slot = slots[name]
        slot.allocated_bps = alloc.bitrate_bps
        if slot.kind is not TrackKind.VIDEO:
            continue
        if alloc.max_spatial != slot.spatial_cap:
            slot.spatial_cap = alloc.max_spatial
            peer.set_max_spatial(now, alloc.max_spatial, name)
        out = peer.outbound.get(slot.mid) if slot.mid is not None else None
        temporal = _temporal_cap(now, peer, slot.config, alloc.bitrate_bps, out)
        if temporal != slot.temporal_cap:
            slot.temporal_cap = temporal
            peer.set_max_temporal(now, temporal, name)
        hint = alloc.hint_bps
        if hint is not None and (slot.hint_bps is None or abs(hint - slot.hint_bps) > HINT_CHANGE * slot.hint_bps):
            slot.hint_bps = hint
            endpoint.control(now, SetLocalBitrate(name, BitrateLimit(max_bps=hint)))


def _temporal_cap(
    now: float, peer: WebRtcPeer, cfg: shared_pb2.Receiver.Config | None, share: int | None, out: OutboundTrack | None
) -> int | None:
    max_t = cfg.max_temporal if cfg is not None else None
    if out is None:
        return max_t
    min_t = cfg.min_temporal if cfg is not None and cfg.HasField("min_temporal") else None
    rates = out.temporal_rates
    cap = temporal_cap(min_t, max_t, share, rates)
    ctx = peer.ctx
    target = probe_target(cap, max_t, rates) if cap != max_t else None
    if target is not None and ctx.own_estimate and ctx.bwe.probe(target, now):
        ctx.estimate = ctx.bwe.estimate  # the next allocation shares the probed estimate
    return cap
