"""ICE-lite agent (RFC 8445 s2.5) for the server side, and a tiny controlling client.

A lite agent has only host candidates, never sends connectivity checks and is always in the
controlled role (RFC 8445 s6.1.1: a full agent talking to a lite agent MUST be controlling).
It answers authenticated Binding requests; a request carrying USE-CANDIDATE nominates the
address it came from.

Liveness. RFC 7675 consent is the *sending* side's business: a full agent checks that its peer
still wants its media, a lite agent sends no checks at all. What this agent tracks is whether
the nominated pair is still alive, so that a vanished client is reaped. Everything that proves
it counts: authenticated checks, Binding indications from the selected address (the keepalives
RFC 8445 s11 allows; libnice, hence GStreamer's webrtcbin, sends only those once nominated) and
authenticated SRTP/SRTCP/DTLS the peer reports through :meth:`IceLiteAgent.note_activity`. If
none of these arrive for ``consent_timeout`` seconds the agent declares the session
disconnected.

Sans-IO: ``now`` is always a parameter; outputs are return values and a drained event queue.
"""

from __future__ import annotations

import enum
import secrets
import string
from collections import deque
from dataclasses import dataclass

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.net import Address
from trackmesh.transports.webrtc.ice import stun
from trackmesh.transports.webrtc.ice.stun import Buffer, StunClass

__all__ = [
    "DEFAULT_CONSENT_TIMEOUT",
    "IceCheckResult",
    "IceConnected",
    "IceCredentials",
    "IceDisconnected",
    "IceEvent",
    "IceLiteAgent",
    "IceLiteClient",
    "IceSelectedAddressChanged",
    "IceState",
    "generate_credentials",
]

#: RFC 7675 s5.1: consent expires 30 seconds after the last successful check; a lite agent
#: applies the same 30 s to the last sign of life on the selected pair (module docstring).
DEFAULT_CONSENT_TIMEOUT = 30.0

# RFC 8839 s5.4: ice-char = ALPHA / DIGIT / "+" / "/".
_ICE_CHARS = string.ascii_letters + string.digits + "+/"
_ICE_CHAR_SET = frozenset(_ICE_CHARS)
# RFC 8445 s5.3: ufrag >= 24 bits of randomness (4 chars), pwd >= 128 bits (22 chars).
# We exceed both: 8 chars = 48 bits and 24 chars = 144 bits.
_UFRAG_LENGTH = 8
_PWD_LENGTH = 24


@dataclass(frozen=True, slots=True)
class IceCredentials:
    """An ICE username fragment and password pair (RFC 8445 s5.3)."""

    ufrag: str
    pwd: str

    def __post_init__(self) -> None:
        if len(self.ufrag) < 4 or len(self.ufrag) > 256 or not _ICE_CHAR_SET.issuperset(self.ufrag):
            raise LocalProtocolError(f"invalid ice-ufrag {self.ufrag!r} (RFC 8839 s5.4: 4-256 ice-chars)")
        if len(self.pwd) < 22 or len(self.pwd) > 256 or not _ICE_CHAR_SET.issuperset(self.pwd):
            raise LocalProtocolError("invalid ice-pwd (RFC 8839 s5.4: 22-256 ice-chars)")


def generate_credentials() -> IceCredentials:
    """Fresh random local credentials from a CSPRNG."""
    ufrag = "".join(secrets.choice(_ICE_CHARS) for _ in range(_UFRAG_LENGTH))
    pwd = "".join(secrets.choice(_ICE_CHARS) for _ in range(_PWD_LENGTH))
    return IceCredentials(ufrag, pwd)


@dataclass(frozen=True, slots=True)
class IceConnected:
    """First nomination: media may flow to/from ``addr``."""

    addr: Address


@dataclass(frozen=True, slots=True)
class IceSelectedAddressChanged:
    """The controlling agent nominated a different address (network change, ICE restart)."""

    addr: Address


