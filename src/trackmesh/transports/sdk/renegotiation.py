"""Renegotiation of a live SDK connection: ``session.sdp`` and ``restart-ice`` offers (sans-IO).

Apps on ``@atm0s-media-sdk/core`` add senders and receivers after connecting (``session.sender()`` /
``session.receiver()`` add a transceiver at once, and the SDK's ``negotiationneeded`` handler sends a new offer with
the full ``Tracks`` list). An application may also stop a transceiver (its m-line goes to port 0) or make it
``inactive``; a later transceiver may then be placed on a stopped m-line's index with a new mid (recycling, RFC 8829
s5.2.2). This module turns such an offer into a :class:`RenegotiationPlan` without touching any state (so a refused
offer leaves the session as it was), and :func:`apply_plan` carries it out on the session.

What a subsequent offer may change, and how the answer stays stable (RFC 8829 s5.3.2, RFC 3264 s8, RFC 8843):

- m-lines are never removed or reordered; an m-line keeps its mid and kind unless it was stopped (port 0) before,
  in which case its index may be recycled for a new mid. A changed kind, a changed mid on a live m-line, a
  sender turned receiver, or a header extension renumbered is refused with ``InvalidSdp``.
- Existing m-lines keep their payload types (``keep_codecs``), our SSRCs (``send_ssrcs``) and the BUNDLE transport:
  no new ICE credentials unless the offer restarts ICE through ``restart-ice``, and never a new DTLS fingerprint.
- New m-lines we receive on become RemoteTracks named after the ``Tracks.senders`` not seen before (per kind, in
  m-line order, as at connect: :mod:`.naming`); their SSRCs come from ``a=ssrc`` or are learned by mid/rid. New
  m-lines we send on become LocalTracks named after the new ``Tracks.receivers``, attachable at once. New m-lines
  with no new name (Chromium's ``offerToReceive*`` extra transceivers) carry nothing.
- An m-line now at port 0 or ``inactive`` stops: its sender is unpublished (the room sees ``track_stopped``), its
  receiver detached. An ``inactive`` m-line that becomes active again resumes under the same name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from trackmesh.core.model import TrackKind
from trackmesh.sdp.model import SdpError, SessionDescription, parse
from trackmesh.transports.sdk.errors import RpcFailure
from trackmesh.transports.sdk.naming import KIND_NAMES
from trackmesh.transports.sdk.protocol import ErrorCode, shared_pb2
from trackmesh.transports.sdk.slots import MediaSlots
from trackmesh.transports.webrtc.answer import (
    AnswerPolicy,
    AnswerResult,
    LocalParams,
    NegotiatedMedia,
    SendSsrcs,
    answer_offer,
)

__all__ = [
    "Negotiated",
    "RenegotiationError",
    "RenegotiationPlan",
    "apply_plan",
    "plan_for",
    "plan_renegotiation",
    "renegotiate",
]

log = logging.getLogger("trackmesh.sdk")

_KIND = {shared_pb2.AUDIO: TrackKind.AUDIO, shared_pb2.VIDEO: TrackKind.VIDEO}


class Negotiated(Protocol):
    """What a renegotiation reads and changes of an SDK session (``session.SdkSession``): its media slots (which
    hold its peer and endpoint), the ICE credentials of its answers and the SDP session version."""

    slots: MediaSlots
    local: LocalParams
    session_version: int


class RenegotiationError(Exception):
    """The offer cannot be answered on this connection (answered with ``InvalidSdp``; nothing changed)."""


@dataclass(frozen=True, slots=True)
class RenegotiationPlan:
    answer: AnswerResult
    #: Our transport parameters in the answer (new ICE credentials on an ICE restart).
    local: LocalParams
    #: m-lines that stop carrying media (port 0 or inactive now), and of those the ones gone for good (port 0).
    removed: tuple[str, ...]
    stopped: frozenset[str]
    #: New or resumed m-lines the client sends on (mid -> sender name) and receives on (mid -> receiver name).
    senders: Mapping[str, str]
    receivers: Mapping[str, str]
    #: Senders and receivers declared for the first time that got an m-line (slots to create), with their kinds.
    new_senders: tuple[tuple[shared_pb2.Sender, TrackKind], ...]
    new_receivers: tuple[tuple[shared_pb2.Receiver, TrackKind], ...]


def _role(m: NegotiatedMedia) -> str | None:
    """``sender`` when the client sends on the m-line (we receive), ``receiver`` when it receives, else None."""
    if m.kind not in ("audio", "video"):
        return None
    if m.direction in ("recvonly", "sendrecv"):
        return "sender"
    if m.direction == "sendonly":
        return "receiver"
    return None


def _check_lines(current: AnswerResult, offer: SessionDescription) -> None:
    """m-lines stay where they are, with their mid and kind, unless stopped and recycled (RFC 8829 s5.2.2)."""
    old_lines, new_lines = current.offer.media, offer.media
    if len(new_lines) < len(old_lines):
        raise RenegotiationError(
            f"the offer has {len(new_lines)} m-lines, fewer than the {len(old_lines)} negotiated; m-lines are "
            "never removed, only stopped with port 0 (RFC 8829 s5.2.2)"
        )
    live = {m.mid for m in current.media}
    for index, (old, line) in enumerate(zip(old_lines, new_lines, strict=False)):
        if old.mid == line.mid and old.kind != line.kind:
            raise RenegotiationError(f"m-line {index} (mid {old.mid}) changed its kind from {old.kind} to {line.kind}")
        if old.mid != line.mid and old.mid in live:
            raise RenegotiationError(
                f"m-line {index} changed its mid from {old.mid} to {line.mid}; only a stopped (port 0) m-line "
                "can be recycled (RFC 8829 s5.2.2)"
            )


def _check_media(current: AnswerResult, new: AnswerResult, *, ice_restart: bool) -> None:
    """Same transport (ICE unless restarted, DTLS always), same roles and header extension ids."""
    if new.transport.fingerprint != current.transport.fingerprint:
        raise RenegotiationError("the DTLS fingerprint changed; a new DTLS association needs a new connection")
    t0, t1 = current.transport, new.transport
    if not ice_restart and (t0.ice_ufrag, t0.ice_pwd) != (t1.ice_ufrag, t1.ice_pwd):
        raise RenegotiationError("the ICE credentials changed: an ICE restart goes through restart-ice")
    after = {m.mid: m for m in new.media}
    for m in current.media:
        n = after.get(m.mid)
        if m.kind == "application" and n is None:
            raise RenegotiationError(f"the data channel m-line (mid {m.mid}) cannot be stopped")
        if n is None:
            continue
        r0, r1 = _role(m), _role(n)
        if r0 is not None and r1 is not None and r0 != r1:
            raise RenegotiationError(f"m-line mid {m.mid} turned from a client {r0} into a client {r1}")
        for uri, ext_id in m.extensions.items():
            if n.extensions.get(uri, ext_id) != ext_id:
                raise RenegotiationError(
                    f"m-line mid {m.mid} renumbered header extension {uri} from {ext_id} to {n.extensions[uri]} "
                    "(RFC 8285 s6)"
                )


def _name_new_lines(lines: list[NegotiatedMedia], declared: list[tuple[str, str]]) -> dict[str, str]:
    """mid -> name: per kind, the new m-lines in order get the newly declared names in order (as :mod:`.naming`)."""
    out: dict[str, str] = {}
    for kind in ("audio", "video"):
        names = [name for name, k in declared if k == kind]
        for m, name in zip([m for m in lines if m.kind == kind], names, strict=False):
            out[m.mid] = name
    return out


def plan_renegotiation(
    current: AnswerResult,
    offer: str,
    local: LocalParams,
    tracks: shared_pb2.Tracks | None,
    known_senders: Mapping[str, str | None],
    known_receivers: Mapping[str, str | None],
    *,
    ice_restart: bool = False,
) -> RenegotiationPlan:
    """Answer ``offer`` as a subsequent offer of the connection negotiated as ``current``. ``known_senders`` and
    ``known_receivers`` map the session's sender/receiver names to their mids (None: no m-line). Pure: raises
    :class:`RenegotiationError` and changes nothing when the offer cannot be taken."""
    send_ssrcs = {m.mid: SendSsrcs(m.local_ssrc, m.local_rtx_ssrc) for m in current.media if m.local_ssrc is not None}
    keep = {m.mid: m.codecs for m in current.media if m.kind in ("audio", "video")}
    try:
        _check_lines(current, parse(offer))
        new = answer_offer(offer, local, AnswerPolicy.sdk(), send_ssrcs=send_ssrcs, keep_codecs=keep)
    except SdpError as exc:
        raise RenegotiationError(f"cannot accept the offer: {exc}") from None
    _check_media(current, new, ice_restart=ice_restart)

    before = {m.mid: m for m in current.media}
    after = {m.mid: m for m in new.media}
    removed = tuple(mid for mid, m in before.items() if _role(m) and (mid not in after or not _role(after[mid])))
    stopped = frozenset(mid for mid in removed if mid not in after)
    sender_of = {mid: name for name, mid in known_senders.items() if mid is not None}
    receiver_of = {mid: name for name, mid in known_receivers.items() if mid is not None}
    senders: dict[str, str] = {}
    receivers: dict[str, str] = {}
    fresh: list[NegotiatedMedia] = []
    for m in new.media:
        role = _role(m)
        if role is None or (m.mid in before and _role(before[m.mid]) is not None):
            continue  # nothing to carry, or carrying on as before
        if role == "sender" and m.mid in sender_of:
            senders[m.mid] = sender_of[m.mid]  # an inactive m-line resumed
        elif role == "receiver" and m.mid in receiver_of:
            receivers[m.mid] = receiver_of[m.mid]
        elif m.mid not in before:
            fresh.append(m)

    new_senders: list[tuple[shared_pb2.Sender, TrackKind]] = []
    new_receivers: list[tuple[shared_pb2.Receiver, TrackKind]] = []
    if tracks is not None and fresh:
        declared_s = {s.name: s for s in tracks.senders if s.name and s.name not in known_senders and s.kind in _KIND}
        declared_r = {
            r.name: r for r in tracks.receivers if r.name and r.name not in known_receivers and r.kind in _KIND
        }
        # A name declared without an m-line yet (added while the offer was being made) waits for the next offer.
        named_s = _name_new_lines(
            [m for m in fresh if _role(m) == "sender"], [(n, KIND_NAMES[s.kind]) for n, s in declared_s.items()]
        )
        named_r = _name_new_lines(
            [m for m in fresh if _role(m) == "receiver"], [(n, KIND_NAMES[r.kind]) for n, r in declared_r.items()]
        )
        senders.update(named_s)
        receivers.update(named_r)
        new_senders = [(declared_s[n], _KIND[declared_s[n].kind]) for n in named_s.values()]
        new_receivers = [(declared_r[n], _KIND[declared_r[n].kind]) for n in named_r.values()]
    return RenegotiationPlan(new, local, removed, stopped, senders, receivers, tuple(new_senders), tuple(new_receivers))


def plan_for(
    sdk: Negotiated,
    offer: str,
    tracks: shared_pb2.Tracks | None,
    local: LocalParams | None = None,
    *,
    ice_restart: bool = False,
) -> RenegotiationPlan:
    """:func:`plan_renegotiation` for the session's connection; raises RpcFailure ``InvalidSdp``."""
    slots = sdk.slots
    answer = slots.peer.answer
    params = local or sdk.local
    params = LocalParams(
        params.ice_ufrag, params.ice_pwd, params.fingerprint, params.host, params.port,
        session_id=int(answer.answer.origin.session_id), session_version=sdk.session_version + 1,
    )  # fmt: skip
    senders = {n: s.mid for n, s in slots.senders.items()}
    receivers = {n: r.mid for n, r in slots.receivers.items()}
    try:
        return plan_renegotiation(answer, offer, params, tracks, senders, receivers, ice_restart=ice_restart)
    except RenegotiationError as exc:
        raise RpcFailure(ErrorCode.INVALID_SDP, str(exc)) from None


