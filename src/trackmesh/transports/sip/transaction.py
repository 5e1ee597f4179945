"""RFC 3261 s17 transactions: the four state machines as one table, timers as deadlines.

The four machines (INVITE/non-INVITE, client/server; figures 5-8 of RFC 3261, with the
Accepted state of RFC 6026 s7.1 for the INVITE server) are rows of :data:`TRANSITIONS`:
``(kind, state, input) -> (next state, actions, timers kept)``. An input with no row in a
state is absorbed (a late 1xx, a retransmission the machine has no use for); a TU call with no
row is our bug and raises :class:`~trackmesh.errors.LocalProtocolError`.

:class:`TransactionLayer` is the sans-IO driver surface, in the shape of every core here:
``handle_datagram(now, data, source)``, ``send_request`` / ``send_response``,
``handle_timeout(now)``, ``next_deadline()``, and drained outputs ``poll_transmit()`` and
``poll_event()``. It also does the UAS core's s13.3.1.4 duty: a 2xx to INVITE is retransmitted
over unreliable transports (T1 doubling to T2) until the ACK arrives, and reported after 64*T1
without one, so the TU can send BYE.

Matching follows s17.1.3 (client: top Via branch and CSeq method) and s17.2.3 (server: branch,
sent-by and method, with ACK matching its INVITE; CANCEL is its own transaction and
:meth:`TransactionLayer.invite_for_cancel` finds the INVITE it targets). Requests from RFC 2543
peers without the ``z9hG4bK`` cookie are matched on Call-ID, From tag, CSeq number and top Via.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.net import Address
from trackmesh.transports.sip.message import (
    BRANCH_COOKIE,
    REASONS,
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    make_response,
    new_tag,
    response_address,
    stamp_received,
)
from trackmesh.transports.sip.parser import DEFAULT_LIMITS, Limits, parse_message, serialize

__all__ = [
    "AckTimeout",
    "Kind",
    "ParseFailed",
    "RequestReceived",
    "ResponseReceived",
    "State",
    "Timer",
    "TimerValues",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transmit",
]


class Kind(enum.Enum):
    INVITE_CLIENT = "ict"
    NON_INVITE_CLIENT = "nict"
    INVITE_SERVER = "ist"
    NON_INVITE_SERVER = "nist"


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026 s7.1
    TERMINATED = "Terminated"


class Timer(enum.Enum):
    A = "A"  # INVITE request retransmit (unreliable only), doubling
    B = "B"  # INVITE transaction timeout, 64*T1
    D = "D"  # wait for response retransmits, >= 32 s unreliable, 0 reliable
    E = "E"  # non-INVITE request retransmit, doubling to T2
    F = "F"  # non-INVITE transaction timeout, 64*T1
    G = "G"  # INVITE final response retransmit, doubling to T2
    H = "H"  # wait for ACK, 64*T1
    I = "I"  # wait for ACK retransmits, T4 unreliable, 0 reliable  # noqa: E741
    J = "J"  # wait for non-INVITE request retransmits, 64*T1 unreliable, 0 reliable
    K = "K"  # wait for response retransmits, T4 unreliable, 0 reliable
    L = "L"  # RFC 6026: wait for INVITE retransmits and ACKs after a 2xx, 64*T1
    # Not an RFC 3261 transaction timer: the limit on how long a server transaction waits for
    # the TU's final answer (a hook that hangs must not leak transactions). INVITE: 180 s,
    # the spirit of the proxy's Timer C (s16.6 step 11), restarted by every 1xx; non-INVITE:
    # 64*T1, when the client's Timer F has given up anyway (s17.1.2.2).
    GUARD = "GUARD"


class Input(enum.Enum):
    RECV_1XX = "recv 1xx"
    RECV_2XX = "recv 2xx"
    RECV_FINAL = "recv 300-699"
    RECV_REQUEST = "recv request retransmission"
    RECV_ACK = "recv ACK"
    SEND_1XX = "TU sends 1xx"
    SEND_2XX = "TU sends 2xx"
    SEND_FINAL = "TU sends 300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_A = Timer.A.value
    TIMER_B = Timer.B.value
    TIMER_D = Timer.D.value
    TIMER_E = Timer.E.value
    TIMER_F = Timer.F.value
    TIMER_G = Timer.G.value
    TIMER_H = Timer.H.value
    TIMER_I = Timer.I.value
    TIMER_J = Timer.J.value
    TIMER_K = Timer.K.value
    TIMER_L = Timer.L.value
    TIMER_GUARD = Timer.GUARD.value


TIMER_INPUT = {t: Input["TIMER_" + t.value] for t in Timer}


class Action(enum.Enum):
    PASS = "pass the message to the TU"
    SEND_ACK = "send (or resend) the ACK for a non-2xx final"
    RESEND_REQUEST = "retransmit the request"
    SEND_RESPONSE = "send the TU's response and remember it"
    RESEND_RESPONSE = "retransmit the last response"
    TIMEOUT = "tell the TU the transaction timed out"
    GUARD_REJECT = "answer 500 for a TU that never answered, and tell it"
    TRANSPORT_FAILED = "tell the TU the transport failed"


Step = Action | Timer
_K = Kind
_S = State
_I = Input
_A = Action
_T = Timer
_NONE: frozenset[Timer] = frozenset()

#: (kind, state, input) -> (next state, steps in order, timers kept across a state change).
#: Staying in a state keeps every timer; a change cancels all but the kept ones.
TRANSITIONS: dict[tuple[Kind, State, Input], tuple[State, tuple[Step, ...], frozenset[Timer]]] = {}


def _row(kind: Kind, states: tuple[State, ...], inputs: tuple[Input, ...], to: State | None, *steps: Step) -> None:
    for s in states:
        for i in inputs:
            TRANSITIONS[(kind, s, i)] = (to or s, steps, _NONE)


# INVITE client, s17.1.1 (figure 5).
_row(_K.INVITE_CLIENT, (_S.CALLING,), (_I.TIMER_A,), None, _A.RESEND_REQUEST, _T.A)
_row(_K.INVITE_CLIENT, (_S.CALLING,), (_I.TIMER_B,), _S.TERMINATED, _A.TIMEOUT)
_row(_K.INVITE_CLIENT, (_S.CALLING, _S.PROCEEDING), (_I.RECV_1XX,), _S.PROCEEDING, _A.PASS)
_row(_K.INVITE_CLIENT, (_S.CALLING, _S.PROCEEDING), (_I.RECV_2XX,), _S.TERMINATED, _A.PASS)
_row(_K.INVITE_CLIENT, (_S.CALLING, _S.PROCEEDING), (_I.RECV_FINAL,), _S.COMPLETED, _A.SEND_ACK, _A.PASS, _T.D)
_row(_K.INVITE_CLIENT, (_S.COMPLETED,), (_I.RECV_FINAL,), None, _A.SEND_ACK)
_row(_K.INVITE_CLIENT, (_S.COMPLETED,), (_I.TIMER_D,), _S.TERMINATED)
_row(
    _K.INVITE_CLIENT,
    (_S.CALLING, _S.PROCEEDING, _S.COMPLETED),
    (_I.TRANSPORT_ERROR,),
    _S.TERMINATED,
    _A.TRANSPORT_FAILED,
)

# Non-INVITE client, s17.1.2 (figure 6). Timers E and F survive Trying -> Proceeding.
_row(_K.NON_INVITE_CLIENT, (_S.TRYING, _S.PROCEEDING), (_I.TIMER_E,), None, _A.RESEND_REQUEST, _T.E)
_row(_K.NON_INVITE_CLIENT, (_S.TRYING, _S.PROCEEDING), (_I.TIMER_F,), _S.TERMINATED, _A.TIMEOUT)
_row(_K.NON_INVITE_CLIENT, (_S.PROCEEDING,), (_I.RECV_1XX,), None, _A.PASS)
TRANSITIONS[(_K.NON_INVITE_CLIENT, _S.TRYING, _I.RECV_1XX)] = (_S.PROCEEDING, (_A.PASS,), frozenset({_T.E, _T.F}))
_row(
    _K.NON_INVITE_CLIENT,
    (_S.TRYING, _S.PROCEEDING),
    (_I.RECV_2XX, _I.RECV_FINAL),
    _S.COMPLETED,
    _A.PASS,
    _T.K,
)
_row(_K.NON_INVITE_CLIENT, (_S.COMPLETED,), (_I.TIMER_K,), _S.TERMINATED)
_row(
    _K.NON_INVITE_CLIENT,
    (_S.TRYING, _S.PROCEEDING, _S.COMPLETED),
    (_I.TRANSPORT_ERROR,),
    _S.TERMINATED,
    _A.TRANSPORT_FAILED,
)

# INVITE server, s17.2.1 (figure 7) with RFC 6026's Accepted state.
_row(_K.INVITE_SERVER, (_S.PROCEEDING,), (_I.RECV_REQUEST,), None, _A.RESEND_RESPONSE)
_row(_K.INVITE_SERVER, (_S.PROCEEDING,), (_I.SEND_1XX,), None, _A.SEND_RESPONSE, _T.GUARD)
_row(_K.INVITE_SERVER, (_S.PROCEEDING,), (_I.TIMER_GUARD,), _S.COMPLETED, _A.GUARD_REJECT, _T.G, _T.H)
_row(_K.INVITE_SERVER, (_S.PROCEEDING,), (_I.SEND_2XX,), _S.ACCEPTED, _A.SEND_RESPONSE, _T.L)
_row(_K.INVITE_SERVER, (_S.PROCEEDING,), (_I.SEND_FINAL,), _S.COMPLETED, _A.SEND_RESPONSE, _T.G, _T.H)
_row(_K.INVITE_SERVER, (_S.COMPLETED,), (_I.RECV_REQUEST,), None, _A.RESEND_RESPONSE)
_row(_K.INVITE_SERVER, (_S.COMPLETED,), (_I.TIMER_G,), None, _A.RESEND_RESPONSE, _T.G)
_row(_K.INVITE_SERVER, (_S.COMPLETED,), (_I.TIMER_H,), _S.TERMINATED, _A.TIMEOUT)
_row(_K.INVITE_SERVER, (_S.COMPLETED,), (_I.RECV_ACK,), _S.CONFIRMED, _T.I)
_row(_K.INVITE_SERVER, (_S.CONFIRMED,), (_I.TIMER_I,), _S.TERMINATED)
_row(_K.INVITE_SERVER, (_S.ACCEPTED,), (_I.RECV_ACK,), None, _A.PASS)
_row(_K.INVITE_SERVER, (_S.ACCEPTED,), (_I.SEND_2XX,), None, _A.SEND_RESPONSE)
_row(_K.INVITE_SERVER, (_S.ACCEPTED,), (_I.TIMER_L,), _S.TERMINATED)
_row(
    _K.INVITE_SERVER,
    (_S.PROCEEDING, _S.COMPLETED, _S.ACCEPTED),
    (_I.TRANSPORT_ERROR,),
    _S.TERMINATED,
    _A.TRANSPORT_FAILED,
)

# Non-INVITE server, s17.2.2 (figure 8).
TRANSITIONS[(_K.NON_INVITE_SERVER, _S.TRYING, _I.SEND_1XX)] = (
    _S.PROCEEDING,
    (_A.SEND_RESPONSE,),
    frozenset({_T.GUARD}),
)
_row(_K.NON_INVITE_SERVER, (_S.TRYING, _S.PROCEEDING), (_I.TIMER_GUARD,), _S.COMPLETED, _A.GUARD_REJECT, _T.J)
_row(_K.NON_INVITE_SERVER, (_S.PROCEEDING,), (_I.SEND_1XX,), None, _A.SEND_RESPONSE)
_row(_K.NON_INVITE_SERVER, (_S.PROCEEDING, _S.COMPLETED), (_I.RECV_REQUEST,), None, _A.RESEND_RESPONSE)
_row(
    _K.NON_INVITE_SERVER,
    (_S.TRYING, _S.PROCEEDING),
    (_I.SEND_2XX, _I.SEND_FINAL),
    _S.COMPLETED,
    _A.SEND_RESPONSE,
    _T.J,
)
_row(_K.NON_INVITE_SERVER, (_S.COMPLETED,), (_I.TIMER_J,), _S.TERMINATED)
_row(
    _K.NON_INVITE_SERVER,
    (_S.TRYING, _S.PROCEEDING, _S.COMPLETED),
    (_I.TRANSPORT_ERROR,),
    _S.TERMINATED,
    _A.TRANSPORT_FAILED,
)


@dataclass(frozen=True, slots=True)
class TimerValues:
    """s17.1.1.1 / table 4: T1 RTT estimate, T2 max non-INVITE retransmit interval, T4 max
    message lifetime (seconds)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    invite_guard: float = 180.0  # Timer.GUARD for INVITE server transactions

    def initial(self, timer: Timer, reliable: bool) -> float | None:
        """The first interval of ``timer``; None where the timer does not run (reliable retransmits)."""
        t1, t4 = self.t1, self.t4
        if timer in (Timer.A, Timer.E, Timer.G):
            return None if reliable else t1
        if timer in (Timer.B, Timer.F, Timer.H, Timer.L):
            return 64 * t1
        if timer is Timer.GUARD:
            return None  # set per kind by the layer (see TransactionLayer._start)
        if timer is Timer.D:
            return 0.0 if reliable else max(32.0, 64 * t1)
        if timer in (Timer.I, Timer.K):
            return 0.0 if reliable else t4
        return 0.0 if reliable else 64 * t1  # J

    def backoff(self, timer: Timer, state: State, previous: float) -> float:
        """The next retransmit interval: A doubles; E and G double up to T2; E is T2 in Proceeding."""
        if timer is Timer.A:
            return 2 * previous
        if timer is Timer.E and state is State.PROCEEDING:
            return self.t2
        return min(2 * previous, self.t2)


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    destination: Address
    data: bytes
    reliable: bool = False


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (``key`` names its server transaction), or an ACK to a 2xx (``key`` None)."""

    request: Request
    source: Address
    key: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction; ``key`` None for a 2xx retransmission after the
    INVITE transaction ended (s13.2.2.4: the TU re-sends its ACK)."""

    response: Response
    source: Address
    key: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F or H fired (a client gets no response: treat as 408, s8.1.3.1), or a server
    transaction's GUARD did (the TU never answered; the layer sent 500)."""

    key: tuple[str, ...]
    kind: Kind


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    key: tuple[str, ...]
    kind: Kind
    transport_error: bool = False


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """s13.3.1.4: no ACK for our 2xx within 64*T1; the TU should end the session with BYE."""

    call_id: str
    cseq: int


