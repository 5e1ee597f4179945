"""SIP dialogs (RFC 3261 s12): identity, sequence numbers, route set, remote target.

A :class:`Dialog` is created by the UAS from the INVITE and its response (s12.1.1) or by the
UAC from its INVITE and a 1xx/2xx with a To tag (s12.1.2). It builds in-dialog requests
(s12.2.1.1: CSeq, loose or strict routing over the route set, tags) and checks incoming ones
(s12.2.2: CSeq order, target refresh). It holds no timers and sends nothing: the caller puts
the requests it builds through the transaction layer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from trackmesh.errors import LocalProtocolError, RemoteProtocolError
from trackmesh.transports.sip.message import (
    Headers,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
)

__all__ = ["Dialog", "DialogId", "dialog_id_for_request"]

#: (Call-ID, local tag, remote tag), s12: the identity of a dialog at one UA.
DialogId = tuple[str, str, str]

#: Methods whose requests (and 2xx) refresh the remote target (s12.2, RFC 3311 s5.1 UPDATE).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


def dialog_id_for_request(request: Request) -> DialogId:
    """The dialog an incoming request belongs to, seen by its recipient (To tag is ours)."""
    return request.call_id(), request.to().tag or "", request.from_().tag or ""


def _contact_uri(msg: Request | Response) -> str | None:
    value = msg.headers.get("Contact")
    return NameAddr.parse(value).uri if value else None


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # the From of our requests, as name-addr without tag
    remote_uri: str  # the To of our requests
    remote_target: str  # the peer's Contact URI: the Request-URI of our requests
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0  # the next request gets local_seq + 1
    remote_seq: int | None = None
    confirmed: bool = False  # False while early (a 1xx created it)
    secure: bool = False

    @property
    def id(self) -> DialogId:
        return self.call_id, self.local_tag, self.remote_tag

    @classmethod
    def as_uas(cls, request: Request, response: Response) -> Dialog:
        """s12.1.1: from a request we answered with ``response`` (which carries our To tag)."""
        target = _contact_uri(request)
        local_tag = response.to().tag
        if target is None:
            raise SipParseError("dialog-creating request without Contact")
        if not local_tag:
            raise LocalProtocolError("the response must carry our To tag")
        to, frm = request.to(), request.from_()
        return cls(
            call_id=request.call_id(),
            local_tag=local_tag,
            remote_tag=frm.tag or "",
            local_uri=str(NameAddr(to.uri, to.display)),
            remote_uri=str(NameAddr(frm.uri, frm.display)),
            remote_target=target,
            route_set=list(request.headers.get_all("Record-Route")),  # in order (s12.1.1)
            local_seq=0,
            remote_seq=request.cseq().seq,
            confirmed=200 <= response.status < 300,
            secure=request.uri.lower().startswith("sips:"),
        )

    @classmethod
    def as_uac(cls, request: Request, response: Response) -> Dialog:
        """s12.1.2: from our request and a 101-299 response carrying the peer's To tag."""
        remote_tag = response.to().tag
        if not remote_tag:
            raise SipParseError("dialog-creating response without a To tag")
        target = _contact_uri(response)
        if target is None:
            raise SipParseError("dialog-creating response without Contact")
        to, frm = request.to(), request.from_()
        return cls(
            call_id=request.call_id(),
            local_tag=frm.tag or "",
            remote_tag=remote_tag,
            local_uri=str(NameAddr(frm.uri, frm.display)),
            remote_uri=str(NameAddr(to.uri, to.display)),
            remote_target=target,
            route_set=list(reversed(response.headers.get_all("Record-Route"))),  # reversed (s12.1.2)
            local_seq=request.cseq().seq,
            remote_seq=None,
            confirmed=200 <= response.status < 300,
            secure=request.uri.lower().startswith("sips:"),
        )

    def create_request(
        self, method: str, via: str, *, cseq: int | None = None, body: bytes = b"", headers: Headers | None = None
    ) -> Request:
        """s12.2.1.1: an in-dialog request. ``via`` is the full Via value with a fresh branch
        (the transport layer knows our sent-by). ACK and CANCEL pass the INVITE's ``cseq``."""
        if method in ("ACK", "CANCEL"):
            if cseq is None:
                raise LocalProtocolError(f"{method} reuses the INVITE's CSeq number")
            seq = cseq
        else:
            self.local_seq = self.local_seq + 1 if cseq is None else cseq
            seq = self.local_seq
        uri, routes = self._routing()
        h = Headers()
        h.add("Via", via)
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", f"{self.local_uri};tag={self.local_tag}")
        h.add("To", f"{self.remote_uri};tag={self.remote_tag}")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{seq} {method}")
        for name, value in headers or ():
            h.add(name, value)
        return Request(method, uri, h, body)

    def next_hop(self, fallback: tuple[str, int]) -> tuple[str, int]:
        """Where our in-dialog requests go (s12.2.1.1, s8.1.2): the first route of the route set, else
        the remote target; ``fallback`` when that URI names no IP address (we do no DNS look-up)."""
        uri = NameAddr.parse(self.route_set[0]).uri if self.route_set else self.remote_target
        try:
            parsed = SipUri.parse(uri)
            host = parsed.host.strip("[]")
            ipaddress.ip_address(host)
        except (RemoteProtocolError, ValueError):
            return fallback
        return host, parsed.port or 5060

    def _routing(self) -> tuple[str, list[str]]:
        """Request-URI and Route values: loose routing if the first route has ``lr`` (s16.12)."""
        if not self.route_set:
            return self.remote_target, []
        first = NameAddr.parse(self.route_set[0]).uri
        if "lr" in SipUri.parse(first).params:
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 2543): its URI becomes the Request-URI, without parameters not
        # allowed there (s19.1.1 table: maddr, ttl, transport, lr stay; method does not).
        uri = SipUri.parse(first)
        uri.params.pop("method", None)
        uri.headers = ""
        return str(uri), [*self.route_set[1:], f"<{self.remote_target}>"]

    def handle_request(self, request: Request) -> int | None:
        """s12.2.2: check and absorb an in-dialog request; a status to answer with if it is
        out of order (500), else None. Target refresh requests update the remote target."""
        seq = request.cseq().seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and seq < self.remote_seq:
                return 500  # s12.2.2: lower than the last one is out of order
            self.remote_seq = seq
        if request.method in TARGET_REFRESH and (target := _contact_uri(request)) is not None:
            self.remote_target = target
        return None

    def handle_response(self, request: Request, response: Response) -> None:
        """A response to our in-dialog request: a 2xx confirms the dialog and a 2xx to a
        target refresh request updates the remote target (s12.2.1.2)."""
        if 200 <= response.status < 300:
            self.confirmed = True
            if request.method in TARGET_REFRESH and (target := _contact_uri(response)) is not None:
                self.remote_target = target