def apply_plan(sdk: Negotiated, now: float, plan: RenegotiationPlan, local: LocalParams | None = None) -> str:
    """Carry out ``plan`` on the session (stop, re-map the peer's m-lines, start what is new); returns the answer.
    ``local``: the new ICE credentials of an ICE restart, kept for later answers."""
    slots = sdk.slots
    removed = set(plan.removed)
    for slot in slots.senders.values():
        if slot.mid not in removed:
            continue
        # Unpublished, so the room sees track_stopped; the source is kept for an inactive m-line that resumes.
        slots.unpublish(now, slot)
        if slot.mid in plan.stopped:
            slot.mid = None  # port 0: this mid never comes back (a recycled index gets a new one)
    for rslot in slots.receivers.values():
        if rslot.mid not in removed:
            continue
        slots.unbind_receiver(now, rslot)
        if rslot.mid in plan.stopped:
            rslot.mid = None
    slots.peer.update_media(now, plan.answer, plan.removed, plan.senders)
    mid_of = {name: mid for mid, name in (*plan.senders.items(), *plan.receivers.items())}
    for s, kind in plan.new_senders:
        slots.add_sender(s, kind, mid_of[s.name])
    for r, kind in plan.new_receivers:
        slots.add_receiver(now, r.name, kind, mid_of[r.name])
    for mid, name in plan.receivers.items():
        rslot = slots.receivers[name]
        if rslot.mid == mid and mid not in slots.peer.outbound:
            slots.bind_receiver(now, rslot)  # an inactive m-line resumed
    if slots.joined:
        # A sender created with its track after connect is never attached by a request: the offer's Tracks carry
        # its source, so it is published now that its m-line exists, like the senders of the connect request.
        for name in plan.senders.values():
            slot = slots.senders[name]
            if slot.source is not None:
                try:
                    slots.publish(now, slot)
                except RpcFailure as exc:
                    log.info("sender %r not published after renegotiation: %s", slot.name, exc.message)
        for r, _ in plan.new_receivers:
            if r.state.HasField("source"):
                config = r.state.config if r.state.HasField("config") else None
                # A source that is gone: the client attaches again when it sees it.
                with contextlib.suppress(RpcFailure):
                    slots.attach_receiver(now, slots.receivers[r.name], r.state.source, config)
    sdk.session_version = plan.local.session_version
    if local is not None:
        sdk.local = local
    return plan.answer.sdp


def renegotiate(
    sdk: Negotiated, now: float, offer: str, tracks: shared_pb2.Tracks | None, local: LocalParams | None = None
) -> str:
    """Plan and apply in one step (``session.sdp``; ``local`` for an ICE restart whose credentials are known)."""
    return apply_plan(sdk, now, plan_for(sdk, offer, tracks, local, ice_restart=local is not None), local)
