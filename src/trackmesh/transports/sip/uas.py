"""Calls into rooms: the SIP user agent server of the node (RFC 3261 s8.2, s12-15; RFC 4028).

Fed the :class:`~.transaction.TransactionLayer`'s events and ``now``; it answers requests through
the layer and asks its driver to open, update and close the calls' media (:class:`OpenMedia`,
:class:`UpdateMedia`, :class:`CloseMedia`), whose results come back through
:meth:`CallControl.media_opened` and friends. No IO, no clock.

- INVITE (outside a dialog): the layer sent 100 Trying; ``authorize`` names the room and peer
  (or refuses with a status); the offer goes to the media side; its answer is sent in a 200 with
  our Contact. ACK confirms the call; no ACK within 64*T1 ends it with BYE (s13.3.1.4).
- A delayed offer (an INVITE without SDP, s13.2.1): the media side makes our offer (OpenMedia with
  an empty offer), the 200 carries it and the ACK the answer (AnswerMedia); an ACK without SDP, or
  an answer the media side refuses, ends the call with BYE. A body that is not SDP: 415.
- CANCEL before the 200: 200 to the CANCEL, 487 to the INVITE, the media (if opened) closed.
- BYE from the phone: 200, media closed. :meth:`CallControl.hang_up`: our BYE.
- re-INVITE / UPDATE with SDP: a new offer answered by the media side (hold with
  ``a=sendonly``/``inactive`` keeps the call: RFC 3264 s8.4). UPDATE without SDP: 200 without.
  re-INVITE without SDP: 200 with our current offer (ReofferMedia; the same ``o=`` version unless
  it changed), the answer taken from the ACK (an ACK without SDP keeps the session as it was).
- Session timers (RFC 4028): Session-Expires below our Min-SE gets 422 (s8.1); otherwise the
  2xx carries Session-Expires with the refresher the caller chose (``uac`` when it chose none),
  and Require: timer when it supports timers. With refresher=uac a call not refreshed in time is
  ended with BYE (s10); with refresher=uas we refresh at half the interval (UPDATE if the phone
  allows it, else a re-INVITE with our SDP); a refresh that times out, or has no 2xx when the
  next one is due (the session expired), or is answered 408 or 481, ends the call with BYE
  (s10: the phone vanished or forgot the call). No
  session timer was agreed: we send no refresh.
- REGISTER (s10.3): with the same credentials as a call (a token or digest, :mod:`.auth`), the
  binding is kept until it expires (at most an hour), so the phone may stay registered; ``*`` or
  ``expires=0`` removes it.
- OPTIONS: 200 with Allow/Accept/Supported. Anything else outside a dialog: 501; inside an
  unknown dialog: 481. An INVITE that requires an extension we lack gets 420 with Unsupported
  (s8.2.2.3; we know ``100rel`` and ``timer``).
- 100rel (RFC 3262), only where the caller requires it: our 180 is sent reliably (Require: 100rel,
  RSeq 1, our Contact), again every T1, 2*T1... until its PRACK (answered 200), and the 200 to the
  INVITE waits for that PRACK (s3: the order then is 180, PRACK, 200); no PRACK within 64*T1: 500
  and the call's media closed. A PRACK that matches nothing: 481.
- Floods: new requests outside a dialog from one IP address beyond :data:`FLOOD_BURST` at once
  or :data:`FLOOD_RATE` per second get 503 with Retry-After; other sources are not affected.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from trackmesh.errors import RemoteProtocolError

from .auth import Denied, Grant
from .call_actions import (
    Action,
    AnswerMedia,
    AuthorizeCall,
    Authorizer,
    AuthorizeRegister,
    CloseMedia,
    OpenMedia,
    Pending,
    ReofferMedia,
    UpdateMedia,
)
from .dialog import Dialog
from .message import Headers, NameAddr, Request, Response, SipUri, make_response, new_branch, new_tag
from .transaction import AckTimeout, Event, RequestReceived, ResponseReceived, TransactionLayer, TransactionTimeout

__all__ = [
    "ALLOW",
    "MIN_SE",
    "Action",
    "AnswerMedia",
    "AuthorizeCall",
    "AuthorizeRegister",
    "Authorizer",
    "Call",
    "CallControl",
    "CloseMedia",
    "OpenMedia",
    "Pending",
    "Registration",
    "ReofferMedia",
    "UpdateMedia",
]

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, REGISTER, INFO, PRACK"
SUPPORTED = "timer"
SUPPORTED_UAS = "timer, 100rel"  # in our answers and OPTIONS (not in our own INVITEs: we never PRACK)
KNOWN_EXTENSIONS = frozenset({"timer", "100rel"})
MIN_SE = 90  # RFC 4028 s4: the floor is 90 s
Address = tuple[str, int]


MAX_REGISTER_EXPIRES = 3600
#: New INVITE/REGISTER/OPTIONS per source IP: a bucket of FLOOD_BURST refilled at FLOOD_RATE per
#: second; past it 503 + Retry-After (RFC 3261 s21.5.4), before any credential is checked. A PBX
#: trunk sends all its calls from one address: 100 call set-ups a second is about 2 % of a core here.
FLOOD_RATE = 100.0
FLOOD_BURST = 200.0
FLOOD_SOURCES = 10000
DEFAULT_REGISTER_EXPIRES = 3600
MAX_BINDINGS = 10000


@dataclass(frozen=True, slots=True)
class Registration:
    """A softphone's REGISTER (s10): where it can be called, until when."""

    room: str
    peer: str | None
    contact: str
    source: Address
    reliable: bool
    expires_at: float
    session_id: str = ""  # stable across refreshes; what POST /sip/invite/client names (atm0s 0.1)