@dataclass(frozen=True, slots=True)
class ParseFailed:
    """Bytes from ``source`` that are not a valid message (counted and dropped by the layer)."""

    source: Address
    reason: str
    status: int


Event = RequestReceived | ResponseReceived | TransactionTimeout | TransactionTerminated | AckTimeout | ParseFailed


@dataclass(slots=True)
class Transaction:
    key: tuple[str, ...]
    kind: Kind
    state: State
    request: Request
    peer: Address  # where requests go (client) or responses go (server)
    reliable: bool
    request_bytes: bytes = b""
    response: Response | None = None
    response_bytes: bytes = b""
    ack_bytes: bytes = b""
    deadlines: dict[Timer, float] = field(default_factory=dict)
    intervals: dict[Timer, float] = field(default_factory=dict)
    merge_id: tuple[str, str, int, str] | None = None


@dataclass(slots=True)
class _TwoXx:
    """A 2xx to INVITE awaiting its ACK (s13.3.1.4)."""

    data: bytes
    destination: Address
    interval: float
    next_send: float
    give_up: float


def _method_key(method: str) -> str:
    return "INVITE" if method == "ACK" else method


def server_key(request: Request | Response) -> tuple[str, ...]:
    """s17.2.3: branch + sent-by + method (ACK -> INVITE); RFC 2543 fallback without the cookie.

    For a response, the key of the request it answers (method from CSeq)."""
    via = request.top_via()
    branch = via.branch or ""
    host, port = via.sent_by
    method = _method_key(request.method if isinstance(request, Request) else request.cseq().method)
    if branch.startswith(BRANCH_COOKIE):
        return ("3261", branch, host.lower(), str(port), method)
    return ("2543", request.call_id(), request.from_().tag or "", str(request.cseq().seq), str(via), method)


