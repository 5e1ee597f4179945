"""RFC 3261 wire format: parse a datagram, frame a byte stream, serialize a message.

- :func:`parse_message` reads one complete message (a UDP datagram, or a frame from
  :class:`StreamFramer`): start line, header folding (s7.3.1), compact forms (s7.3.3),
  comma-separated list headers split into one entry per value, and the body sized by
  Content-Length (s18.3: on UDP a missing Content-Length means "to the end of the datagram",
  extra bytes are dropped, a short body is an error).
- :class:`StreamFramer` is fed bytes from TCP and yields whole messages; Content-Length is
  mandatory there (s18.3, s20.14). Leading CRLFs (RFC 5626 s4.4.1 keep-alive pings) are
  skipped and counted.
- :func:`serialize` writes a message, always with Content-Length.

Every limit in :class:`Limits` produces a :class:`SipParseError` with the status a server
owes: 413/513 for size, 400 otherwise, 505 for another SIP version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trackmesh.transports.sip.message import (
    LIST_HEADERS,
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    SipMessage,
    SipParseError,
    Via,
    canonical_name,
    is_token,
    split_list,
)

__all__ = ["Limits", "StreamFramer", "parse_message", "serialize"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Size caps applied before any allocation proportional to the input."""

    max_message: int = 65535  # the largest UDP payload; a TCP frame gets the same cap
    max_headers: int = 128  # header fields after folding and list splitting
    max_line: int = 8192  # one (unfolded) header line or the start line


DEFAULT_LIMITS = Limits()

_STATUS_RE = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)$")
_REQUEST_RE = re.compile(r"^(\S+) (\S+) (\S+)$")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


def _split_head(data: bytes, limits: Limits) -> tuple[bytes, bytes]:
    """Cut ``data`` at the blank line ending the header block (s7: CRLF CRLF, LF LF tolerated)."""
    end = data.find(b"\r\n\r\n")
    sep = 4
    lf = data.find(b"\n\n")
    if lf >= 0 and (end < 0 or lf < end):
        end, sep = lf, 2
    if end < 0:
        raise SipParseError("no empty line after the headers")
    if end > limits.max_message:
        raise SipParseError("header block too large", 513)
    return data[:end], data[end + sep :]


def _lines(head: bytes, limits: Limits) -> list[str]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SipParseError("headers are not UTF-8") from e
    raw = text.replace("\r\n", "\n").split("\n")
    lines: list[str] = []
    for line in raw:
        if "\r" in line or "\x00" in line:
            raise SipParseError("stray CR or NUL in the headers")
        if line[:1] in (" ", "\t") and lines:
            # s7.3.1: a line starting with whitespace continues the previous one.
            lines[-1] = lines[-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
        if len(lines[-1]) > limits.max_line:
            raise SipParseError("header line too long", 513)
    return lines


#: List headers whose RFC 3261 grammar allows no element at all (s20.1, s20.2, s20.3, s20.5, s20.37).
EMPTY_LISTS = frozenset({"accept", "accept-encoding", "accept-language", "allow", "supported"})


def parse_message(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, stream: bool = False, validate: bool = True
) -> Request | Response:
    """Parse one complete SIP message; ``stream`` demands Content-Length (TCP, s18.3).

    ``validate=False`` skips the mandatory-header and version checks (s8.1.1), for building the
    400 or 505 that names the problem."""
    if len(data) > limits.max_message:
        raise SipParseError("message too large", 513)
    # s7.5: implementations SHOULD ignore CRLFs before the start line.
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, rest = _split_head(data, limits)
    lines = _lines(head, limits)
    start, header_lines = lines[0], lines[1:]
    if len(start) > limits.max_line:
        raise SipParseError("start line too long", 513)

    headers = Headers()
    for line in header_lines:
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not is_token(name):
            raise SipParseError(f"malformed header line {line[:60]!r}")
        value = value.strip()
        canon = canonical_name(name)
        if not value and canon.lower() in EMPTY_LISTS:
            headers.add(canon, "")  # s20: "Supported:" with no option tag is an empty list (baresip sends it)
        elif canon.lower() in LIST_HEADERS and value != "*":
            for part in split_list(value):
                headers.add(canon, part)
        else:
            headers.add(canon, value)
        if len(headers) > limits.max_headers:
            raise SipParseError("too many header fields", 513)

    msg: Request | Response
    if start.startswith("SIP/"):
        m = _STATUS_RE.match(start)
        if m is None:
            status = 505 if not start.startswith("SIP/2.0 ") else 400
            raise SipParseError(f"bad status line {start[:60]!r}", status)
        msg = Response(int(m.group(1)), m.group(2), headers)
    else:
        m = _REQUEST_RE.match(start)
        if m is None:
            raise SipParseError(f"bad request line {start[:60]!r}")
        method, uri, version = m.groups()
        if version != "SIP/2.0" and validate:
            raise SipParseError(f"unsupported version {version[:20]!r}", 505)
        if not is_token(method):
            raise SipParseError("bad method")
        if ":" not in uri:
            raise SipParseError("bad Request-URI", 416)
        msg = Request(method, uri, headers)

    msg.body = _body(headers, rest, stream)
    if validate:
        _validate(msg)
    return msg


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all("Content-Length")
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].isdigit():
        raise SipParseError("bad Content-Length")
    return int(values[0])