def caller_peer(req: Request) -> str:
    """The peer name of a caller whose grant names none: ``sip-<its From user>``."""
    try:
        user = SipUri.parse(req.from_().uri).user or "caller"
    except RemoteProtocolError:
        user = "caller"
    return "sip-" + ("".join(ch for ch in user if ch.isalnum() or ch in "-_.+")[:64] or "caller")


@dataclass(eq=False)
class Call:
    """One call (one INVITE dialog) and where it stands."""

    id: str  # Call-ID + the caller's tag: the key of the call
    invite: Request
    invite_key: tuple[str, ...]
    source: Address
    reliable: bool
    room: str
    peer: str
    to_tag: str
    state: str = "opening"  # (authorizing ->) opening -> answered -> confirmed -> ended
    session: int | None = None
    dialog: Dialog | None = None
    sdp: bytes = b""  # our current answer
    pending: tuple[Request, tuple[str, ...]] | None = None  # a re-offer waiting for the media side
    # Our 2xx carried the offer (RFC 3261 s13.2.1): ("invite" for a delayed offer or "reinvite", the
    # INVITE's CSeq); its ACK must bring the answer.
    awaiting_answer: tuple[str, int] | None = None
    expires: int | None = None  # RFC 4028 session interval, when agreed
    refresher: str = "uac"
    deadline: float | None = None  # session timer: refresh (us) or give up (them)
    refresh: tuple[str, ...] | None = None  # our refresh's client transaction, until its 2xx
    peer_allows_update: bool = False
    cancelled: bool = False
    outgoing: bool = False  # a dial-out (uac.py): we sent the INVITE
    byes: list[str] = field(default_factory=list)
    # RFC 3262: our reliable 180 until its PRACK; the 200 (ready once the media opened) waits for it.
    rel_180: Response | None = None
    rel_at: float | None = None  # the next retransmission (or, over TCP, the give-up)
    rel_interval: float = 0.0
    rel_give_up: float = 0.0
    held_ok: Response | None = None
    record: bool = False  # its grant says record: true (docs/recording.md)
    app: str = ""  # its grant's app (multi-tenancy)


def _split_header(value: str | None) -> tuple[str, dict[str, str]]:
    if value is None:
        return "", {}
    first, *params = (p.strip() for p in value.split(";"))
    out: dict[str, str] = {}
    for p in params:
        name, _, val = p.partition("=")
        out[name.strip().lower()] = val.strip()
    return first, out


def aor_user(req: Request) -> str:
    """The user part of the To (the address of record a REGISTER binds, s10.2)."""
    uri = req.to().uri
    return uri.split(":", 1)[-1].split("@", 1)[0] if "@" in uri else uri