def client_key(branch: str, method: str) -> tuple[str, ...]:
    """s17.1.3: the top Via branch we generated and the CSeq method."""
    return ("client", branch, method)


class TransactionLayer:
    """All transactions of one SIP endpoint (one UDP port and its TCP connections)."""

    def __init__(self, timers: TimerValues | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.timers = timers or TimerValues()
        self.limits = limits
        self.transactions: dict[tuple[str, ...], Transaction] = {}
        self._two_xx: dict[tuple[str, int], _TwoXx] = {}
        self._transmits: deque[Transmit] = deque()
        self._events: deque[Event] = deque()
        # Counters (no per-message logging).
        self.parse_errors = 0
        self.retransmissions = 0
        self.absorbed = 0
        self.rejected = 0  # malformed requests answered with 4xx/5xx
        self.merged = 0  # s8.2.2.2 merged requests answered 482
        self.guard_rejects = 0  # server transactions the TU left unanswered (Timer.GUARD)
        self._merge_index: dict[tuple[str, str, int, str], tuple[str, ...]] = {}

    # --- driver surface --------------------------------------------------------------------

    def poll_transmit(self) -> Transmit | None:
        return self._transmits.popleft() if self._transmits else None

    def poll_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        times = [d for t in self.transactions.values() for d in t.deadlines.values()]
        for r in self._two_xx.values():
            times.append(min(r.next_send, r.give_up))
        return min(times) if times else None

    def handle_datagram(self, now: float, data: bytes, source: Address) -> None:
        """One UDP datagram. (Stream transports frame with :class:`StreamFramer` and pass its
        messages to :meth:`handle_request` / :meth:`handle_response` with ``reliable=True``.)"""
        if not data.strip(b"\r\n"):
            return  # RFC 5626 keep-alive
        try:
            msg = parse_message(data, self.limits)
        except RemoteProtocolError as e:
            self.parse_errors += 1
            status = e.status if isinstance(e, SipParseError) else 400
            self._events.append(ParseFailed(source, str(e), status))
            self._reject_malformed(data, source, status, str(e))
            return
        try:
            if isinstance(msg, Request):
                self.handle_request(now, msg, source)
            else:
                self.handle_response(now, msg, source)
        except RemoteProtocolError as e:
            # A value the parser let through but matching could not use (belt and braces: the
            # parser validates what matching reads). Dropped and counted, never raised.
            self.parse_errors += 1
            self._events.append(ParseFailed(source, str(e), 400))

    def _reject_malformed(self, data: bytes, source: Address, status: int, reason: str) -> None:
        """s21.4.1 / RFC 4475: answer a malformed request whose Via we can read, statelessly,
        with the problem in the reason phrase. The answer goes to the packet's source only, so
        a forged Via cannot aim it at a third party. Responses and ACKs get no answer (s17)."""
        try:
            req = parse_message(data, self.limits, validate=False)
            if not isinstance(req, Request) or req.method == "ACK" or not req.headers.get_all("Via"):
                return
            req.top_via()
        except RemoteProtocolError:
            return
        detail = "".join(ch for ch in reason if " " <= ch <= "~")[:80]
        to_tag = None
        to = req.headers.get("To")
        if to is not None:
            try:
                to_tag = new_tag() if NameAddr.parse(to).tag is None else None
            except RemoteProtocolError:
                req.headers.remove("To")
        response = make_response(req, status, f"{REASONS.get(status, 'Bad Request')} ({detail})", to_tag=to_tag)
        self.rejected += 1
        self._transmits.append(Transmit(source, serialize(response)))

    def handle_request(self, now: float, request: Request, source: Address, *, reliable: bool = False) -> None:
        stamp_received(request, source)  # s18.2.1: on every transport
        key = server_key(request)
        txn = self.transactions.get(key)
        if request.method == "ACK":
            if txn is not None and txn.kind is Kind.INVITE_SERVER and txn.state is not State.ACCEPTED:
                self._apply(now, txn, Input.RECV_ACK, request)  # ACK to our non-2xx final
                return
            # An ACK to a 2xx is a request of its own for the TU (s17.1.1.3, s13.3.1.4); in
            # RFC 6026's Accepted state it matches the INVITE transaction, which passes it up.
            self._ack_for_two_xx(request)
            if txn is not None:
                self._apply(now, txn, Input.RECV_ACK, request, source)
            else:
                self._events.append(RequestReceived(request, source, None))
            return
        if txn is not None:
            self._apply(now, txn, Input.RECV_REQUEST, request)
            return
        kind = Kind.INVITE_SERVER if request.method == "INVITE" else Kind.NON_INVITE_SERVER
        state = State.PROCEEDING if kind is Kind.INVITE_SERVER else State.TRYING
        # s18.2.2: over a stream the response goes back on the connection it came in on.
        peer = source if reliable else response_address(request.top_via(), source)
        txn = Transaction(key, kind, state, request, peer, reliable)
        self.transactions[key] = txn
        merge_id = self._merge_id(request)
        if merge_id is not None:
            if merge_id in self._merge_index:
                # s8.2.2.2: the same request reached us twice by different paths (a forking
                # proxy): answer the copy 482 and keep it away from the TU.
                self.merged += 1
                self._send_response(now, txn, make_response(request, 482, to_tag=new_tag()))
                return
            self._merge_index[merge_id] = key
            txn.merge_id = merge_id
        self._events.append(RequestReceived(request, source, key))
        self._start(now, txn, Timer.GUARD)
        if kind is Kind.INVITE_SERVER:
            # s17.2.1: a 100 Trying at once spares the client its retransmissions.
            self._send_response(now, txn, make_response(request, 100))

    def handle_response(self, now: float, response: Response, source: Address) -> None:
        via = response.top_via()
        key = client_key(via.branch or "", response.cseq().method)
        txn = self.transactions.get(key)
        if txn is None:
            if 200 <= response.status < 300 and response.cseq().method == "INVITE":
                self._events.append(ResponseReceived(response, source, None))
            else:
                self.absorbed += 1
            return
        if response.status < 200:
            inp = Input.RECV_1XX
        elif response.status < 300:
            inp = Input.RECV_2XX
        else:
            inp = Input.RECV_FINAL
        self._apply(now, txn, inp, response, source)

    def send_request(
        self, now: float, request: Request, destination: Address, *, reliable: bool = False
    ) -> tuple[str, ...]:
        """Start a client transaction; the request's top Via must carry a fresh branch.

        ACK is not sent through here: an ACK to a 2xx has no transaction (use :meth:`send_stateless`).
        """
        if request.method == "ACK":
            raise LocalProtocolError("ACK for a 2xx is sent without a transaction")
        branch = request.top_via().branch
        if not branch or not branch.startswith(BRANCH_COOKIE):
            raise LocalProtocolError("a client transaction needs a z9hG4bK branch")
        key = client_key(branch, request.method)
        if key in self.transactions:
            raise LocalProtocolError("branch already in use")
        invite = request.method == "INVITE"
        kind = Kind.INVITE_CLIENT if invite else Kind.NON_INVITE_CLIENT
        txn = Transaction(key, kind, State.CALLING if invite else State.TRYING, request, destination, reliable)
        txn.request_bytes = serialize(request)
        self.transactions[key] = txn
        self._transmits.append(Transmit(destination, txn.request_bytes, reliable))
        for timer in (Timer.A, Timer.B) if invite else (Timer.E, Timer.F):
            self._start(now, txn, timer)
        return key

    def send_stateless(self, message: Request | Response, destination: Address, *, reliable: bool = False) -> None:
        """Send outside any transaction (an ACK to a 2xx, a 400 to an unmatched bad request)."""
        self._transmits.append(Transmit(destination, serialize(message), reliable))

    def send_response(self, now: float, response: Response) -> None:
        """Send the TU's response through the server transaction it answers."""
        # The response copies Via, From, Call-ID and CSeq (s8.2.6.2), so it yields the very
        # key of the request it answers.
        request_key = server_key(response)
        txn = self.transactions.get(request_key)
        if txn is None or txn.kind not in (Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER):
            raise LocalProtocolError("no server transaction for this response")
        self._send_response(now, txn, response)

    def invite_for_cancel(self, cancel: Request) -> tuple[str, ...] | None:
        """s9.2: the INVITE server transaction a CANCEL targets, if it still exists."""
        key = server_key(cancel)
        target = (*key[:-1], "INVITE")
        return target if target in self.transactions else None

    def transport_error(self, now: float, key: tuple[str, ...]) -> None:
        """The driver failed to send for this transaction (s17.1.4, s17.2.4)."""
        txn = self.transactions.get(key)
        if txn is not None:
            self._apply(now, txn, Input.TRANSPORT_ERROR, None)

    def handle_timeout(self, now: float) -> None:
        """Fire every timer due at ``now``; ties fire in a stable order (timer letter)."""
        for txn in list(self.transactions.values()):
            for timer in sorted(txn.deadlines, key=lambda t: t.value):
                deadline = txn.deadlines.get(timer)
                if deadline is not None and deadline <= now and txn.state is not State.TERMINATED:
                    del txn.deadlines[timer]
                    self._apply(now, txn, TIMER_INPUT[timer], None)
        for ident, r in list(self._two_xx.items()):
            if r.give_up <= now:
                del self._two_xx[ident]
                self._events.append(AckTimeout(*ident))
            elif r.next_send <= now:
                self._transmits.append(Transmit(r.destination, r.data))
                self.retransmissions += 1
                r.interval = min(2 * r.interval, self.timers.t2)
                r.next_send = now + r.interval

    # --- the machine -------------------------------------------------------------------------

    def _send_response(self, now: float, txn: Transaction, response: Response) -> None:
        if response.status < 200:
            inp = Input.SEND_1XX
        elif response.status < 300:
            inp = Input.SEND_2XX
        else:
            inp = Input.SEND_FINAL
        if (txn.kind, txn.state, inp) not in TRANSITIONS:
            raise LocalProtocolError(f"cannot send {response.status} in {txn.kind.value} {txn.state.value}")
        self._apply(now, txn, inp, response)

    def _apply(
        self,
        now: float,
        txn: Transaction,
        inp: Input,
        message: Request | Response | None,
        source: Address | None = None,
    ) -> None:
        row = TRANSITIONS.get((txn.kind, txn.state, inp))
        if row is None:
            self.absorbed += 1
            return
        to, steps, kept = row
        if to is not txn.state:
            for timer in list(txn.deadlines):
                if timer not in kept:
                    del txn.deadlines[timer]
            txn.state = to
        for step in steps:
            if isinstance(step, Timer):
                self._start(now, txn, step, rearm=inp is TIMER_INPUT[step])
            else:
                self._do(now, txn, step, message, source)
        if to is State.TERMINATED:
            txn.deadlines.clear()
            del self.transactions[txn.key]
            if txn.merge_id is not None:
                self._merge_index.pop(txn.merge_id, None)
            self._events.append(TransactionTerminated(txn.key, txn.kind, inp is Input.TRANSPORT_ERROR))
        elif any(d <= now for d in txn.deadlines.values()):
            self.handle_timeout(now)  # zero-length timers (D, I, J, K on reliable transports)

    def _start(self, now: float, txn: Transaction, timer: Timer, *, rearm: bool = False) -> None:
        if rearm:
            interval = self.timers.backoff(timer, txn.state, txn.intervals[timer])
        elif timer is Timer.GUARD:
            interval = self.timers.invite_guard if txn.kind is Kind.INVITE_SERVER else 64 * self.timers.t1
        else:
            first = self.timers.initial(timer, txn.reliable)
            if first is None:
                return
            interval = first
        txn.intervals[timer] = interval
        txn.deadlines[timer] = now + interval

    def _do(
        self, now: float, txn: Transaction, action: Action, message: Request | Response | None, source: Address | None
    ) -> None:
        if action is Action.PASS:
            if isinstance(message, Response):
                self._events.append(ResponseReceived(message, source or txn.peer, txn.key))
            elif isinstance(message, Request):
                self._events.append(RequestReceived(message, source or txn.peer, None))
        elif action is Action.SEND_ACK:
            if not txn.ack_bytes and isinstance(message, Response):
                txn.ack_bytes = serialize(self._ack_for(txn.request, message))
            self._transmits.append(Transmit(txn.peer, txn.ack_bytes, txn.reliable))
        elif action is Action.RESEND_REQUEST:
            self.retransmissions += 1
            self._transmits.append(Transmit(txn.peer, txn.request_bytes, txn.reliable))
        elif action is Action.SEND_RESPONSE:
            assert isinstance(message, Response)
            txn.response = message
            txn.response_bytes = serialize(message)
            self._transmits.append(Transmit(txn.peer, txn.response_bytes, txn.reliable))
            if txn.kind is Kind.INVITE_SERVER and 200 <= message.status < 300:
                # s13.3.1.4: retransmit until the ACK on unreliable transports; on a stream
                # only wait for it, so a missing ACK still ends the session.
                ident = (message.call_id(), message.cseq().seq)
                t1 = self.timers.t1
                first = math.inf if txn.reliable else now + t1
                self._two_xx.setdefault(ident, _TwoXx(txn.response_bytes, txn.peer, t1, first, now + 64 * t1))
        elif action is Action.RESEND_RESPONSE:
            if txn.response_bytes:
                self.retransmissions += 1
                self._transmits.append(Transmit(txn.peer, txn.response_bytes, txn.reliable))
        elif action is Action.TIMEOUT:
            self._events.append(TransactionTimeout(txn.key, txn.kind))
        elif action is Action.GUARD_REJECT:
            self.guard_rejects += 1
            reason = "Server Internal Error (no answer in time)"
            self._do(now, txn, Action.SEND_RESPONSE, make_response(txn.request, 500, reason, to_tag=new_tag()), None)
            self._events.append(TransactionTimeout(txn.key, txn.kind))
        # TRANSPORT_FAILED is reported by TransactionTerminated(transport_error=True).

    @staticmethod
    def _merge_id(request: Request) -> tuple[str, str, int, str] | None:
        """s8.2.2.2: requests outside a dialog are the same request if From tag, Call-ID and
        CSeq match; None for in-dialog requests (they carry a To tag)."""
        if request.to().tag is not None:
            return None
        return request.call_id(), request.from_().tag or "", request.cseq().seq, request.method

    def _ack_for_two_xx(self, ack: Request) -> None:
        try:
            ident = (ack.call_id(), ack.cseq().seq)
        except RemoteProtocolError:
            return
        self._two_xx.pop(ident, None)

    @staticmethod
    def _ack_for(invite: Request, response: Response) -> Request:
        """s17.1.1.3: the ACK to a non-2xx final, built by the client transaction."""
        h = Headers()
        h.add("Via", invite.headers.get("Via") or "")
        for route in invite.headers.get_all("Route"):
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", invite.headers.get("From") or "")
        h.add("To", response.headers.get("To") or "")
        h.add("Call-ID", invite.headers.get("Call-ID") or "")
        h.add("CSeq", f"{invite.cseq().seq} ACK")
        return Request("ACK", invite.uri, h)
