"""SIP messages (RFC 3261 s7) and the structured header values the stack reads.

A :class:`Request` or :class:`Response` holds its headers as an ordered list of
``(name, value)`` pairs in :class:`Headers`: multi-value headers (s7.3.1) are split into one
entry per value by the parser, so ``headers.get_all("Via")`` is the Via stack top first.
Structured values (:class:`Via`, :class:`NameAddr`, :class:`CSeq`, :class:`SipUri`) are parsed
on demand, not for every header of every message.

Errors are :class:`SipParseError` (a :class:`~trackmesh.errors.RemoteProtocolError`) carrying the
status code a server should answer with (400, 413, 505, ...), so a driver can reply with the
reason or drop and count.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from trackmesh.errors import RemoteProtocolError

__all__ = [
    "BRANCH_COOKIE",
    "CSeq",
    "Headers",
    "NameAddr",
    "Request",
    "Response",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "Via",
    "canonical_name",
    "make_response",
    "new_branch",
    "new_tag",
    "response_address",
    "split_list",
    "stamp_received",
]

#: s8.1.1.7: branches of RFC 3261 clients start with this cookie.
BRANCH_COOKIE = "z9hG4bK"


class SipParseError(RemoteProtocolError):
    """A message that cannot be accepted; ``status`` is the response a server owes (s21.4)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


# s7.3.3 compact forms, and the IANA SIP header registry's compact letters.
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "b": "Referred-By",
    "u": "Allow-Events",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authorization",
        "Proxy-Authorization",
        "Max-Forwards",
        "Record-Route",
        "Route",
        "Content-Length",
        "Content-Type",
        "Min-SE",
        "RSeq",
        "RAck",
        "MIME-Version",
        "Retry-After",
        *COMPACT_FORMS.values(),
    )
}

#: Headers whose values are comma-separated lists (s7.3.1). Authorization-type headers and
#: those whose grammar allows commas in a value (Date, WWW-Authenticate, ...) are not split.
LIST_HEADERS = frozenset(
    h.lower()
    for h in (
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Allow-Events",
        "Path",
        "Service-Route",
    )
)

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_VIA_PROTO_RE = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+(\S.*)$", re.S | re.I)


@functools.lru_cache(maxsize=512)
def canonical_name(name: str) -> str:
    """The conventional spelling of a header name, expanding compact forms (s7.3.3).

    Cached: every header lookup goes through here (bounded, so odd names cannot grow it)."""
    low = name.lower()
    if len(low) == 1 and low in COMPACT_FORMS:
        return COMPACT_FORMS[low]
    return _CANONICAL.get(low) or "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes and in ``<...>`` (s7.3.1)."""
    if '"' not in value and "<" not in value:
        out = [part.strip() for part in value.split(",")]
        if any(not part for part in out):
            raise SipParseError("empty element in a header list")
        return out
    out = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    out.append(value[start:].strip())
    if any(not part for part in out):
        raise SipParseError("empty element in a header list")
    return out


class Headers:
    """Ordered header fields; lookups are case-insensitive and see compact forms expanded."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items or ()]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str) -> str | None:
        """The first value of ``name`` or None."""
        key = canonical_name(name)
        for n, v in self._items:
            if n == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        key = canonical_name(name)
        return [v for n, v in self._items if n == key]

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def insert(self, name: str, value: str) -> None:
        """Add ``value`` before the other values of ``name`` (a Via pushed by a proxy)."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items.insert(i, (key, value))
                return
        self._items.append((key, value))

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one, kept at the first one's position."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                self._items[i + 1 :] = [(k, v) for k, v in self._items[i + 1 :] if k != key]
                return
        self._items.append((key, value))

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of ``name`` in place (the top Via)."""
        key = canonical_name(name)
        for i, (n, _) in enumerate(self._items):
            if n == key:
                self._items[i] = (key, value)
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = canonical_name(name)
        self._items = [(n, v) for n, v in self._items if n != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h


def _parse_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` -> {"a": "b", "c": None}; names are case-insensitive (s19.1.4, s20)."""
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, val = part.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise SipParseError(f"bad parameter name {name!r}")
        params[name] = val.strip() if eq else None
    return params


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    if '"' not in text:
        return text.split(sep)
    out: list[str] = []
    start = 0
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    out.append(text[start:])
    return out