def register_expires(req: Request) -> tuple[str | None, int]:
    """A REGISTER's first Contact and its expiry (s10.2.1.1: the contact's expires param, else the
    Expires header, else our default; at most MAX_REGISTER_EXPIRES)."""
    contacts = req.headers.get_all("Contact")
    if not contacts:
        return None, DEFAULT_REGISTER_EXPIRES
    contact = contacts[0]
    params = contact.rsplit(">", 1)[-1] if ">" in contact else ""
    expires_param = next((p.split("=", 1)[1] for p in params.split(";") if p.strip().startswith("expires=")), None)
    raw = expires_param or req.headers.get("Expires") or str(DEFAULT_REGISTER_EXPIRES)
    expires = min(int(raw), MAX_REGISTER_EXPIRES) if raw.strip().isdigit() else DEFAULT_REGISTER_EXPIRES
    return contact, 0 if contact.strip() == "*" else expires


def _is_sdp(msg: Request) -> bool:
    return (msg.headers.get("Content-Type") or "").split(";")[0].strip().lower() == "application/sdp"


def _tokens(headers: Headers, name: str) -> set[str]:
    return {t.strip().lower() for v in headers.get_all(name) for t in v.split(",") if t.strip()}


class CallControl:
    """Every call of one SIP listener (its UDP port and TCP connections)."""

    def __init__(
        self, layer: TransactionLayer, authorize: Authorizer, *, host: str, port: int, min_se: int = MIN_SE
    ) -> None:
        self.layer = layer
        self.authorize = authorize
        self.host = host
        self.port = port
        self.min_se = min_se
        self.calls: dict[str, Call] = {}
        self.registrations: dict[str, Registration] = {}
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source IP -> (tokens, at)
        #: Sees every transaction event first (the dialler, uac.py); True: it was its own.
        self.event_hook: Callable[[float, Event], bool] | None = None
        self._actions: deque[Action] = deque()
        self.counters: dict[str, int] = {
            "invites": 0,
            "refused": 0,
            "answered": 0,
            "cancelled": 0,
            "ended_by_phone": 0,
            "ended_by_us": 0,
            "reoffers": 0,
            "session_timer_expired": 0,
            "unknown_dialog": 0,
            "not_implemented": 0,
            "registered": 0,
            "flood_refused": 0,
            "pracks": 0,
            "prack_timeouts": 0,
            "delayed_offers": 0,
            "ack_without_answer": 0,
        }

    # ---- driver surface ------------------------------------------------------------------------

    def poll_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def push_action(self, action: Action) -> None:
        self._actions.append(action)

    @property
    def hostport(self) -> str:
        return self._hostport()

    def via(self, reliable: bool) -> str:
        """A Via value for a new request of ours (fresh branch, rport)."""
        return f"SIP/2.0/{'TCP' if reliable else 'UDP'} {self._hostport()};branch={new_branch()};rport"

    def next_deadline(self) -> float | None:
        times = [t for c in self.calls.values() for t in (c.deadline, c.rel_at) if t is not None]
        return min(times, default=None)

    def handle_event(self, now: float, event: Event, *, reliable: bool = False) -> None:
        """One event of the transaction layer; ``reliable``: the request came over TCP."""
        if self.event_hook is not None and self.event_hook(now, event):
            return
        if isinstance(event, RequestReceived):
            try:
                self._request(now, event.request, event.source, event.key, reliable)
            except RemoteProtocolError:
                if event.key is not None:
                    self._respond(now, event.request, 400)
        elif isinstance(event, ResponseReceived):
            self._response(now, event.response, event.key)
        elif isinstance(event, AckTimeout):
            for call in list(self.calls.values()):
                if call.invite.call_id() == event.call_id and call.state == "answered":
                    self._bye(now, call, "no ACK for our 200 OK")
        elif isinstance(event, TransactionTimeout):
            # A BYE the phone never answered: the call is over already. Our refresh unanswered
            # (Timer B/F, a 408): RFC 4028 s10 says end the session with BYE.
            for call in list(self.calls.values()):
                if call.refresh is not None and call.refresh == event.key:
                    self.counters["session_timer_expired"] += 1
                    self._bye(now, call, "session refresh unanswered (RFC 4028 s10)")

    def handle_timeout(self, now: float) -> None:
        for call in list(self.calls.values()):
            if call.rel_at is not None and now >= call.rel_at:
                self._reliable_timeout(now, call)
            if call.deadline is None or now < call.deadline:
                continue
            if call.refresher == "uas":
                self._refresh(now, call)
            else:
                self.counters["session_timer_expired"] += 1
                self._bye(now, call, "session timer expired (RFC 4028 s10)")

    def media_opened(self, now: float, call_id: str, session: int, answer: str) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        call.session = session
        if call.cancelled or call.state == "ended":
            self._actions.append(CloseMedia(call.id, call.room, session, "cancelled"))
            self.calls.pop(call.id, None)
            return
        call.sdp = answer.encode()
        ok = make_response(call.invite, 200, to_tag=call.to_tag, body=call.sdp)
        self._contact(ok)
        ok.headers.add("Content-Type", "application/sdp")
        self._session_timer_headers(now, call, call.invite, ok)
        if call.rel_180 is not None:
            call.held_ok = ok  # sent when the 180's PRACK comes (RFC 3262 s3)
            return
        self._send_ok(now, call, ok)

    def _send_ok(self, now: float, call: Call, ok: Response) -> None:
        call.held_ok = None
        self.layer.send_response(now, ok)
        call.dialog = Dialog.as_uas(call.invite, ok)
        call.state = "answered"
        self.counters["answered"] += 1

    def _reliable_timeout(self, now: float, call: Call) -> None:
        """Retransmit our reliable 180 (RFC 3262 s3: T1, doubling) or, past 64*T1, give up: 500."""
        if call.rel_180 is None:
            call.rel_at = None
            return
        if now < call.rel_give_up:
            call.rel_interval *= 2
            call.rel_at = min(now + call.rel_interval, call.rel_give_up)
            try:
                self.layer.send_response(now, call.rel_180)
            except Exception:  # the INVITE transaction is gone (a final response went out)
                call.rel_at = None
            return
        call.rel_180 = call.rel_at = call.held_ok = None
        self.counters["prack_timeouts"] += 1
        self.calls.pop(call.id, None)
        self._respond(now, call.invite, 500, "Server Internal Error (no PRACK for our 180)", to_tag=call.to_tag)
        if call.session is not None:
            self._actions.append(CloseMedia(call.id, call.room, call.session, "no PRACK"))

    def _prack(self, now: float, req: Request, call_id: str) -> None:
        """RFC 3262 s3, s7.2: a PRACK naming our reliable 180 (RAck: 1 <INVITE CSeq> INVITE)."""
        call = self.calls.get(call_id)
        rack = (req.headers.get("RAck") or "").split()
        if (
            call is None
            or call.rel_180 is None
            or req.to().tag != call.to_tag
            or rack != ["1", str(call.invite.cseq().seq), "INVITE"]
        ):
            self._respond(now, req, 481)
            return
        call.rel_180 = call.rel_at = None
        self.counters["pracks"] += 1
        self._respond(now, req, 200)
        if call.held_ok is not None:
            self._send_ok(now, call, call.held_ok)

    def media_failed(self, now: float, call_id: str, status: int, reason: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None or call.cancelled:
            return
        self.counters["refused"] += 1
        status = status if 400 <= status < 700 else 500
        self._respond(now, call.invite, status, reason or None, to_tag=call.to_tag)

    def update_answered(self, now: float, call_id: str, answer: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.pending is None:
            return
        request, _ = call.pending
        call.pending = None
        call.sdp = answer.encode()
        if request.method == "INVITE" and not request.body:
            call.awaiting_answer = ("reinvite", request.cseq().seq)  # ``answer`` is our offer (ReofferMedia)
        ok = make_response(request, 200, body=call.sdp)
        self._contact(ok)
        ok.headers.add("Content-Type", "application/sdp")
        self._session_timer_headers(now, call, request, ok)
        self.layer.send_response(now, ok)

    def answer_applied(self, call_id: str, sdp: str) -> None:
        """The media side took the far end's answer to our offer (AnswerMedia) and says what our SDP is
        from now on (the agreed codec only): what our refresh re-INVITEs carry."""
        call = self.calls.get(call_id)
        if call is not None and sdp:
            call.sdp = sdp.encode()

    def update_failed(self, now: float, call_id: str, status: int, reason: str) -> None:
        call = self.calls.get(call_id)
        if call is None or call.pending is None:
            return
        request, _ = call.pending
        call.pending = None
        # s14.2: a refused re-offer leaves the session as it was; the call goes on.
        self._respond(now, request, status if 400 <= status < 700 else 500, reason or None)

    def hang_up(self, now: float, call_id: str, reason: str) -> None:
        """End a call from our side (its media ended, an API request)."""
        call = self.calls.get(call_id)
        if call is not None:
            self._bye(now, call, reason)

    def call_for_session(self, session: int) -> Call | None:
        return next((c for c in self.calls.values() if c.session == session), None)

    # ---- requests ------------------------------------------------------------------------------

    def _request(self, now: float, req: Request, source: Address, key: tuple[str, ...] | None, reliable: bool) -> None:
        method = req.method
        to_tag = req.to().tag
        call_id = f"{req.call_id()};{req.from_().tag or ''}"
        if method == "ACK":
            call = self.calls.get(call_id)
            if call is not None and call.dialog is not None and call.state == "answered":
                call.state = "confirmed"
                call.dialog.confirmed = True
            if call is not None and call.awaiting_answer is not None and call.state == "confirmed":
                self._ack_answer(now, call, req)
            return
        assert key is not None
        if method == "CANCEL":
            self._cancel(now, req, call_id)
            return
        if (
            not to_tag
            and method in ("INVITE", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE")
            and self._flooding(now, source[0])
        ):
            self.counters["flood_refused"] += 1
            resp = make_response(req, 503, "Service Unavailable (too many requests)", to_tag=new_tag())
            resp.headers.add("Retry-After", "1")
            self.layer.send_response(now, resp)
            return
        if method == "PRACK":
            self._prack(now, req, call_id)
            return
        if to_tag:
            call = self.calls.get(call_id)
            if call is None or call.dialog is None or call.to_tag != to_tag:
                self.counters["unknown_dialog"] += 1
                self._respond(now, req, 481)
                return
            self._in_dialog(now, call, req, key)
            return
        if method == "INVITE":
            self._invite(now, req, source, key, call_id, reliable)
        elif method == "OPTIONS":
            ok = make_response(req, 200, to_tag=new_tag())
            ok.headers.add("Allow", ALLOW)
            ok.headers.add("Accept", "application/sdp")
            ok.headers.add("Supported", SUPPORTED_UAS)
            self.layer.send_response(now, ok)
        elif method == "REGISTER":
            self._register(now, req, source, reliable)
        else:
            self.counters["not_implemented"] += 1
            resp = make_response(req, 481 if method == "BYE" else 501, to_tag=new_tag())
            resp.headers.add("Allow", ALLOW)
            self.layer.send_response(now, resp)

    def _ack_answer(self, now: float, call: Call, ack: Request) -> None:
        """The ACK of a 2xx that carried our offer: it carries the answer (RFC 3261 s13.2.1). None in
        the ACK of a delayed-offer INVITE: the call cannot start, BYE (s13.2.1, the UAS terminates).
        None after an offerless re-INVITE: the session stays as it was (counted; many PBXs refresh so)."""
        assert call.awaiting_answer is not None
        kind, seq = call.awaiting_answer
        if ack.cseq().seq != seq:
            return  # a late copy of an earlier ACK
        call.awaiting_answer = None
        if ack.body and _is_sdp(ack) and call.session is not None:
            self._actions.append(AnswerMedia(call.id, call.room, call.session, ack.body.decode("utf-8", "replace")))
            return
        self.counters["ack_without_answer"] += 1
        if kind == "invite":
            self._bye(now, call, "no SDP answer in the ACK (RFC 3261 s13.2.1)")

    def _flooding(self, now: float, ip: str) -> bool:
        tokens, at = self._buckets.pop(ip, (FLOOD_BURST, now))
        tokens = min(FLOOD_BURST, tokens + (now - at) * FLOOD_RATE)
        flooding = tokens < 1.0
        self._buckets[ip] = (tokens if flooding else tokens - 1.0, now)
        if len(self._buckets) > FLOOD_SOURCES:
            self._buckets.popitem(last=False)
        return flooding

    def _invite(
        self, now: float, req: Request, source: Address, key: tuple[str, ...], call_id: str, reliable: bool
    ) -> None:
        self.counters["invites"] += 1
        if call_id in self.calls:
            self._respond(now, req, 482)  # s8.2.2.2: a second INVITE of a call in set-up
            return
        if req.headers.get("Contact") is None:
            self._respond(now, req, 400, "Missing Contact")
            return
        unsupported = _tokens(req.headers, "Require") - KNOWN_EXTENSIONS
        if unsupported:
            resp = make_response(req, 420, to_tag=new_tag())
            resp.headers.add("Unsupported", ", ".join(sorted(unsupported)))
            self.counters["refused"] += 1
            self.layer.send_response(now, resp)
            return
        expires, _ = _split_header(req.headers.get("Session-Expires"))
        if expires.isdigit() and int(expires) < self.min_se:
            resp = make_response(req, 422, to_tag=new_tag())
            resp.headers.add("Min-SE", str(self.min_se))
            self.counters["refused"] += 1
            self.layer.send_response(now, resp)
            return
        if req.body and not _is_sdp(req):
            # s21.4.13: a body we cannot read (no offer we know of); say what we accept.
            resp = make_response(req, 415, to_tag=new_tag())
            resp.headers.add("Accept", "application/sdp")
            self.counters["refused"] += 1
            self.layer.send_response(now, resp)
            return
        # No body: a delayed offer (s13.2.1): our 200 carries the offer, the ACK the answer.
        verdict = self.authorize(now, req)
        call = Call(call_id, req, key, source, reliable, "", "", new_tag(), state="authorizing")
        call.peer_allows_update = "update" in _tokens(req.headers, "Allow")
        self.calls[call_id] = call
        if isinstance(verdict, Pending):
            self._actions.append(AuthorizeCall(call_id, req, source))
            return
        self.authorized(now, call_id, verdict)

    def authorized(self, now: float, call_id: str, verdict: Grant | Denied) -> None:
        """The decision on an INVITE (at once, or from the driver's hooks after AuthorizeCall)."""
        call = self.calls.get(call_id)
        if call is None or call.state != "authorizing":
            return
        if call.cancelled:
            self.calls.pop(call_id, None)
            return
        req = call.invite
        if isinstance(verdict, Denied):
            self.calls.pop(call_id, None)
            self._deny(now, req, verdict)
            self.counters["refused"] += 1
            return
        call.room, call.peer, call.record = verdict.room, verdict.peer or caller_peer(req), verdict.record
        call.app = verdict.app
        call.state = "opening"
        ringing = make_response(req, 180, to_tag=call.to_tag)
        if "100rel" in _tokens(req.headers, "Require"):
            ringing.headers.add("Require", "100rel")
            ringing.headers.add("RSeq", "1")
            self._contact(ringing)  # the early dialog's target: where the PRACK goes (s12.1.1)
            t1 = self.layer.timers.t1
            call.rel_180, call.rel_interval, call.rel_give_up = ringing, t1, now + 64 * t1
            call.rel_at = now + (64 * t1 if call.reliable else t1)  # over TCP: no retransmission
        self.layer.send_response(now, ringing)
        body = req.body.decode("utf-8", "replace")
        if not body:
            call.awaiting_answer = ("invite", req.cseq().seq)
            self.counters["delayed_offers"] += 1
        self._actions.append(
            OpenMedia(call_id, call.room, call.peer, body, wait_for_peers=verdict.wait_for_peers, record=call.record,
                      app=call.app)
        )

    def _deny(self, now: float, req: Request, denied: Denied) -> None:
        resp = make_response(req, denied.status, denied.reason or None, to_tag=new_tag())
        for name, value in denied.headers:
            resp.headers.add(name, value)
        self.layer.send_response(now, resp)

    def _register(self, now: float, req: Request, source: Address, reliable: bool) -> None:
        """s10.3: a registrar for our own grants (or the hooks'): the binding of the To AOR to the Contact."""
        verdict = self.authorize(now, req)
        if isinstance(verdict, Pending):
            self._actions.append(AuthorizeRegister(req, source, reliable))  # the hooks decide
            return
        self.register_decided(now, req, source, reliable, verdict)

    def registration_by_session(self, session_id: str) -> Registration | None:
        return next((r for r in self.registrations.values() if r.session_id == session_id), None)

    def register_decided(
        self, now: float, req: Request, source: Address, reliable: bool, verdict: Grant | Denied, session_id: str = ""
    ) -> None:
        """The decision on a REGISTER (at once, or from the hooks after :class:`AuthorizeRegister`)."""
        if isinstance(verdict, Denied):
            self._deny(now, req, verdict)
            return
        key = verdict.username or f"{verdict.room}/{verdict.peer or ''}"
        contact, expires = register_expires(req)
        ok = make_response(req, 200, to_tag=new_tag())
        if contact is not None:
            if contact.strip() == "*" or expires == 0:
                self.registrations.pop(key, None)
            elif len(self.registrations) < MAX_BINDINGS or key in self.registrations:
                uri = NameAddr.parse(contact).uri
                old = self.registrations.get(key)
                session_id = session_id or (old.session_id if old is not None else new_tag())
                self.registrations[key] = Registration(
                    verdict.room, verdict.peer, uri, source, reliable, now + expires, session_id
                )
                self.counters["registered"] += 1
                ok.headers.add("Contact", f"<{uri}>;expires={expires}")
        # Expired bindings go when a REGISTER comes (no timer of their own).
        for name in [k for k, r in self.registrations.items() if r.expires_at <= now]:
            del self.registrations[name]
        self.layer.send_response(now, ok)

    def _cancel(self, now: float, req: Request, call_id: str) -> None:
        # s9.2: 200 to the CANCEL (or 481 with nothing to cancel), then 487 to the INVITE.
        target = self.layer.invite_for_cancel(req)
        call = self.calls.get(call_id)
        if target is None or call is None or call.state not in ("opening", "authorizing"):
            self._respond(now, req, 481 if target is None else 200)
            return
        self._respond(now, req, 200)
        self._respond(now, call.invite, 487, to_tag=call.to_tag)
        call.cancelled = True
        call.rel_180 = call.rel_at = call.held_ok = None
        self.counters["cancelled"] += 1
        if call.state == "authorizing":
            return  # authorized() drops it
        if call.session is not None:
            self._actions.append(CloseMedia(call.id, call.room, call.session, "cancelled"))
            self.calls.pop(call.id, None)
        # else: the media side's answer is on its way; media_opened closes it.

    def _in_dialog(self, now: float, call: Call, req: Request, key: tuple[str, ...]) -> None:
        assert call.dialog is not None
        status = call.dialog.handle_request(req)
        if status is not None:
            self._respond(now, req, status)
            return
        method = req.method
        if method == "BYE":
            self._respond(now, req, 200)
            self.counters["ended_by_phone"] += 1
            self._end(call, "the phone hung up")
        elif method in ("INVITE", "UPDATE"):
            if "update" in _tokens(req.headers, "Allow"):
                call.peer_allows_update = True
            if call.pending is not None:
                # s14.2: an offer while ours is pending gets 491 (UAS side, re-INVITE glare); RFC 3311
                # s5.2 answers 500 with Retry-After to an UPDATE while a re-INVITE is pending.
                resp = make_response(req, 491 if method == "INVITE" else 500)
                if method == "UPDATE":
                    resp.headers.add("Retry-After", "1")
                self.layer.send_response(now, resp)
                return
            if req.body and call.session is not None:
                self.counters["reoffers"] += 1
                call.pending = (req, key)
                self._actions.append(UpdateMedia(call.id, call.room, call.session, req.body.decode("utf-8", "replace")))
                return
            if method == "INVITE" and call.session is not None:
                # A re-INVITE without SDP wants our offer (s14.2): the media side makes it, the 200
                # carries it (update_answered) and the ACK brings the answer.
                call.pending = (req, key)
                self._actions.append(ReofferMedia(call.id, call.room, call.session))
                return
            # An UPDATE without SDP: a session refresh (RFC 4028 s7), answered without SDP.
            ok = make_response(req, 200)
            self._contact(ok)
            self._session_timer_headers(now, call, req, ok)
            self.layer.send_response(now, ok)
        elif method == "OPTIONS":
            ok = make_response(req, 200)
            ok.headers.add("Allow", ALLOW)
            self.layer.send_response(now, ok)
        elif method == "INFO":
            self._respond(now, req, 200)  # SIP INFO DTMF is not read; RFC 4733 events are
        else:
            resp = make_response(req, 501)
            resp.headers.add("Allow", ALLOW)
            self.layer.send_response(now, resp)

    # ---- responses to our requests -------------------------------------------------------------

    def _response(self, now: float, resp: Response, key: tuple[str, ...] | None) -> None:
        call_id = f"{resp.call_id()};{resp.to().tag or ''}"
        call = self.calls.get(call_id)
        if call is None or call.dialog is None:
            return
        method = resp.cseq().method
        if method in ("INVITE", "UPDATE") and 200 <= resp.status < 300:
            call.refresh = None  # the session is refreshed (RFC 4028 s7.3)
        if method == "INVITE" and 200 <= resp.status < 300:
            # Our refresh re-INVITE was answered: ACK it (s13.2.2.4), without a transaction.
            ack = call.dialog.create_request("ACK", self._via(call), cseq=resp.cseq().seq)
            self.layer.send_stateless(ack, call.source, reliable=call.reliable)
        if resp.status in (408, 481) and key is not None and key == call.refresh:
            # RFC 4028 s10: a refresh answered 408 or 481 ends the session with BYE.
            self.counters["session_timer_expired"] += 1
            self._bye(now, call, f"session refresh answered {resp.status} (RFC 4028 s10)")
        elif method in ("INVITE", "UPDATE", "BYE") and resp.status in (408, 481):
            self._end(call, "the phone no longer knows the call")

    # ---- helpers -------------------------------------------------------------------------------

    def _respond(
        self, now: float, req: Request, status: int, reason: str | None = None, *, to_tag: str | None = None
    ) -> None:
        if req.to().tag is None and to_tag is None and status != 100:
            to_tag = new_tag()
        try:
            self.layer.send_response(now, make_response(req, status, reason, to_tag=to_tag))
        except Exception:  # the transaction is gone already (a late answer): nothing to send
            return

    def _contact(self, resp: Response) -> None:
        resp.headers.add("Contact", f"<sip:trackmesh@{self._hostport()}>")
        resp.headers.add("Allow", ALLOW)
        resp.headers.add("Supported", SUPPORTED_UAS)

    def _hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _via(self, call: Call) -> str:
        return self.via(call.reliable)

    def _session_timer_headers(self, now: float, call: Call, req: Request, resp: Response) -> None:
        """RFC 4028 s9: agree on the caller's interval and refresher; arm our timer."""
        value, params = _split_header(req.headers.get("Session-Expires"))
        if not value.isdigit():
            if call.expires is None:
                return
            interval = call.expires  # a refresh without the header keeps the interval (s7.4)
        else:
            interval = max(int(value), self.min_se)
            refresher = params.get("refresher", "").lower()
            call.refresher = refresher if refresher in ("uac", "uas") else "uac"
        call.expires = interval
        resp.headers.add("Session-Expires", f"{interval};refresher={call.refresher}")
        if "timer" in _tokens(req.headers, "Supported") and call.refresher == "uac":
            resp.headers.add("Require", "timer")
        if call.refresher == "uas":
            call.deadline = now + interval / 2
        else:
            # s10: the refresher has until the interval minus min(32, interval/3) to refresh.
            call.deadline = now + interval - min(32.0, interval / 3)

    def _refresh(self, now: float, call: Call) -> None:
        """We are the refresher: UPDATE without SDP if the phone allows it, else a re-INVITE.

        The previous refresh still without a 2xx (no answer at all, or only a provisional one)
        means the session expired unrefreshed: RFC 4028 s10, BYE (a phone that vanished)."""
        assert call.dialog is not None and call.expires is not None
        if call.refresh is not None:
            self.counters["session_timer_expired"] += 1
            self._bye(now, call, "session refresh unanswered (RFC 4028 s10)")
            return
        headers = Headers()
        headers.add("Contact", f"<sip:trackmesh@{self._hostport()}>")
        headers.add("Session-Expires", f"{call.expires};refresher=uas")
        headers.add("Supported", SUPPORTED)
        if call.peer_allows_update:
            req = call.dialog.create_request("UPDATE", self._via(call), headers=headers)
        else:
            headers.add("Content-Type", "application/sdp")
            req = call.dialog.create_request("INVITE", self._via(call), headers=headers, body=call.sdp)
        call.refresh = self.layer.send_request(now, req, call.source, reliable=call.reliable)
        call.deadline = now + call.expires / 2

    def _bye(self, now: float, call: Call, reason: str) -> None:
        if call.state in ("answered", "confirmed") and call.dialog is not None:
            headers = Headers()
            headers.add("Reason", f'SIP;cause=200;text="{reason}"')
            bye = call.dialog.create_request("BYE", self._via(call), headers=headers)
            self.layer.send_request(now, bye, call.source, reliable=call.reliable)
            call.byes.append(reason)
            self.counters["ended_by_us"] += 1
        elif call.state in ("opening", "authorizing"):
            self._respond(now, call.invite, 480, to_tag=call.to_tag)
        self._end(call, reason)

    def _end(self, call: Call, reason: str) -> None:
        was = call.state
        call.state = "ended"
        call.deadline = None
        if call.session is not None:
            self._actions.append(CloseMedia(call.id, call.room, call.session, reason))
            self.calls.pop(call.id, None)
        elif was != "opening":
            # Authorizing: no media yet, and the hook's answer will find nothing. Answered or
            # confirmed without a session: the media side dropped it already (a refused answer).
            self.calls.pop(call.id, None)
        # A call still opening stays until media_opened/media_failed, which then closes it.
