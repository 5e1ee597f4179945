"""Our node as a user agent registered to an upstream account (RFC 3261 s10.2, s22.2).

A trunk or a proxy such as Kamailio then routes calls for the account's address of record to us:
:class:`UpstreamRegistration` sends REGISTER with our Contact, answers a 401/407 with the account's
credentials (:class:`~.digest.DigestClient`, once per challenge; a ``stale=true`` challenge again),
and refreshes the binding before it expires: at half the granted time (the registrar may shorten
what we asked, s10.2.4, and names it in our Contact's ``expires`` or the ``Expires`` header). A
failure (a final response other than 2xx, Timer F) is retried after ``Retry-After`` or
:data:`RETRY_AFTER`. :meth:`UpstreamRegistration.stop` removes the binding (``Expires: 0``, s10.2.2).

The Contact's user part is ``contact_user``, an unguessable value derived from the app secret by
the driver: a call whose Request-URI carries it was routed by the upstream to this account and
joins the account's room (runtime/sip_listener.py). Sans-IO: fed events and ``now``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass, field

from .digest import DigestClient, DigestError
from .message import Headers, NameAddr, Request, SipParseError, SipUri, new_branch, new_tag
from .transaction import Event, ResponseReceived, TransactionLayer, TransactionTimeout

__all__ = ["RETRY_AFTER", "UpstreamAccount", "UpstreamRegistration", "parse_upstream_account"]

Address = tuple[str, int]
RETRY_AFTER = 30.0  # seconds before a failed registration is tried again (no Retry-After given)
MIN_REFRESH = 1.0
_ROOM = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


@dataclass(frozen=True, slots=True)
class UpstreamAccount:
    """``--sip-register sip:USER:PASSWORD@HOST[:PORT][;room=ROOM][;expires=SECONDS]``."""

    user: str
    password: str
    host: str
    port: int
    room: str | None = None
    expires: int = 600

    @property
    def registrar(self) -> str:
        """The Request-URI of our REGISTERs (s10.2: the domain, no user part)."""
        return f"sip:{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.host}:{self.port}"

    def __repr__(self) -> str:  # never print the password in logs
        return f"UpstreamAccount({self.aor}, room={self.room!r}, expires={self.expires})"


def _is_ip(host: str) -> bool:
    """An IPv4 address, or an IPv6 one in brackets (SipUri keeps them): never a name (no DNS here)."""
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return False
    return (address.version == 6) == bracketed


def parse_upstream_account(text: str) -> UpstreamAccount:
    """Raises ValueError with what is accepted. The host must be an IP address (no DNS look-ups)."""
    accepted = "accepted: sip:USER:PASSWORD@IP[:PORT][;room=ROOM][;expires=SECONDS]"
    scheme, _, rest = text.strip().partition(":")
    userinfo, at, _ = rest.rpartition("@")
    if scheme.lower() != "sip" or not at or ":" not in userinfo:
        raise ValueError(f"{text.split(':', 2)[0]}:...: not accepted; {accepted}")
    user, _, password = userinfo.partition(":")
    try:
        uri = SipUri.parse(f"sip:{user}@{rest.rpartition('@')[2]}")
    except SipParseError:
        raise ValueError(f"sip:{user}:***@...: not a SIP URI; {accepted}") from None
    if not _is_ip(uri.host) or not password or not uri.user:
        raise ValueError(f"sip:{user}:***@{uri.host}: not accepted (an IP address, a password); {accepted}")
    room = uri.params.get("room")
    if room is not None and not _ROOM.match(room):
        raise ValueError(f"room={room!r}: not accepted (1-128 of A-Z a-z 0-9 . _ ~ -)")
    raw = uri.params.get("expires") or "600"
    if not raw.isdigit() or not 10 <= int(raw) <= 86400:
        raise ValueError(f"expires={raw!r}: not accepted (10..86400 seconds)")
    return UpstreamAccount(uri.user, password, uri.host, uri.port or 5060, room, int(raw))


@dataclass
class _State:
    call_id: str = field(default_factory=lambda: f"{secrets.token_hex(8)}@trackmesh")
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    key: tuple[str, ...] | None = None  # the REGISTER transaction in flight
    challenges_answered: int = 0  # in a row, reset by any non-401/407 answer
    removing: bool = False


class UpstreamRegistration:
    """One upstream account's binding: REGISTER, digest, refresh, retry, removal."""

    def __init__(
        self,
        layer: TransactionLayer,
        account: UpstreamAccount,
        destination: Address,
        contact_user: str,
        hostport: str,
    ) -> None:
        self.layer = layer
        self.account = account
        self.destination = destination
        self.contact_user = contact_user
        self.hostport = hostport
        self.client = DigestClient(account.user, account.password)
        self.registered = False
        self.granted = 0  # seconds, from the last 2xx
        self.last_status: int | None = None
        self.deadline: float | None = None  # the next REGISTER (refresh or retry)
        self.counters = {"sent": 0, "ok": 0, "failed": 0, "challenged": 0}
        self._s = _State()

    # ---- driver surface ------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self._send(now, self.account.expires, None)

    def stop(self, now: float) -> None:
        """Remove our binding (s10.2.2); nothing more is sent after its answer."""
        self.deadline = None
        if self.registered or self._s.key is not None:
            self._s.removing = True
            self._send(now, 0, None)

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timeout(self, now: float) -> None:
        if self.deadline is not None and now >= self.deadline and self._s.key is None:
            self.deadline = None
            self._send(now, self.account.expires, None)

    def handle_event(self, now: float, event: Event) -> bool:
        """True when the event was our REGISTER transaction's."""
        key = getattr(event, "key", None)
        if key is None or key != self._s.key:
            return False
        if isinstance(event, TransactionTimeout):
            self._s.key = None
            self._fail(now, 408, None)
            return True
        if not isinstance(event, ResponseReceived):
            return True
        resp = event.response
        if resp.status < 200:
            return True
        self._s.key = None
        self.last_status = resp.status
        if self._s.removing:
            self.registered = False
            return True
        if 200 <= resp.status < 300:
            self._s.challenges_answered = 0
            self.granted = self._granted(resp.headers)
            self.registered = self.granted > 0
            self.counters["ok"] += 1
            self.deadline = now + max(MIN_REFRESH, self.granted / 2)
            return True
        if resp.status in (401, 407) and self._s.challenges_answered < 2:
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            try:
                challenge = DigestClient.choose(resp.headers.get_all(header))
            except DigestError:
                challenge = None
            # A second challenge in a row is answered only when it says our nonce was stale (s22.4).
            if challenge is not None and (self._s.challenges_answered == 0 or challenge.stale):
                self._s.challenges_answered += 1
                self.counters["challenged"] += 1
                value = self.client.authorize(challenge, "REGISTER", self.account.registrar, secrets.token_hex(8))
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                self._send(now, self.account.expires, (name, value))
                return True
        retry = resp.headers.get("Retry-After") or ""
        self._fail(now, resp.status, float(retry.split(";")[0]) if retry.split(";")[0].strip().isdigit() else None)
        return True

    # ---- internals -----------------------------------------------------------------------------

    def _fail(self, now: float, status: int, retry_after: float | None) -> None:
        self._s.challenges_answered = 0
        self.last_status = status
        self.registered = False
        self.counters["failed"] += 1
        if not self._s.removing:
            self.deadline = now + (retry_after if retry_after is not None else RETRY_AFTER)

    def _granted(self, headers: Headers) -> int:
        """s10.2.4: the 2xx lists the bindings; ours is the Contact with our user part."""
        for value in headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
                user = SipUri.parse(contact.uri).user
            except SipParseError:
                continue
            raw = contact.params.get("expires")
            if user == self.contact_user and raw is not None and raw.isdigit():
                return int(raw)
        raw = headers.get("Expires")
        return int(raw) if raw is not None and raw.strip().isdigit() else self.account.expires

    def _send(self, now: float, expires: int, auth: tuple[str, str] | None) -> None:
        s, a = self._s, self.account
        s.cseq += 1  # s10.2: the same Call-ID for every REGISTER to this registrar, CSeq increasing
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {self.hostport};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<{a.aor}>;tag={s.from_tag}")
        h.add("To", f"<{a.aor}>")
        h.add("Call-ID", s.call_id)
        h.add("CSeq", f"{s.cseq} REGISTER")
        h.add("Contact", f"<sip:{self.contact_user}@{self.hostport}>")
        h.add("Expires", str(expires))
        h.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
        if auth is not None:
            h.add(auth[0], auth[1])
        s.key = self.layer.send_request(now, Request("REGISTER", a.registrar, h), self.destination)
        self.counters["sent"] += 1