def _render_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _split_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError("junk after IPv6 reference")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or not re.match(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+)$", host):
        raise SipParseError(f"bad host {host!r}")
    if not port_text and ":" not in text.removeprefix(host):
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port {port_text!r}")
    return host, int(port_text)


@dataclass(slots=True)
class SipUri:
    """``sip:`` / ``sips:`` URI (s19.1): user, host, port and URI parameters; headers kept raw."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.strip().partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise SipParseError(f"not a SIP URI: {text[:80]!r}", 416)
        rest, _, headers = rest.partition("?")
        userinfo, at, hostpart = rest.rpartition("@")
        user: str | None = None
        if at:
            user = userinfo.partition(":")[0]
            if not user:
                raise SipParseError("empty user in URI")
        hostport, _, params = hostpart.partition(";")
        host, port = _split_hostport(hostport)
        return cls(host=host, user=user, port=port, scheme=scheme, params=_parse_params(params), headers=headers)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{self.host}{port}{_render_params(self.params)}{hdrs}"


@dataclass(slots=True)
class Via:
    """One Via value (s20.42): ``SIP/2.0/UDP host:port;branch=..;rport;received=..`` (RFC 3581)."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        # s20.42 allows LWS around the slashes: "SIP / 2.0 / UDP host" (RFC 4475 s3.1.1.1).
        m = _VIA_PROTO_RE.match(text)
        if m is None:
            raise SipParseError(f"bad Via {text[:60]!r}")
        transport, rest = m.group(1), m.group(2)
        sent_by, _, params = rest.strip().partition(";")
        host, port = _split_hostport(sent_by)
        return cls(transport=transport.upper(), host=host, port=port, params=_parse_params(params))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int]:
        """s18.2.2: the port defaults to 5060 (5061 for TLS)."""
        default = 5061 if self.transport == "TLS" else 5060
        return self.host, self.port if self.port is not None else default

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{_render_params(self.params)}"


@dataclass(slots=True)
class NameAddr:
    """From/To/Contact/Route value (s20.10, s25.1): ``"Name" <uri>;tag=x`` or a bare addr-spec."""

    uri: str
    display: str = ""
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError("unterminated <uri>")
            display = text[:lt].strip()
            if display.startswith('"') and (len(display) < 2 or not display.endswith('"')):
                raise SipParseError("bad quoted display name")
            uri, rest = text[lt + 1 : gt].strip(), text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise SipParseError("junk after <uri>")
        else:
            # s20: in an addr-spec without <>, parameters after ';' belong to the header.
            display = ""
            uri, _, rest = text.partition(";")
            uri = uri.strip()
            rest = ";" + rest if rest else ""
            if "," in uri or "?" in uri:
                raise SipParseError("addr-spec with ',' or '?' must be enclosed in <>")
            if any(ch in uri for ch in ' \t"<>'):
                raise SipParseError(f"bad address {text[:80]!r}")  # e.g. an unterminated quoted name
        if not uri or ":" not in uri:
            raise SipParseError(f"bad address {text[:80]!r}")
        return cls(uri=uri, display=display, params=_parse_params(rest))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display, {**self.params, "tag": tag})

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{_render_params(self.params)}"


def _find_unquoted(text: str, ch: str) -> int:
    quoted = False
    i = 0
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ch and not quoted:
            return i
        i += 1
    return -1


