"""A stateless SIP proxy (RFC 3261 s16.11): the zone gateway's ``--sip-port`` in front of the media nodes.

Trunks and phones need one address for the whole zone. Each new dialog (INVITE, OPTIONS ... without
a To tag) goes to the least-loaded media node that runs SIP (a REGISTER to the node its address of
record hashes to, so refreshes meet their binding); the proxy pushes its Via
(s16.6 step 8) and, on an INVITE, a Record-Route naming itself and the chosen node
(``<sip:GW:PORT;lr;tmnode=N>``, s16.6 step 4), so every later request of the dialog comes back
through the proxy with that Route (s12.2.1.1) and is forwarded to the same node, in either direction,
without any dialog state here. Responses pop our top Via and go to the next one (s16.7 step 3,
``received``/``rport`` of RFC 3581).

Stateless (s16.11): the branch of our Via is a hash of the incoming request's top Via branch and
sent-by (or, for an RFC 2543 client without the magic cookie, of the fields s16.11 lists), so a
retransmission gets the same branch, and a CANCEL or the ACK of a non-2xx final response the
branch of their INVITE. The only memory is a soft one: which node each branch went to, for a
transaction's lifetime (64*T1 = 32 s, bounded), so retransmissions, the CANCEL and the non-2xx ACK
reach the node that has the INVITE even when the load reports moved in between.

TCP (s18) on the same port: the driver frames each connection's stream by Content-Length
(parser.StreamFramer) and hands the frames here with the connection's peer as ``source``. A request
that came over TCP goes on to the media node over TCP as well (the node's SIP driver listens on TCP
on its SIP port; a node that does not gets UDP), and our Via names the transport we send over
(s18.2.1), so the node answers on the connection the driver holds to it. Responses go by Via
(s16.7 step 3): a ``SIP/2.0/TCP`` next Via means the caller's connection, which the stamped
``received``/``rport`` name (s18.2.2; over TCP we stamp ``rport`` even when the caller did not ask,
as only the connection's source port finds it again). A caller's TCP connection is also named in our
Record-Route (``transport=tcp``, so its in-dialog requests come over TCP, and ``tmflow=IP~PORT``, a
flow token in the manner of RFC 5626 s5.3), so a media node's request toward the caller (its BYE)
goes back on that connection, or on a new one to the Request-URI when it is gone (s18.1.1).

Sans-IO: fed datagrams or TCP frames, their source, the zone's SIP nodes and ``now``; drained of
:class:`ProxyDatagram` (bytes, destination, transport: the driver owns the sockets).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .message import (
    BRANCH_COOKIE,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    make_response,
    response_address,
    stamp_received,
)
from .parser import parse_message, serialize

__all__ = ["FLOW_PARAM", "NODE_PARAM", "TCP", "UDP", "ProxyDatagram", "SipNode", "StatelessProxy"]

Address = tuple[str, int]
#: The Record-Route / Route URI parameter naming the media node of a dialog.
NODE_PARAM = "tmnode"
#: The Record-Route URI parameter naming a TCP caller's connection (``IP~PORT``).
FLOW_PARAM = "tmflow"
UDP = "udp"
TCP = "tcp"
#: s17.1.1.2 Timer B = 64*T1: how long a branch's node choice is remembered.
CHOICE_TTL = 32.0
MAX_CHOICES = 65536
DEFAULT_MAX_FORWARDS = 70  # s16.6 step 3
RETRY_AFTER = 5  # seconds, on a 503 when no media node runs SIP
BRANCH_PREFIX = BRANCH_COOKIE + "-tmp-"
PREFIX = "sip_proxy_"


@dataclass(frozen=True, slots=True)
class SipNode:
    """A media node's SIP listener from its load report; ``accepting`` = healthy, takes new dialogs."""

    node: int
    address: Address
    accepting: bool = True
    tcp: bool = True  # the node's SIP driver takes TCP on the same port (runtime/sip_listener.py does)


@dataclass(frozen=True, slots=True)
class ProxyDatagram:
    """One message out. UDP: a datagram to ``destination``. TCP: written on the connection whose peer is
    ``destination``; when there is none, on a new connection to ``connect`` (s18.1.1, s18.2.2)."""

    data: bytes
    destination: Address
    transport: str = UDP
    connect: Address | None = None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _parse_flow(value: str | None) -> Address | None:
    """``IP~PORT`` of our Record-Route's ``tmflow``, or None (absent or not ours)."""
    host, tilde, port = (value or "").rpartition("~")
    if not tilde or not port.isdigit() or not 0 < int(port) < 65536 or not _is_ip(host):
        return None
    return host.strip("[]"), int(port)


