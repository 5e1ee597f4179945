"""What :class:`~.uas.CallControl` asks of its driver (open, update, answer, close a call's media;
ask the hooks), and what ``authorize`` may answer. Plain values; no IO."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .auth import Denied, Grant
from .message import Request

__all__ = [
    "Action",
    "AnswerMedia",
    "AuthorizeCall",
    "AuthorizeRegister",
    "Authorizer",
    "CloseMedia",
    "OpenMedia",
    "Pending",
    "ReofferMedia",
    "UpdateMedia",
]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class OpenMedia:
    """Open the call's media and answer the caller's ``offer`` (the answer comes back through
    :meth:`CallControl.media_opened`). An empty ``offer``: a delayed offer (the INVITE had no SDP,
    RFC 3261 s13.2.1): the media side makes *our* offer, the 200 carries it, and the answer comes in
    the ACK (:class:`AnswerMedia`)."""

    call: str
    room: str
    peer: str
    offer: str
    wait_for_peers: bool = False  # answer (200) only once another peer is in the room; ring until then
    record: bool = False  # the caller's grant says record: true
    app: str = ""  # the caller's grant's app (multi-tenancy): its room is that app's


@dataclass(frozen=True, slots=True)
class UpdateMedia:
    call: str
    room: str
    session: int
    offer: str


@dataclass(frozen=True, slots=True)
class AnswerMedia:
    """The far end's ``answer`` to our last offer, for the media side to apply to ``session``: a
    dial-out's 2xx, or the ACK of a 2xx that carried our offer (a delayed-offer INVITE or an
    offerless re-INVITE, RFC 3261 s13.2.1). Refused (no usable codec): the call is ended with BYE."""

    call: str
    room: str
    session: int
    answer: str


@dataclass(frozen=True, slots=True)
class ReofferMedia:
    """A re-INVITE without SDP (RFC 3261 s14.2, RFC 3264 s8): the media side makes our current offer
    (same ``o=`` version when nothing changed), answered through :meth:`CallControl.update_answered`;
    the 200 carries it and the phone's answer comes in the ACK (:class:`AnswerMedia`)."""

    call: str
    room: str
    session: int


@dataclass(frozen=True, slots=True)
class CloseMedia:
    call: str
    room: str
    session: int
    reason: str


@dataclass(frozen=True, slots=True)
class Pending:
    """``authorize`` cannot decide at once (a hook is asked): the INVITE waits for
    :meth:`CallControl.authorized` (it already got 100 Trying)."""


@dataclass(frozen=True, slots=True)
class AuthorizeCall:
    """Ask the driver (its hooks) who may make this call; answer with :meth:`CallControl.authorized`."""

    call: str
    request: Request
    source: Address


@dataclass(frozen=True, slots=True)
class AuthorizeRegister:
    """Ask the driver's hooks about a REGISTER (atm0s 0.1: URL/auth, then URL/register or, for a
    removal, URL/unregister, each with the binding's session id); answer with
    :meth:`CallControl.register_decided`."""

    request: Request
    source: Address
    reliable: bool


Action = OpenMedia | UpdateMedia | ReofferMedia | CloseMedia | AnswerMedia | AuthorizeCall | AuthorizeRegister
#: ``authorize(now, request)``: who may do this INVITE or REGISTER (see :mod:`.auth`); ``Pending``
#: for an INVITE the driver decides later (:class:`AuthorizeCall`).
Authorizer = Callable[[float, Request], Grant | Denied | Pending]