@dataclass(frozen=True, slots=True)
class IceDisconnected:
    """Consent expired or the agent was closed; stop sending (RFC 7675 s5.1)."""

    reason: str


IceEvent = IceConnected | IceSelectedAddressChanged | IceDisconnected


class IceState(enum.Enum):
    NEW = "new"  # no nomination yet
    CONNECTED = "connected"  # a nominated address exists and consent is fresh
    DISCONNECTED = "disconnected"  # consent expired; only restart() revives the agent
    CLOSED = "closed"


_COUNTER_NAMES = (
    "requests",
    "responses_sent",
    "errors_sent",
    "malformed",
    "not_binding_request",
    "bad_fingerprint",
    "missing_credentials",
    "unknown_ufrag",
    "remote_ufrag_mismatch",
    "bad_integrity",
    "role_conflict",
    "unknown_attributes",
    "after_close",
    "after_disconnect",
    "keepalives",
)


class IceLiteAgent:
    """Server-side ICE-lite agent for one peer connection (one component, RTP/RTCP muxed).

    Feed it every STUN datagram for this peer with :meth:`handle_stun`, send whatever bytes
    it returns back to ``addr``, call :meth:`handle_timeout` at :meth:`next_deadline`, and
    drain :meth:`poll_event`. Dropped input is counted in :attr:`counters`.
    """

    __slots__ = (
        "_events",
        "_last_check",
        "_local",
        "_pending_local",
        "_previous",
        "_remote_pwd",
        "_remote_ufrag",
        "_selected",
        "_state",
        "consent_timeout",
        "counters",
        "software",
    )

    def __init__(
        self,
        *,
        remote_ufrag: str | None = None,
        remote_pwd: str | None = None,
        local: IceCredentials | None = None,
        consent_timeout: float = DEFAULT_CONSENT_TIMEOUT,
        software: str | None = None,
    ) -> None:
        if consent_timeout <= 0:
            raise LocalProtocolError("consent_timeout must be positive")
        self._local = local if local is not None else generate_credentials()
        self._remote_ufrag = remote_ufrag
        # A lite agent never sends checks, so it never needs the remote password; it is kept
        # only so callers can hand it on (e.g. to a future full agent).
        self._remote_pwd = remote_pwd
        # During an ICE restart the previous (local credentials, remote ufrag) stay valid until
        # a check with the new ones succeeds, so media keeps flowing (RFC 8445 s9).
        self._previous: tuple[IceCredentials, str | None] | None = None
        self._pending_local = False
        self._selected: Address | None = None
        self._state = IceState.NEW
        self._last_check: float | None = None
        self._events: deque[IceEvent] = deque()
        self.consent_timeout = consent_timeout
        self.software = software
        self.counters: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)

    # -- properties -----------------------------------------------------------------------

    @property
    def local_credentials(self) -> IceCredentials:
        """The credentials to advertise in SDP (the new ones after :meth:`restart`)."""
        return self._local

    @property
    def previous_credentials(self) -> IceCredentials | None:
        """Old local credentials still accepted during an ICE restart, if any."""
        return self._previous[0] if self._previous is not None else None

    @property
    def remote_ufrag(self) -> str | None:
        return self._remote_ufrag

    @property
    def remote_pwd(self) -> str | None:
        return self._remote_pwd

    @property
    def selected_address(self) -> Address | None:
        return self._selected

    @property
    def restart_pending(self) -> bool:
        """An ICE restart's new credentials have not been used by a valid check yet."""
        return self._pending_local

    @property
    def state(self) -> IceState:
        return self._state

    def set_remote_credentials(self, ufrag: str, pwd: str | None = None) -> None:
        """Set the remote ufrag (and optionally pwd) once the offer's a=ice-ufrag is known."""
        self._remote_ufrag = ufrag
        self._remote_pwd = pwd

    # -- lifecycle --------------------------------------------------------------------------

    def restart(self, remote_ufrag: str, remote_pwd: str | None = None) -> IceCredentials:
        """ICE restart (RFC 8445 s9): new local credentials, old ones valid until first use of new.

        Returns the new local credentials to put in the SDP answer.
        """
        if self._state is IceState.CLOSED:
            raise LocalProtocolError("restart() on a closed ICE agent")
        if not self._pending_local:
            # If a restart is already pending (no check with its credentials yet), the
            # credentials in use are still the pre-restart ones: keep those as "previous".
            self._previous = (self._local, self._remote_ufrag)
        self._local = generate_credentials()
        self._pending_local = True
        self._remote_ufrag = remote_ufrag
        self._remote_pwd = remote_pwd
        if self._state is IceState.DISCONNECTED:
            # Consent is gone; the restart gives the peer a fresh chance to nominate.
            self._state = IceState.NEW
            self._last_check = None
        return self._local

    def close(self) -> None:
        if self._state is IceState.CLOSED:
            return
        was_up = self._state is IceState.CONNECTED
        self._state = IceState.CLOSED
        self._selected = None
        if was_up:
            self._events.append(IceDisconnected("closed"))

    # -- input --------------------------------------------------------------------------

    def _match_username(self, username: str) -> IceCredentials | None:
        """Credentials whose password keys this check, or None if the ufrags do not match.

        RFC 8445 s7.3: USERNAME is "<our ufrag>:<their ufrag>".
        """
        local_part, sep, remote_part = username.partition(":")
        if not sep:
            return None
        if local_part == self._local.ufrag:
            if self._remote_ufrag is not None and remote_part != self._remote_ufrag:
                self.counters["remote_ufrag_mismatch"] += 1
                return None
            return self._local
        previous = self._previous
        if previous is not None and local_part == previous[0].ufrag:
            if previous[1] is not None and remote_part != previous[1]:
                self.counters["remote_ufrag_mismatch"] += 1
                return None
            return previous[0]
        self.counters["unknown_ufrag"] += 1
        return None

    def handle_stun(self, now: float, data: Buffer, addr: Address, msg: stun.StunMessage | None = None) -> bytes | None:
        """Process one STUN datagram from ``addr``; return the response to send, if any. ``msg`` is ``data``
        parsed already (by the port's demultiplexer), else it is parsed here."""
        if self._state is IceState.CLOSED:
            self.counters["after_close"] += 1
            return None
        if self._state is IceState.DISCONNECTED:
            # RFC 7675 s5.1: after consent expiry the session may only resume through an ICE
            # restart. Staying silent makes the browser's own consent checks fail, which is
            # what prompts it to restart.
            self.counters["after_disconnect"] += 1
            return None
        if msg is None:
            try:
                msg = stun.parse(data)
            except RemoteProtocolError:
                self.counters["malformed"] += 1
                return None
        if msg.method != stun.METHOD_BINDING or msg.message_class is not StunClass.REQUEST:
            if (
                msg.method == stun.METHOD_BINDING
                and msg.message_class is StunClass.INDICATION
                and addr == self._selected
                and stun.verify_fingerprint(data)
            ):
                # RFC 8445 s11: a Binding indication is a keepalive on the pair; it needs no
                # answer and carries no credentials, so only the selected pair's count.
                self.counters["keepalives"] += 1
                self._last_check = now
                return None
            # Other indications need no answer; a lite agent sends no requests, so any
            # response is unsolicited.
            self.counters["not_binding_request"] += 1
            return None
        self.counters["requests"] += 1
        if not stun.verify_fingerprint(data):
            # RFC 8445 s7.2.2 mandates FINGERPRINT on checks; without a valid one the datagram
            # may not even be STUN (RFC 8489 s14.7), so it is silently discarded.
            self.counters["bad_fingerprint"] += 1
            return None
        txid = msg.transaction_id
        if msg.username is None or msg.integrity_offset is None:
            # RFC 8489 s9.1.3: missing USERNAME or MESSAGE-INTEGRITY -> 400, unauthenticated.
            self.counters["missing_credentials"] += 1
            return self._error(txid, 400)
        creds = self._match_username(msg.username)
        if creds is None:
            # Not for this session (or a stale one): drop rather than 401 so that an
            # off-path sender learns nothing about which ufrags are live.
            return None
        key = creds.pwd.encode()
        if not stun.verify_integrity(data, key, message=msg):
            # RFC 8489 s9.1.3: integrity mismatch -> 401 without MESSAGE-INTEGRITY.
            self.counters["bad_integrity"] += 1
            return self._error(txid, 401)
        if msg.unknown_required:
            # RFC 8489 s6.3.1.1: unknown comprehension-required attributes -> 420.
            self.counters["unknown_attributes"] += 1
            return self._error(txid, 420, key=key, unknown=msg.unknown_required)
        if msg.ice_controlled is not None:
            # RFC 8445 s7.3.1.1: both sides think they are controlled. A lite agent can only
            # be controlled (s6.1.1), so it always asks the peer to switch: 487.
            self.counters["role_conflict"] += 1
            return self._error(txid, 487, key=key)

        self._on_valid_check(now, creds, msg.use_candidate, addr)
        self.counters["responses_sent"] += 1
        return stun.build_binding_success(txid, addr, key, software=self.software)

    def _error(
        self, txid: bytes, code: int, *, key: bytes | None = None, unknown: tuple[int, ...] = ()
    ) -> bytes:
        self.counters["errors_sent"] += 1
        return stun.build_binding_error(txid, code, integrity_key=key, unknown_attributes=unknown)

    def _on_valid_check(self, now: float, creds: IceCredentials, use_candidate: bool, addr: Address) -> None:
        if creds is self._local and self._pending_local:
            # First success with the post-restart credentials: retire the old ones.
            self._pending_local = False
            self._previous = None
        # RFC 7675 s5.1: each authenticated check refreshes consent.
        self._last_check = now
        if not use_candidate:
            return
        if self._state is IceState.NEW:
            self._state = IceState.CONNECTED
            self._selected = addr
            self._events.append(IceConnected(addr))
        elif addr != self._selected:
            self._selected = addr
            self._events.append(IceSelectedAddressChanged(addr))

    def note_activity(self, now: float, addr: Address) -> None:
        """The peer took an authenticated SRTP/SRTCP packet or DTLS record from ``addr``.

        On the selected pair that is proof of life (module docstring), so it refreshes the
        liveness timer like a check does. Anything else (no nomination yet, another address,
        an expired or closed agent) is ignored: only checks nominate, only a restart revives.
        Called per packet, so it is one comparison and one store.
        """
        if addr == self._selected and self._last_check is not None:
            self._last_check = now

    # -- timers and events -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must next be called, or None if no timer is armed."""
        if self._last_check is None or self._state in (IceState.DISCONNECTED, IceState.CLOSED):
            return None
        return self._last_check + self.consent_timeout

    def handle_timeout(self, now: float) -> None:
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return
        was_up = self._state is IceState.CONNECTED
        self._state = IceState.DISCONNECTED
        self._selected = None
        self._last_check = None
        # Checks were arriving but stopped: whether or not one nominated, the peer is gone.
        self._events.append(
            IceDisconnected("consent expired" if was_up else "consent expired before nomination")
        )

    def poll_event(self) -> IceEvent | None:
        return self._events.popleft() if self._events else None