def _registrar_of(req: Request, nodes: Sequence[SipNode]) -> SipNode | None:
    """REGISTER goes by its address of record (To, s10.2), not by load: bindings live on one node, so
    every refresh of an AOR must reach the same one. Rendezvous hashing keeps that without state
    and moves only the AORs of a node that leaves."""
    accepting = [n for n in nodes if n.accepting]
    if not accepting:
        return None
    aor = SipUri.parse(req.to().uri)
    key = f"{aor.user or ''}@{aor.host.lower()}"
    return max(accepting, key=lambda n: (_digest("aor", key, str(n.node)), n.node))


def branch_key(request: Request, top: Via) -> str:
    """s16.11: the same value for retransmissions, and for a CANCEL or non-2xx ACK as for their INVITE."""
    branch = top.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        return _digest("3261", branch, top.host, str(top.port))
    # RFC 2543 clients: To tag, From tag, Call-ID, Request-URI, top Via and CSeq number.
    return _digest("2543", request.to().tag or "", request.from_().tag or "", request.call_id(), request.uri,
                   str(top), str(request.cseq().seq))  # fmt: skip


class StatelessProxy:
    """The proxy core; ``host``/``port`` are its own address, written in Via and Record-Route."""

    def __init__(
        self, host: str, port: int, counters: dict[str, int] | None = None, max_choices: int = MAX_CHOICES
    ) -> None:
        self.host = host
        self.port = port
        self.max_choices = max_choices
        self._out: deque[ProxyDatagram] = deque()
        self._choices: dict[str, tuple[int, float]] = {}  # branch key -> (node, expires), oldest first
        #: ``sip_proxy_<what>`` counters, in the gateway's own dict when given (its /metrics).
        self.counters: dict[str, int] = counters if counters is not None else {}
        for what in ("requests", "responses", "new_dialogs", "in_dialog", "toward_caller", "bad", "too_many_hops",
                     "no_node", "unknown_dialog", "stray_responses", "loops", "not_an_ip", "tcp_in",
                     "tcp_out"):  # fmt: skip
            self.counters.setdefault(PREFIX + what, 0)

    # ---- input ---------------------------------------------------------------------------------

    def handle_datagram(self, now: float, data: bytes, source: Address, nodes: Sequence[SipNode]) -> None:
        """One datagram from ``source``; ``nodes`` are the zone's SIP nodes, best (least loaded) first."""
        self._handle(now, data, source, nodes, UDP)

    def handle_stream_frame(self, now: float, frame: bytes, source: Address, nodes: Sequence[SipNode]) -> None:
        """One Content-Length framed message (parser.StreamFramer.next_frame) from the TCP connection
        whose peer is ``source`` (s18.3)."""
        self.counters[PREFIX + "tcp_in"] += 1
        self._handle(now, frame, source, nodes, TCP)

    def _handle(self, now: float, data: bytes, source: Address, nodes: Sequence[SipNode], transport: str) -> None:
        if not data.strip(b"\r\n"):
            return  # s7.5 / RFC 5626 keep-alive
        try:
            msg = parse_message(data, stream=transport == TCP)
        except SipParseError as exc:
            self.counters[PREFIX + "bad"] += 1
            self._reject_unparsable(data, source, exc, transport)
            return
        if isinstance(msg, Response):
            self._response(msg)
            return
        try:
            self._request(now, msg, source, nodes, transport)
        except SipParseError as exc:
            self.counters[PREFIX + "bad"] += 1
            self._reply(msg, source, exc.status, exc.reason, transport)

    def poll_transmit(self) -> ProxyDatagram | None:
        return self._out.popleft() if self._out else None

    # ---- requests (s16.3 - s16.6) --------------------------------------------------------------

    def _request(self, now: float, req: Request, source: Address, nodes: Sequence[SipNode], transport: str) -> None:
        self.counters[PREFIX + "requests"] += 1
        top = req.top_via()
        if top.branch is not None and top.branch.startswith(BRANCH_PREFIX) and self._is_us(top.host, top.port):
            self.counters[PREFIX + "loops"] += 1  # s16.3 step 4: our own request came back
            self._reply(req, source, 482, "Loop Detected", transport)
            return
        key = branch_key(req, top)
        if transport == TCP and "rport" not in top.params:
            # Only the connection's source port finds the caller again (s18.2.2): stamp it (below).
            top.params["rport"] = None
            req.headers.replace_first("Via", str(top))
        stamp_received(req, source)
        hops = req.max_forwards()
        if hops is None:
            hops = DEFAULT_MAX_FORWARDS
        if hops <= 0:
            self.counters[PREFIX + "too_many_hops"] += 1
            self._reply(req, source, 483, "Too Many Hops", transport)
            return
        to_tag = req.to().tag
        by_id = {n.node: n for n in nodes}
        routed = self._pop_our_route(req)
        destination: Address
        connect: Address | None = None
        if routed is not None:
            node = by_id.get(routed[0])
            if node is None:
                self.counters[PREFIX + "unknown_dialog"] += 1
                self._reply(req, source, 481, f"media node {routed[0]} of this dialog is gone", transport)
                return
            if source == node.address:
                self.counters[PREFIX + "toward_caller"] += 1
                destination, out, connect = self._next_hop_outward(req, routed[1])
            else:
                self.counters[PREFIX + "in_dialog"] += 1
                destination, out = node.address, self._toward_node(node, transport)
        else:
            chosen = self._choice(now, key, by_id)
            if chosen is None and (to_tag is None or req.method == "CANCEL"):
                chosen = _registrar_of(req, nodes) if req.method == "REGISTER" else None
                chosen = chosen or next((n for n in nodes if n.accepting), None)
                if chosen is None:
                    self.counters[PREFIX + "no_node"] += 1
                    self._reply(req, source, 503, "No media node of this zone takes SIP", transport, retry_after=True)
                    return
                self.counters[PREFIX + "new_dialogs"] += 1
            if chosen is None:
                self.counters[PREFIX + "unknown_dialog"] += 1
                self._reply(req, source, 481, "in-dialog request without this proxy's Route (Record-Route ignored?)",
                            transport)  # fmt: skip
                return
            self._remember(now, key, chosen.node)
            destination, out = chosen.address, self._toward_node(chosen, transport)
            if req.method == "INVITE" and to_tag is None:
                # s16.6 step 4: stay on the path; the node is named so later requests need no state here,
                # and a TCP caller's connection so the node's requests toward it find it (RFC 5626 s5.3).
                flow = f";transport=tcp;{FLOW_PARAM}={source[0]}~{source[1]}" if transport == TCP else ""
                req.headers.insert("Record-Route", f"<sip:{self._hostport()};lr;{NODE_PARAM}={chosen.node}{flow}>")
        if not _is_ip(destination[0]):
            # No DNS here (a blocking look-up would stall the gateway): next hops are IP addresses.
            self.counters[PREFIX + "not_an_ip"] += 1
            self._reply(req, source, 502, "next hop is not an IP address (no DNS on this proxy)", transport)
            return
        req.headers.set("Max-Forwards", str(hops - 1))  # s16.6 step 3
        # s18.2.1 / s16.6 step 8: our Via names the transport this request leaves over.
        via = Via(out.upper(), self.host, self.port, {"branch": BRANCH_PREFIX + key, "rport": None})
        req.headers.insert("Via", str(via))
        self._send(serialize(req), destination, out, connect or destination)

    @staticmethod
    def _toward_node(node: SipNode, transport: str) -> str:
        """A TCP caller's request goes on over TCP when the node takes it (else UDP; our Via says which)."""
        return TCP if transport == TCP and node.tcp else UDP

    def _send(self, data: bytes, destination: Address, transport: str, connect: Address | None = None) -> None:
        if transport == TCP:
            self.counters[PREFIX + "tcp_out"] += 1
            self._out.append(ProxyDatagram(data, destination, TCP, connect or destination))
        else:
            self._out.append(ProxyDatagram(data, destination))

    def _pop_our_route(self, req: Request) -> tuple[int, dict[str, str | None]] | None:
        """s16.4: a top Route naming us is removed; its ``tmnode`` is the dialog's media node (returned
        with the Route URI's parameters)."""
        routes = req.headers.get_all("Route")
        if not routes:
            return None
        uri = SipUri.parse(NameAddr.parse(routes[0]).uri)
        if not self._is_us(uri.host, uri.port):
            raise SipParseError("Route does not name this proxy (it relays only to the zone's media nodes)", 403)
        value = uri.params.get(NODE_PARAM)
        if value is None or not value.isdigit() or len(value) > 9:
            raise SipParseError(f"Route names this proxy without a valid {NODE_PARAM}")
        req.headers.remove("Route")
        for rest in routes[1:]:
            req.headers.add("Route", rest)
        return int(value), uri.params

    def _next_hop_outward(self, req: Request, ours: dict[str, str | None]) -> tuple[Address, str, Address | None]:
        """A node's request toward the caller: the next Route, else the Request-URI (s16.6 step 6-7), over
        TCP when the caller came over TCP (our Route says so) or the target asks for it (``transport=tcp``);
        then on the caller's connection (``tmflow``) while it lasts, else a new one to the target."""
        route = req.headers.get("Route")
        uri = SipUri.parse(NameAddr.parse(route).uri if route is not None else req.uri)
        host = (uri.params.get("maddr") or uri.host).strip("[]")
        target = (host, uri.port if uri.port is not None else 5060)
        tcp = (ours.get("transport") or "").lower() == TCP or (uri.params.get("transport") or "").lower() == TCP
        if not tcp:
            return target, UDP, None
        flow = _parse_flow(ours.get(FLOW_PARAM))  # the previous hop's connection, whichever hop that is
        return flow or target, TCP, target

    def _choice(self, now: float, key: str, by_id: dict[int, SipNode]) -> SipNode | None:
        found = self._choices.get(key)
        if found is None:
            return None
        node, expires = found
        if expires < now:
            del self._choices[key]
            return None
        return by_id.get(node)

    def _remember(self, now: float, key: str, node: int) -> None:
        self._choices.pop(key, None)
        self._choices[key] = (node, now + CHOICE_TTL)
        while len(self._choices) > self.max_choices or (self._choices and next(iter(self._choices.values()))[1] < now):
            del self._choices[next(iter(self._choices))]

    # ---- responses (s16.7) ---------------------------------------------------------------------

    def _response(self, resp: Response) -> None:
        self.counters[PREFIX + "responses"] += 1
        vias = resp.headers.get_all("Via")
        try:
            top = Via.parse(vias[0]) if vias else None
            nxt = Via.parse(vias[1]) if len(vias) > 1 else None
        except SipParseError:
            top = nxt = None
        ours = top is not None and (top.branch or "").startswith(BRANCH_PREFIX) and self._is_us(top.host, top.port)
        if not ours or nxt is None or nxt.transport not in ("UDP", "TCP"):
            self.counters[PREFIX + "stray_responses"] += 1  # s16.7 step 3 / s18.1.2: not ours, dropped
            return
        destination = response_address(nxt)
        if not _is_ip(destination[0]):
            self.counters[PREFIX + "not_an_ip"] += 1
            return
        resp.headers.remove("Via")
        for v in vias[1:]:
            resp.headers.add("Via", v)
        if nxt.transport == "TCP":
            # s18.2.2: the connection the request came on (received/rport), else a new one to received
            # and the sent-by port.
            self._send(serialize(resp), destination, TCP, (destination[0], nxt.sent_by[1]))
        else:
            self._send(serialize(resp), destination, UDP)

    # ---- helpers -------------------------------------------------------------------------------

    def _hostport(self) -> str:
        return f"{f'[{self.host}]' if ':' in self.host else self.host}:{self.port}"

    def _is_us(self, host: str, port: int | None) -> bool:
        return host.strip("[]") == self.host and (port if port is not None else 5060) == self.port

    def _reply(
        self, req: Request, source: Address, status: int, reason: str, transport: str, retry_after: bool = False
    ) -> None:
        """A stateless reply (s8.2.7): ACK is never answered; the To tag is derived, not random."""
        if req.method == "ACK" or not req.headers.get_all("Via"):
            return
        try:
            top = Via.parse(req.headers.get_all("Via")[0])
            tag = _digest("tag", req.headers.get("Call-ID") or "", top.branch or "")[:12]
            resp = make_response(req, status, reason, to_tag=tag)
        except SipParseError:
            return
        if retry_after:
            resp.headers.add("Retry-After", str(RETRY_AFTER))
        if transport == TCP:
            self._send(serialize(resp), source, TCP)  # s18.2.2: on the connection it came on
            return
        destination = response_address(top, source)
        if not _is_ip(destination[0]):
            destination = source  # an unstamped Via naming a host: answer where the request came from
        self._send(serialize(resp), destination, UDP)

    def _reject_unparsable(self, data: bytes, source: Address, exc: SipParseError, transport: str) -> None:
        """400 (or the status the parser names) with the reason, when the request is readable enough."""
        try:
            msg = parse_message(data, validate=False)
        except SipParseError:
            return
        if isinstance(msg, Request):
            self._reply(msg, source, exc.status, exc.reason, transport)
