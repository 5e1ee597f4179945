"""HTTP connection guard: slow clients, too many connections from one address, oversized heads.

uvicorn (h11) has a keep-alive timeout but no header or body timeout: a client that trickles its
request head one byte at a time, or its body, holds a connection forever (slowloris), and nothing
caps how many connections one address holds. This protocol is uvicorn's h11 protocol plus, per
connection, the deadlines of a reverse proxy (nginx's ``client_header_timeout``,
``client_body_timeout``, ``limit_conn``, ``lingering_close``):

- the request head must be complete ``header_timeout`` seconds after the connection opens or after
  the previous response (a trickled head gets 408 and the connection closes; a connection that sent
  nothing is closed without an answer);
- the request body must be complete ``body_timeout`` seconds after its head (408, or a plain close
  when the application already answered);
- one address holds at most ``max_per_ip`` connections; more get 503 and are closed;
- a head larger than h11's bound gets 414 (request line) or 431 (header fields) instead of a bare 400;
- every refusal is written, then the connection lingers: our side shuts down writing, reads and
  discards what the client still sends (bounded in bytes and time), then closes. Closing with
  unread data would make the kernel answer with a reset, and the client would never read the
  answer (Python's urllib saw "Connection reset by peer" on a 4 MiB body refused with 413).
  A body the application refused but the client keeps sending is discarded the same way, up to
  ``linger_bytes``.

It relies on uvicorn's h11 protocol class (``uvicorn.protocols.http.h11_impl``); the node always
selects it explicitly, so httptools being installed changes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import h11

from .server import ClientLoggingH11Protocol

__all__ = ["ConnectionGuard", "HttpLimits", "guarded_protocol"]

#: Longest request line (method, target, version) accepted: longer gets 414 (RFC 9110 s15.5.15).
MAX_REQUEST_LINE = 8 * 1024
#: Most header fields in one request: more get 431 (RFC 6585 s5).
MAX_HEADER_FIELDS = 100


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_per_ip: int = 128
    #: Largest request head (request line and header fields) in bytes (h11's incomplete-event bound).
    max_head_bytes: int = 16 * 1024
    #: How long, and how many bytes, a refused connection is drained before it is closed.
    linger_seconds: float = 5.0
    linger_bytes: int = 8 * 1024 * 1024


_COUNTERS = (
    "http_header_timeouts",
    "http_body_timeouts",
    "http_connections_refused_per_ip",
    "http_head_too_large",
    "http_uri_too_long",
    "http_lingered_bytes",
)


@dataclass
class ConnectionGuard:
    """State shared by every connection of one server: limits, live connections per address, counters."""

    limits: HttpLimits
    counters: dict[str, int] = field(default_factory=dict)
    per_ip: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _COUNTERS:
            self.counters.setdefault(name, 0)


def _raw_response(status: int, reason: str, text: str) -> bytes:
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _HintedConnection(h11.Connection):
    """h11's connection, remembering the status its last protocol error suggests (431 for a head
    over the size bound, RFC 6585 s5), and refusing heads h11 takes whole when they arrive in one
    read: h11 bounds only a head still incomplete, so a large one in one segment passes."""

    error_status_hint = 400

    def __init__(self, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_head_bytes)
        self.max_head_bytes = max_head_bytes

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status_hint = exc.error_status_hint
            raise
        if isinstance(event, h11.Request):
            if len(event.target) > MAX_REQUEST_LINE:
                self.error_status_hint = 414
                raise h11.RemoteProtocolError("request target too long", 414)
            size = sum(len(name) + len(value) + 4 for name, value in event.headers)
            if len(event.headers) > MAX_HEADER_FIELDS or size > self.max_head_bytes:
                self.error_status_hint = 431
                raise h11.RemoteProtocolError("request head too large", 431)
        return event


class _LingeringTransport:
    """The transport uvicorn sees: ``close()`` lingers while the client is still sending its body
    (uvicorn closes right after a response that carries ``connection: close``, which every urllib
    request asks for). Everything else is the real transport's."""

    def __init__(self, raw: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self._raw = raw
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_gracefully()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._raw.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class GuardedH11Protocol(ClientLoggingH11Protocol):
    """See the module docstring. ``guard`` is set on the subclass :func:`guarded_protocol` makes."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _HintedConnection(self.guard.limits.max_head_bytes)
        self._ip: str | None = None
        self._phase: object = None  # h11 state of the client the running deadline is for
        self._deadline: asyncio.TimerHandle | None = None
        self._line_done = False  # the current request line is complete (saw CRLF)
        self._line_bytes = 0
        self._raw: asyncio.Transport | None = None
        self.lingering = False
        self._linger_left = 0
        self._after_response = 0  # body bytes discarded after the application answered

    # ---- connection lifetime ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        guard = self.guard
        ip = self.client[0] if self.client else None
        if ip is not None:
            count = guard.per_ip.get(ip, 0) + 1
            guard.per_ip[ip] = count
            self._ip = ip
            if count > guard.limits.max_per_ip:
                guard.counters["http_connections_refused_per_ip"] += 1
                self._refuse(503, "Service Unavailable", f"too many connections from {ip}")
                return
        self._rearm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._ip is not None:
            left = self.guard.per_ip.get(self._ip, 1) - 1
            if left > 0:
                self.guard.per_ip[self._ip] = left
            else:
                self.guard.per_ip.pop(self._ip, None)
            self._ip = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._drain(len(data))
            return
        their = self.conn.their_state
        if their is h11.IDLE and not self._line_done:
            end = data.find(b"\r\n")
            self._line_done = end >= 0
            self._line_bytes += end if end >= 0 else len(data)
        elif their is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
            # The application answered without reading the whole body: uvicorn discards the
            # rest as it comes, but only up to a bound.
            self._after_response += len(data)
            if self._after_response > self.guard.limits.linger_bytes:
                self.guard.counters["http_lingered_bytes"] += self._after_response
                self._close_now()
                return
        super().data_received(data)
        self._rearm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._rearm()

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request head: 414 or 431 when it was too large, else 400 (with the reason)."""
        hint = getattr(self.conn, "error_status_hint", 400)
        if hint == 414 or (hint == 431 and (not self._line_done or self._line_bytes > MAX_REQUEST_LINE)):
            self.guard.counters["http_uri_too_long"] += 1
            self._refuse(414, "URI Too Long", f"request line longer than {MAX_REQUEST_LINE} bytes")
        elif hint == 431:
            self.guard.counters["http_head_too_large"] += 1
            limit = self.guard.limits.max_head_bytes
            text = f"request head larger than {limit} bytes or over {MAX_HEADER_FIELDS} header fields"
            self._refuse(431, "Request Header Fields Too Large", text)
        else:
            self._refuse(400, "Bad Request", msg)

    # ---- deadlines --------------------------------------------------------------------------

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _rearm(self) -> None:
        """Start the deadline of the phase the client is in, when it changed: the head (IDLE), the
        body (SEND_BODY); none once the request is in (the application's time is its own)."""
        if self.lingering or self.transport is None or self.transport.is_closing():
            return
        phase = self.conn.their_state
        if phase is self._phase:
            return
        self._phase = phase
        self._cancel()
        limits = self.guard.limits
        if phase is h11.IDLE:
            self._line_done = False
            self._line_bytes = 0
            self._after_response = 0
            self._deadline = self.loop.call_later(limits.header_timeout, self._on_deadline, phase)
        elif phase is h11.SEND_BODY:
            self._deadline = self.loop.call_later(limits.body_timeout, self._on_deadline, phase)

    def _on_deadline(self, phase: object) -> None:
        self._deadline = None
        if self.lingering or self.transport.is_closing() or self.conn.their_state is not phase:
            return
        if phase is h11.IDLE:
            self.guard.counters["http_header_timeouts"] += 1
            if self._line_bytes == 0 and not self._line_done:
                # Not one byte of a request: an idle keep-alive connection (uvicorn's keep-alive
                # timeout normally closes it first) or a browser's preconnect. Closed without a
                # 408, which a client could take for the answer to a request it sends right then.
                self._close_now()
                return
            self._refuse(
                408, "Request Timeout", f"request head not received within {self.guard.limits.header_timeout:g} s"
            )
            return
        self.guard.counters["http_body_timeouts"] += 1
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The application is waiting for the rest of the body: it gets a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(
                408, "Request Timeout", f"request body not received within {self.guard.limits.body_timeout:g} s"
            )
        else:
            self._close_now()

    # ---- refusing -----------------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, text: str) -> None:
        """Write a final response, stop writing, then drain what the client still sends (bounded)."""
        self._cancel()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(_raw_response(status, reason, text))
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._linger()

    def _close_now(self) -> None:
        if self._raw is not None:
            self._raw.close()

    def close_gracefully(self) -> None:
        """uvicorn closes: at once when the client sent its whole request, else after draining."""
        if self.lingering or self._raw is None or self._raw.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:
            self._linger()
        else:
            self._raw.close()

    def _linger(self) -> None:
        """Stop writing (FIN), read and discard what the client still sends, close when it is done,
        after ``linger_bytes`` or after ``linger_seconds`` (nginx's lingering close)."""
        raw = self._raw
        assert raw is not None
        self._cancel()
        self.lingering = True
        self._linger_left = self.guard.limits.linger_bytes
        if raw.can_write_eof():
            raw.write_eof()
        # uvicorn may have paused reading (a large body queued): draining needs it on.
        raw.resume_reading()
        self._deadline = self.loop.call_later(self.guard.limits.linger_seconds, raw.close)

    def _drain(self, n: int) -> None:
        self.guard.counters["http_lingered_bytes"] += n
        self._linger_left -= n
        if self._linger_left < 0 and self._raw is not None:
            self._raw.close()

    def eof_received(self) -> None:
        if self.lingering and self._raw is not None:
            self._raw.close()  # the client finished sending: nothing more to drain
            return
        super().eof_received()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` bound to ``guard``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})