@dataclass(frozen=True, slots=True)
class IceCheckResult:
    """Outcome of one connectivity check sent by :class:`IceLiteClient`."""

    transaction_id: bytes
    rtt: float
    #: Our address as seen by the server (XOR-MAPPED-ADDRESS), on success.
    mapped_address: Address | None = None
    #: The STUN error code, on an error response.
    error_code: int | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


class IceLiteClient:
    """Minimal controlling ICE client: builds checks and validates responses.

    It does no candidate gathering, pairing or retransmission scheduling; the caller sends
    :meth:`create_check` output to the server. Used by tests and the load generator.
    """

    __slots__ = (
        "_pending",
        "counters",
        "local",
        "priority",
        "remote_pwd",
        "remote_ufrag",
        "tie_breaker",
        "transaction_timeout",
    )

    def __init__(
        self,
        *,
        remote_ufrag: str,
        remote_pwd: str,
        local: IceCredentials | None = None,
        tie_breaker: int | None = None,
        priority: int = 0x7E7F1EFF,
        transaction_timeout: float = 39.5,  # RFC 8489 s6.2.1: Rc=7 with RTO=500 ms
    ) -> None:
        self.local = local if local is not None else generate_credentials()
        self.remote_ufrag = remote_ufrag
        self.remote_pwd = remote_pwd
        self.tie_breaker = tie_breaker if tie_breaker is not None else secrets.randbits(64)
        self.priority = priority
        self.transaction_timeout = transaction_timeout
        self._pending: dict[bytes, float] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("sent", "success", "error", "malformed", "unmatched", "bad_integrity", "timeout"), 0
        )

    def set_remote_credentials(self, ufrag: str, pwd: str) -> None:
        self.remote_ufrag = ufrag
        self.remote_pwd = pwd

    def create_check(self, now: float, *, use_candidate: bool = True) -> bytes:
        """A Binding request to the server (RFC 8445 s7.2.2), remembered for matching."""
        txid = stun.new_transaction_id()
        self._pending[txid] = now
        self.counters["sent"] += 1
        return stun.build_binding_request(
            txid,
            f"{self.remote_ufrag}:{self.local.ufrag}",
            self.remote_pwd.encode(),
            priority=self.priority,
            ice_controlling=self.tie_breaker,
            use_candidate=use_candidate,
        )

    def handle_response(self, now: float, data: Buffer) -> IceCheckResult | None:
        """Match a response to a pending check; None (counted) if it is not acceptable."""
        try:
            msg = stun.parse(data)
        except RemoteProtocolError:
            self.counters["malformed"] += 1
            return None
        if msg.message_class not in (StunClass.SUCCESS, StunClass.ERROR):
            self.counters["unmatched"] += 1
            return None
        sent_at = self._pending.get(msg.transaction_id)
        if sent_at is None:
            self.counters["unmatched"] += 1
            return None
        rtt = now - sent_at
        if msg.message_class is StunClass.ERROR:
            # 400/401 carry no integrity (the server could not authenticate us), so they
            # are accepted unauthenticated; they only tell us our check failed.
            if msg.integrity_offset is not None and not stun.verify_integrity(
                data, self.remote_pwd.encode(), message=msg
            ):
                self.counters["bad_integrity"] += 1
                return None
            del self._pending[msg.transaction_id]
            self.counters["error"] += 1
            return IceCheckResult(msg.transaction_id, rtt, error_code=msg.error_code or 0)
        # RFC 8445 s7.2.5.2: a success response must be authenticated with the remote pwd.
        if not stun.verify_integrity(data, self.remote_pwd.encode(), message=msg):
            self.counters["bad_integrity"] += 1
            return None
        del self._pending[msg.transaction_id]
        self.counters["success"] += 1
        return IceCheckResult(msg.transaction_id, rtt, mapped_address=msg.xor_mapped_address)

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(self._pending.values()) + self.transaction_timeout

    def handle_timeout(self, now: float) -> None:
        """Forget checks that can no longer be answered (RFC 8489 s6.2.1 transaction timeout)."""
        expired = [t for t, sent in self._pending.items() if now >= sent + self.transaction_timeout]
        for txid in expired:
            del self._pending[txid]
        self.counters["timeout"] += len(expired)

    @property
    def pending(self) -> int:
        return len(self._pending)