def _body(headers: Headers, rest: bytes, stream: bool) -> bytes:
    """The body sized by Content-Length, which is then dropped: the body's length is the truth
    and :func:`serialize` writes it back."""
    length = _content_length(headers)
    headers.remove("Content-Length")
    if length is None:
        if stream:
            raise SipParseError("Content-Length is mandatory on stream transports")
        return rest
    if length > len(rest):
        raise SipParseError("body shorter than Content-Length")
    return rest[:length]


def _validate(msg: Request | Response) -> None:
    """s8.1.1: the mandatory headers exist and the ones the stack reads parse."""
    for name in _MANDATORY:
        if msg.headers.get(name) is None:
            raise SipParseError(f"missing {name}")
    for name in ("Call-ID", "CSeq", "Max-Forwards"):
        if len(msg.headers.get_all(name)) > 1:
            raise SipParseError(f"repeated {name}")
    for name in ("From", "To"):
        if len(msg.headers.get_all(name)) > 1:
            raise SipParseError(f"repeated {name}")
        NameAddr.parse(msg.headers.get(name) or "")
    for v in msg.headers.get_all("Via"):
        Via.parse(v)
    cseq = CSeq.parse(msg.headers.get("CSeq") or "")
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError("CSeq method does not match the request method")
        msg.max_forwards()


class StreamFramer:
    """Incremental Content-Length framer for TCP/TLS (s18.3), fed bytes, drained of messages.

    A framing error (a missing or bad Content-Length, an oversized message) is raised from
    :meth:`next_message`; the connection cannot be resynchronised after it and must be closed.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buf = bytearray()
        self.keepalives = 0  # RFC 5626 CRLF pings seen

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > 2 * self.limits.max_message:
            raise SipParseError("stream buffer overflow", 513)

    def next_message(self) -> Request | Response | None:
        """The next whole message, or None until more bytes arrive."""
        frame = self.next_frame()
        return None if frame is None else parse_message(frame, self.limits, stream=True)

    def next_frame(self) -> bytes | None:
        """The next whole message's bytes, unparsed (None until more bytes arrive): a message that
        frames but does not parse leaves the stream in step, so it can be answered (400) instead."""
        buf = self._buf
        skipped = 0
        while skipped < len(buf) and buf[skipped] in (0x0D, 0x0A):
            skipped += 1
        if skipped:
            self.keepalives += buf.count(b"\r\n\r\n", 0, skipped) or 1
            del buf[:skipped]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.limits.max_message:
                raise SipParseError("header block too large", 513)
            return None
        head = bytes(buf[: end + 4])
        length = 0
        for line in _lines(head[:end], self.limits)[1:]:
            name, colon, value = line.partition(":")
            if colon and canonical_name(name.strip()) == "Content-Length":
                if not value.strip().isdigit():
                    raise SipParseError("bad Content-Length")
                length = int(value.strip())
                break
        else:
            raise SipParseError("Content-Length is mandatory on stream transports")
        total = end + 4 + length
        if total > self.limits.max_message:
            raise SipParseError("message too large", 513)
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        return frame


def serialize(msg: SipMessage) -> bytes:
    """Wire bytes of ``msg``; Content-Length is set from the body (s20.14)."""
    if isinstance(msg, Request):
        start = f"{msg.method} {msg.uri} SIP/2.0"
    elif isinstance(msg, Response):
        start = f"SIP/2.0 {msg.status} {msg.reason}"
    else:
        raise TypeError(f"not a SIP message: {msg!r}")
    parts = [start]
    parts.extend(f"{n}: {v}" for n, v in msg.headers if n != "Content-Length")
    parts.append(f"Content-Length: {len(msg.body)}")
    return ("\r\n".join(parts) + "\r\n\r\n").encode() + msg.body
