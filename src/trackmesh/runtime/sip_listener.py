"""The node's SIP driver: UDP and TCP on ``--sip-port`` around the sans-IO stack.

- One :class:`~trackmesh.transports.sip.transaction.TransactionLayer` and one
  :class:`~trackmesh.transports.sip.uas.CallControl` for the UDP socket and every TCP
  connection (RFC 3261 s18: the same port; over TCP a response goes back on its connection,
  messages are framed by Content-Length with :class:`~trackmesh.transports.sip.parser.StreamFramer`).
- Which room (transports/sip/auth.py): a ``sip`` token (``POST /token/sip``) in the Request-URI's
  user part (``sip:<token>@host``) or an ``X-Trackmesh-Token`` header, or digest credentials
  (the username and password ``POST /token/sip`` also answers); the grant's room is the room, its
  peer the peer (``sip-<caller's user>`` when it names none). No credentials: 401; bad ones: 403.
- Media lives on the room's worker (runtime/sip_media.py), reached by the node's worker calls
  like every HTTP request; a worker that ends a call (no RTP) is polled once a second and the
  call gets its BYE here.
- One timer for the layer and the calls; no await and no logging per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol, cast

import httpx

from trackmesh.config import NodeConfig
from trackmesh.errors import RemoteProtocolError
from trackmesh.rpc import RpcError, WorkerHandle
from trackmesh.security.keys import sip_digest_key
from trackmesh.security.tokens import TokenError, verify_for_app
from trackmesh.transports.sip.auth import TOKEN_HEADER, USERNAME_PREFIX, CallAuthenticator, Denied, Grant
from trackmesh.transports.sip.digest import DigestError, Verdict, parse_credentials
from trackmesh.transports.sip.message import Request, SipUri, new_tag
from trackmesh.transports.sip.parser import StreamFramer
from trackmesh.transports.sip.registration import UpstreamRegistration
from trackmesh.transports.sip.transaction import TransactionLayer
from trackmesh.transports.sip.uac import Dialer
from trackmesh.transports.sip.uas import (
    Action,
    AnswerMedia,
    AuthorizeCall,
    AuthorizeRegister,
    CallControl,
    CloseMedia,
    OpenMedia,
    Pending,
    ReofferMedia,
    UpdateMedia,
    register_expires,
)

log = logging.getLogger("trackmesh.sip")

Address = tuple[str, int]
REALM = "trackmesh"
HOOK_TIMEOUT = 2.0  # a hook that does not answer in time: the call is refused (480), others go on
ENDED_POLL = 1.0
WAIT_PEERS_POLL = 0.25  # WaitOtherPeers: how often the room is looked at while the caller rings
WAIT_PEERS_TIMEOUT = 120.0  # then 480 (below the INVITE guard's 180 s, transaction.py)
MAX_TCP_CONNECTIONS = 1000


class SipHost(Protocol):
    """What the listener needs of its node (runtime/node.py's Node)."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def workers(self) -> Sequence[WorkerHandle]: ...

    def worker_for_room(self, room: str) -> WorkerHandle: ...

    def token_key_of(self, app: str) -> bytes | None: ...


class SipListener(asyncio.DatagramProtocol):
    def __init__(self, node: SipHost, host: str, port: int) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.layer = TransactionLayer()
        self.auth = CallAuthenticator(
            sip_digest_key(node.config.secret), REALM, self._verify_token, algorithms=node.config.sip_digest_algorithms
        )
        self.control = CallControl(self.layer, self._authorize, host=host, port=port, min_se=node.config.sip_min_se)
        self.dialer = Dialer(self.control)
        self.upstream: UpstreamRegistration | None = None  # --sip-register, made in start() (our port)
        dial_hook = self.control.event_hook

        def event_hook(now: float, event: Any) -> bool:
            if self.upstream is not None and self.upstream.handle_event(now, event):
                return True
            return dial_hook is not None and dial_hook(now, event)

        self.control.event_hook = event_hook
        self.connections: dict[Address, _TcpConnection] = {}
        self.counters: dict[str, int] = {
            "udp_rx": 0, "tcp_rx": 0, "tcp_framing_errors": 0, "tcp_connect_failures": 0, "media_errors": 0,
            "hook_calls": 0, "hook_failures": 0,
        }  # fmt: skip
        self.hook_url = node.config.sip_hook_url
        self._hook_client: httpx.AsyncClient | None = None  # one connection pool for every hook call
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connecting: dict[Address, list[bytes]] = {}  # TCP connects of ours in progress: queued bytes
        self._loop = asyncio.get_running_loop()

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = self._loop
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        self._udp = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        self.control.port = self.port
        try:
            self._tcp = await loop.create_server(lambda: _TcpConnection(self), self.host, self.port)
        except OSError:
            transport.close()
            raise
        self._poller = loop.create_task(self._poll_ended())
        account = self.node.config.sip_register
        if account is not None:
            # The Contact's user: unguessable (an HMAC of the account under the app secret's SIP key), so
            # only the upstream, which learnt it from our REGISTER, routes calls to the account's room.
            mac = hmac.new(sip_digest_key(self.node.config.secret), f"upstream:{account.aor}".encode(), hashlib.sha256)
            self.upstream = UpstreamRegistration(
                self.layer, account, (account.host.strip("[]"), account.port), "tmr-" + mac.hexdigest()[:32],
                self.control.hostport,
            )  # fmt: skip
            self.upstream.start(time.monotonic())
            self._drain(time.monotonic())
            log.info("sip registering upstream", extra={"fields": {"aor": account.aor, "room": account.room}})
        log.info("sip listening", extra={"fields": {"udp_tcp": f"{self.host}:{self.port}"}})

    async def close(self) -> None:
        now = time.monotonic()
        for call in list(self.control.calls.values()):
            self.control.hang_up(now, call.id, "server shutting down")
        if self.upstream is not None:
            self.upstream.stop(now)  # Expires: 0, so the upstream stops routing calls here
        self._drain(now)
        await asyncio.sleep(0.05)  # let the BYEs and CloseMedia calls leave
        if self._poller is not None:
            self._poller.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._hook_client is not None:
            await self._hook_client.aclose()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for conn in list(self.connections.values()):
                conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)

    def stats(self) -> dict[str, Any]:
        return {
            "calls": len(self.control.calls),
            **self.control.counters,
            **self.auth.counters,
            **{f"dialout_{k}": v for k, v in self.dialer.counters.items()},
            "dialling": len(self.dialer.calling),
            "registrations": len(self.control.registrations),
            **self._upstream_stats(),
            **self.counters,
            "parse_errors": self.layer.parse_errors,
            "retransmissions": self.layer.retransmissions,
        }

    def _upstream_stats(self) -> dict[str, Any]:
        up = self.upstream
        if up is None:
            return {}
        return {
            "upstream_registered": int(up.registered), "upstream_status": up.last_status,
            "upstream_expires": up.granted, **{f"upstream_{k}": v for k, v in up.counters.items()},
        }  # fmt: skip

    # ---- authorization -------------------------------------------------------------------------

    def _verify_token(self, token: str, wallclock: int) -> Grant | str:
        try:
            claims = verify_for_app(self.node.token_key_of, token, "sip", wallclock)
        except TokenError as exc:
            return str(exc)
        if claims.room is None:
            return "the token names no room"
        return Grant(claims.room, claims.peer, record=claims.record, app=claims.app)

    def _authorize(self, now: float, req: Request) -> Grant | Denied | Pending:
        up = self.upstream
        if up is not None and up.account.room is not None and req.method == "INVITE":
            user = req.uri.split(":", 1)[-1].split("@", 1)[0] if "@" in req.uri else ""
            if hmac.compare_digest(user.encode(), up.contact_user.encode()):
                return Grant(up.account.room, None)  # routed by the upstream to our registered Contact
        if self.hook_url is None or req.method not in ("INVITE", "REGISTER") or self._ours(req):
            return self.auth.authorize(now, int(time.time()), req)
        return Pending()  # the hooks decide (AuthorizeCall, AuthorizeRegister)

    @staticmethod
    def _ours(req: Request) -> bool:
        """The request carries our token or our derived digest credentials (not the hook's)."""
        if req.headers.get(TOKEN_HEADER) is not None:
            return True
        user = req.uri.split(":", 1)[-1].split("@", 1)[0] if "@" in req.uri else ""
        if user.count(".") == 2 and len(user) > 40:
            return True
        header = req.headers.get("Authorization") or ""
        return f'username="{USERNAME_PREFIX}' in header

    async def _post_hook(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST URL/<path>; the JSON answer, or None (no answer in HOOK_TIMEOUT, an error status)."""
        assert self.hook_url is not None
        if self._hook_client is None:
            self._hook_client = httpx.AsyncClient(timeout=HOOK_TIMEOUT, trust_env=False)
        url = self.hook_url.rstrip("/") + "/" + path
        try:
            resp = await self._hook_client.post(url, json=body)
            answer = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            answer = None
        self.counters["hook_calls"] += 1
        if not isinstance(answer, dict):
            self.counters["hook_failures"] += 1
            return None
        return answer

    async def _hook_digest(self, req: Request, creds: Any, session_id: str) -> Denied | None:
        """URL/auth's HA1 checks the digest response (None: it matched)."""
        answer = await self._post_hook(
            "auth", {"username": creds.username, "realm": creds.realm, "session_id": session_id}
        )
        if answer is None:
            return Denied(480, "Temporarily Unavailable (the auth hook did not answer)")
        ha1 = answer.get("ha1") if answer.get("success") is True else None
        verdict = self.auth.digest.check(
            time.monotonic(), req.method, req.uri, creds, ha1 if isinstance(ha1, str) else None
        )
        if verdict is Verdict.STALE:
            return self.auth.challenge(time.monotonic(), stale=True)
        if verdict is not Verdict.OK:
            return Denied(403, "Forbidden")
        return None

    async def _register_verdict(self, action: AuthorizeRegister) -> tuple[Grant | Denied, str]:
        """atm0s 0.1's REGISTER: digest against URL/auth's HA1, then URL/register (or URL/unregister
        for Expires 0) with the binding's session id, which POST /sip/invite/client names."""
        req = action.request
        header = req.headers.get("Authorization")
        if header is None:
            return self.auth.challenge(time.monotonic()), ""
        try:
            creds = parse_credentials(header)
        except DigestError:
            return Denied(400, "Bad Request (malformed Authorization)"), ""
        old = self.control.registrations.get(creds.username)
        session_id = old.session_id if old is not None else new_tag()
        refused = await self._hook_digest(req, creds, session_id)
        if refused is not None:
            return refused, ""
        removal = register_expires(req)[1] == 0
        body = {"username": creds.username, "realm": creds.realm, "session_id": session_id}
        answer = await self._post_hook("unregister" if removal else "register", body)
        if answer is None:
            return Denied(480, "Temporarily Unavailable (the register hook did not answer)"), ""
        if answer.get("success") is not True and not removal:
            return Denied(403, "Forbidden"), ""
        return Grant("", None, username=creds.username), session_id

    async def _hook_verdict(self, action: AuthorizeCall) -> Grant | Denied:
        """atm0s 0.1's flow: digest credentials are checked against the HA1 of URL/auth, then
        URL/invite names the room (or refuses); a hook that fails refuses the call."""
        req = action.request
        username = None
        header = req.headers.get("Authorization")
        if header is not None:
            try:
                creds = parse_credentials(header)
            except DigestError:
                return Denied(400, "Bad Request (malformed Authorization)")
            refused = await self._hook_digest(req, creds, action.call)
            if refused is not None:
                return refused
            username = creds.username
        to_user = req.uri.split(":", 1)[-1].split("@", 1)[0] if "@" in req.uri else ""
        from_uri = req.from_().uri
        from_user = from_uri.split(":", 1)[-1].split("@", 1)[0] if "@" in from_uri else ""
        answer = await self._post_hook(
            "invite",
            {"source": action.source[0], "username": username, "from_number": from_user, "to_number": to_user,
             "conn_id": action.call},
        )  # fmt: skip
        if answer is None:
            return Denied(480, "Temporarily Unavailable (the invite hook did not answer)")
        strategy = answer.get("strategy")
        room = answer.get("room_id")
        if strategy in ("Accept", "WaitOtherPeers") and isinstance(room, str) and room:
            return Grant(room, None, wait_for_peers=strategy == "WaitOtherPeers")
        if strategy == "Reject":
            return Denied(603, "Decline")
        if username is None and header is None:
            return self.auth.challenge(time.monotonic())  # unknown to the hook: maybe with credentials
        return Denied(403, "Forbidden")

    # ---- input ---------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        self.counters["udp_rx"] += 1
        self.layer.handle_datagram(now, data, (addr[0], addr[1]))
        self._drain(now)

    def on_stream_message(self, msg: Any, peer: Address) -> None:
        now = time.monotonic()
        self.counters["tcp_rx"] += 1
        if isinstance(msg, Request):
            self.layer.handle_request(now, msg, peer, reliable=True)
        else:
            self.layer.handle_response(now, msg, peer)
        self._drain(now)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.monotonic()
        self.layer.handle_timeout(now)
        self.control.handle_timeout(now)
        if self.upstream is not None:
            self.upstream.handle_timeout(now)
        self._drain(now)

    # ---- output --------------------------------------------------------------------------------

    def _drain(self, now: float) -> None:
        layer, control = self.layer, self.control
        for _ in range(1000):
            event = layer.poll_event()
            if event is None:
                break
            source = getattr(event, "source", None)
            control.handle_event(now, event, reliable=source in self.connections)
        while (action := control.poll_action()) is not None:
            self._start_action(action)
        while (tx := layer.poll_transmit()) is not None:
            if tx.reliable:
                conn = self.connections.get(tx.destination)
                if conn is not None:
                    conn.write(tx.data)
                else:
                    self._connect_and_send(tx.destination, tx.data)
            elif self._udp is not None:
                self._udp.sendto(tx.data, tx.destination)
        upstream = self.upstream.next_deadline() if self.upstream is not None else None
        deadlines = [d for d in (layer.next_deadline(), control.next_deadline(), upstream) if d is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            delay = max(0.0, min(deadlines) - now)
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _connect_and_send(self, destination: Address, data: bytes) -> None:
        """A request of ours over TCP to where we hold no connection (a TCP dial-out, s18.1.1): connect,
        then send what queued meanwhile. A failed connect is counted; the transaction times out."""
        queued = self._connecting.get(destination)
        if queued is not None:
            queued.append(data)
            return
        if len(self.connections) + len(self._connecting) >= MAX_TCP_CONNECTIONS:
            self.counters["tcp_connect_failures"] += 1
            return
        self._connecting[destination] = [data]

        async def connect() -> None:
            try:
                _, conn = await asyncio.wait_for(
                    self._loop.create_connection(lambda: _TcpConnection(self), destination[0], destination[1]), 5.0
                )
            except (TimeoutError, OSError):
                self.counters["tcp_connect_failures"] += 1
                self._connecting.pop(destination, None)
                return
            for chunk in self._connecting.pop(destination, []):
                conn.write(chunk)
            # Keyed by the address we dialled (the peername is the same unless it is IPv6-mapped).
            self.connections.setdefault(destination, conn)

        task = self._loop.create_task(connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_action(self, action: Action) -> None:
        task = self._loop.create_task(self._run_action(action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_action(self, action: Action) -> None:
        control = self.control
        if isinstance(action, AuthorizeCall):
            verdict = await self._hook_verdict(action)
            control.authorized(time.monotonic(), action.call, verdict)
            self._drain(time.monotonic())
            return
        if isinstance(action, AuthorizeRegister):
            decided, session_id = await self._register_verdict(action)
            control.register_decided(
                time.monotonic(), action.request, action.source, action.reliable, decided, session_id
            )
            self._drain(time.monotonic())
            return
        try:
            worker = self.node.worker_for_room(action.room)
        except RpcError as exc:
            worker = None
            error = exc
        if isinstance(action, OpenMedia):
            try:
                if worker is None:
                    raise error
                params = {"room": action.room, "peer": action.peer, "offer": action.offer, "call_id": action.call,
                          "record": action.record, "app": action.app}  # fmt: skip
                if action.offer:
                    res = await worker.call("sip.open", params)
                else:  # a delayed offer (RFC 3261 s13.2.1): our offer goes in the 200
                    res = await worker.call("sip.offer", {**params, "inbound": True})
            except RpcError as exc:
                self.counters["media_errors"] += 1
                control.media_failed(time.monotonic(), action.call, exc.status, exc.message[:100])
            else:
                session = int(res["session"])
                sdp = str(res["answer"] if action.offer else res["offer"])
                if not action.wait_for_peers or await self._wait_for_peers(worker, action.call, session):
                    control.media_opened(time.monotonic(), action.call, session, sdp)
        elif isinstance(action, UpdateMedia):
            try:
                if worker is None:
                    raise error
                res = await worker.call("sip.update", {"session": action.session, "offer": action.offer})
            except RpcError as exc:
                control.update_failed(time.monotonic(), action.call, exc.status, exc.message[:100])
            else:
                control.update_answered(time.monotonic(), action.call, str(res["answer"]))
        elif isinstance(action, ReofferMedia):
            try:
                if worker is None:
                    raise error
                res = await worker.call("sip.reoffer", {"session": action.session})
            except RpcError as exc:
                control.update_failed(time.monotonic(), action.call, exc.status, exc.message[:100])
            else:
                control.update_answered(time.monotonic(), action.call, str(res["offer"]))
        elif isinstance(action, AnswerMedia):
            try:
                if worker is None:
                    raise error
                res = await worker.call("sip.answer", {"session": action.session, "answer": action.answer})
            except RpcError as exc:
                self.counters["media_errors"] += 1
                call = self.control.calls.get(action.call)
                if call is not None:
                    call.session = None  # the worker dropped it already
                self.control.hang_up(time.monotonic(), action.call, f"media: {exc.message[:80]}")
            else:
                control.answer_applied(action.call, str(res.get("sdp") or ""))
        elif isinstance(action, CloseMedia) and worker is not None:
            with contextlib.suppress(RpcError):
                await worker.call("sip.close", {"session": action.session, "reason": action.reason})
        self._drain(time.monotonic())

    async def _wait_for_peers(self, worker: WorkerHandle, call_id: str, session: int) -> bool:
        """WaitOtherPeers: the caller is in the room and hears 180 Ringing until another peer is there
        (then True: answer it) or WAIT_PEERS_TIMEOUT passes (480). A CANCEL meanwhile: True, and
        media_opened closes the media of the cancelled call."""
        deadline = time.monotonic() + WAIT_PEERS_TIMEOUT
        while time.monotonic() < deadline:
            call = self.control.calls.get(call_id)
            if call is None:
                break
            if call.cancelled:
                return True
            try:
                res = await worker.call("sip.waiting", {"session": session})
            except RpcError:
                break
            if int(res.get("others", 0)) > 0:
                return True
            await asyncio.sleep(WAIT_PEERS_POLL)
        with contextlib.suppress(RpcError):
            await worker.call("sip.close", {"session": session, "reason": "nobody else joined"})
        self.control.media_failed(time.monotonic(), call_id, 480, "Temporarily Unavailable (nobody else joined)")
        return False

    # ---- dial-out (POST /api/sip/calls) -----------------------------------------------------------

    async def dial(
        self, room: str, peer: str, to: str, from_user: str, credentials: tuple[str, str] | None
    ) -> dict[str, Any]:
        """Call ``to`` (a sip: URI with an IP address and port) into ``room``; RpcError on bad input."""
        try:
            uri = SipUri.parse(to)
        except RemoteProtocolError as exc:
            raise RpcError(400, f"'to' is not a SIP URI: {exc}") from None
        if uri.scheme != "sip":
            raise RpcError(400, "'to' must be a sip: URI (sips/TLS is not supported)")
        transport = (uri.params.get("transport") or "udp").lower()
        if transport not in ("udp", "tcp"):
            raise RpcError(400, "dial-out goes over UDP or TCP (transport=udp|tcp; TLS is not supported)")
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            raise RpcError(400, "'to' must name an IP address (no DNS/SRV look-up)") from None
        return await self._dial_to(room, peer, str(uri), (uri.host.strip("[]"), uri.port or 5060), from_user,
                                   credentials, reliable=transport == "tcp")  # fmt: skip

    async def dial_registered(self, room: str, session_id: str, from_user: str) -> dict[str, Any]:
        """Call the softphone whose REGISTER binding has ``session_id`` (atm0s 0.1's
        POST /sip/invite/client): its Contact as the Request-URI, sent to where its REGISTER came from
        when the Contact names another address (a phone behind NAT is reachable there, RFC 3581),
        else to the Contact."""
        binding = self.control.registration_by_session(session_id)
        if binding is None or binding.expires_at <= time.monotonic():
            raise RpcError(404, "no softphone registered with that session id")
        user = binding.contact.split(":", 1)[-1].split("@", 1)[0] if "@" in binding.contact else "phone"
        peer = binding.peer or "sip-" + ("".join(ch for ch in user if ch.isalnum() or ch in "-_.+")[:64] or "phone")
        destination = binding.source
        with contextlib.suppress(RemoteProtocolError, ValueError):
            contact = SipUri.parse(binding.contact)
            if contact.host.strip("[]") == binding.source[0]:
                # Not behind a NAT: the Contact's port (it may listen elsewhere than it sent from).
                destination = (binding.source[0], contact.port or 5060)
        # Registered over TCP: over its connection while it lasts (s18.2.2; where a phone behind NAT
        # can be reached), else a new connection to the Contact.
        if binding.reliable and binding.source in self.connections:
            destination = binding.source
        res = await self._dial_to(room, peer, binding.contact, destination, from_user, None, reliable=binding.reliable)
        return {**res, "peer": peer}

    async def _dial_to(
        self, room: str, peer: str, target: str, destination: Address, from_user: str,
        credentials: tuple[str, str] | None, *, reliable: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        worker = self.node.worker_for_room(room)
        res = await worker.call("sip.offer", {"room": room, "peer": peer})
        now = time.monotonic()
        call_id = self.dialer.dial(
            now, room=room, peer=peer, session=int(res["session"]), offer=str(res["offer"]), target=target,
            destination=destination, from_user=from_user, credentials=credentials, reliable=reliable,
        )  # fmt: skip
        self._drain(now)
        return {"session": int(res["session"]), "call_id": call_id}

    def hang_up_session(self, session: int) -> bool:
        """End the call of ``session``: BYE once answered, CANCEL while a dial-out rings."""
        now = time.monotonic()
        call = self.control.call_for_session(session)
        done = False
        if call is not None:
            self.control.hang_up(now, call.id, "ended by the API")
            done = True
        else:
            out = next((o for o in self.dialer.calling.values() if o.session == session), None)
            done = out is not None and self.dialer.cancel(now, out.call_id)
        self._drain(now)
        return done

    async def _poll_ended(self) -> None:
        while True:
            await asyncio.sleep(ENDED_POLL)
            if not self.control.calls:
                continue
            for worker in list(self.node.workers):
                try:
                    res = await worker.call("sip.ended", {})
                except RpcError:
                    continue
                now = time.monotonic()
                for session, reason in res.get("ended", []):
                    call = self.control.call_for_session(int(session))
                    if call is not None:
                        call.session = None  # the worker closed the media already
                        self.control.hang_up(now, call.id, str(reason))
                self._drain(time.monotonic())


class _TcpConnection(asyncio.Protocol):
    """One TCP connection: bytes -> StreamFramer -> the shared transaction layer."""

    def __init__(self, listener: SipListener) -> None:
        self.listener = listener
        self.framer = StreamFramer()
        self.peer: Address = ("", 0)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.listener.connections) >= MAX_TCP_CONNECTIONS:
            transport.close()
            return
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = (host, port)
        self.listener.connections[self.peer] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.listener.connections.get(self.peer) is self:
            del self.listener.connections[self.peer]

    def data_received(self, data: bytes) -> None:
        try:
            self.framer.feed(data)
            while (msg := self.framer.next_message()) is not None:
                self.listener.on_stream_message(msg, self.peer)
        except RemoteProtocolError:
            # A stream cannot resynchronise after a framing error (s18.3): close it.
            self.listener.counters["tcp_framing_errors"] += 1
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