@dataclass(frozen=True, slots=True)
class CSeq:
    """s20.16: sequence number (< 2**31) and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise SipParseError(f"bad CSeq {text[:40]!r}")
        seq = int(parts[0])
        if seq >= 2**31:
            raise SipParseError("CSeq number out of range")
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@dataclass(slots=True)
class SipMessage:
    headers: Headers
    body: bytes

    def via(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    def top_via(self) -> Via:
        v = self.headers.get("Via")
        if v is None:
            raise SipParseError("missing Via")
        return Via.parse(v)

    def cseq(self) -> CSeq:
        v = self.headers.get("CSeq")
        if v is None:
            raise SipParseError("missing CSeq")
        return CSeq.parse(v)

    def call_id(self) -> str:
        v = self.headers.get("Call-ID")
        if v is None:
            raise SipParseError("missing Call-ID")
        return v

    def from_(self) -> NameAddr:
        v = self.headers.get("From")
        if v is None:
            raise SipParseError("missing From")
        return NameAddr.parse(v)

    def to(self) -> NameAddr:
        v = self.headers.get("To")
        if v is None:
            raise SipParseError("missing To")
        return NameAddr.parse(v)


@dataclass(slots=True)
class Request(SipMessage):
    method: str
    uri: str

    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"") -> None:
        self.method = method
        self.uri = uri
        self.headers = headers if headers is not None else Headers()
        self.body = body

    def max_forwards(self) -> int | None:
        v = self.headers.get("Max-Forwards")
        if v is None:
            return None
        v = v.strip()
        if not v.isdigit() or int(v) > 255:
            raise SipParseError("bad Max-Forwards")
        return int(v)


@dataclass(slots=True)
class Response(SipMessage):
    status: int
    reason: str

    def __init__(self, status: int, reason: str, headers: Headers | None = None, body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.headers = headers if headers is not None else Headers()
        self.body = body


#: Default reason phrases (s21) for the responses this stack sends.
REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def new_branch() -> str:
    """A fresh RFC 3261 branch (s8.1.1.7): the cookie and 64 random bits."""
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A From/To tag with at least 32 random bits (s19.3)."""
    return secrets.token_hex(6)


def make_response(
    request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None, body: bytes = b""
) -> Response:
    """s8.2.6.2: a response copying Via (all, in order), From, Call-ID, CSeq and To of ``request``
    (and Record-Route on a 1xx/2xx to an INVITE, s12.1.1).

    ``to_tag`` is added to To unless the request's To already has one (an in-dialog request);
    s8.2.6.2 requires it on every response but 100 Trying. The caller adds Contact, body type etc.
    """
    h = Headers()
    for v in request.headers.get_all("Via"):
        h.add("Via", v)
    # Absent headers stay absent: only a 400 for a request missing them builds such a response.
    if (frm := request.headers.get("From")) is not None:
        h.add("From", frm)
    if (to := request.headers.get("To")) is not None:
        if to_tag is not None and status != 100:
            addr = NameAddr.parse(to)
            if addr.tag is None:
                to = str(addr.with_tag(to_tag))
        h.add("To", to)
    for name in ("Call-ID", "CSeq"):
        if (value := request.headers.get(name)) is not None:
            h.add(name, value)
    if status == 100 and (ts := request.headers.get("Timestamp")) is not None:
        h.add("Timestamp", ts)  # s8.2.6.1
    if 100 < status < 300 and request.method == "INVITE":
        # s12.1.1: a response that establishes a dialog copies the Record-Route values, in order,
        # so the caller's in-dialog requests pass the proxies that asked to stay on the path.
        for rr in request.headers.get_all("Record-Route"):
            h.add("Record-Route", rr)
    return Response(status, reason if reason is not None else REASONS.get(status, ""), h, body)


def stamp_received(request: Request, source: tuple[str, int]) -> None:
    """s18.2.1 and RFC 3581 s4: record where a request really came from in its top Via.

    ``received`` is added when the sent-by host differs from the source IP; ``rport`` is filled
    with the source port (and then ``received`` is always added).
    """
    values = request.headers.get_all("Via")
    if not values:
        raise SipParseError("missing Via")
    via = Via.parse(values[0])
    # A received/rport value the sender wrote itself is not evidence of anything: drop it, so
    # responses can only go back to the source IP (never to a host a forged Via names).
    changed = via.params.pop("received", None) is not None
    if "rport" in via.params:
        via.params["rport"] = str(source[1])
        via.params["received"] = source[0]
        changed = True
    elif via.host.strip("[]") != source[0]:
        via.params["received"] = source[0]
        changed = True
    if changed:
        request.headers.replace_first("Via", str(via))


def response_address(via: Via, source: tuple[str, int] | None = None) -> tuple[str, int]:
    """s18.2.2 and RFC 3581 s4: where an unreliable-transport response goes.

    ``received`` (else the sent-by host) and ``rport`` (else the sent-by port); a stamped top
    Via already carries the source address, ``source`` is the fallback for an unstamped one.
    """
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    if rport is not None and rport.isdigit():
        return host, int(rport)
    if rport is not None and source is not None:
        return source
    return host, via.sent_by[1]
