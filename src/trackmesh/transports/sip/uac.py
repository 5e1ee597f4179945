"""Rooms dial out: the user agent client side of a call (RFC 3261 s8.1, s13.2, s9.1).

:class:`Dialer` sends our INVITE (the offer comes from the media side, made before dialling),
follows its responses and, on a 2xx, ACKs it (s13.2.2.4, outside the transaction), builds the
dialog and hands the call to :class:`~.uas.CallControl`, which from then on treats it like an
inbound call (BYE both ways, re-INVITE/UPDATE from the far end, session timers); the media side is
told the answer (:class:`AnswerMedia`). A 401/407 is answered once with the credentials given for
the call (:class:`~.digest.DigestClient`); any other final response, or Timer B, ends the attempt
and closes its media (:class:`~.uas.CloseMedia`). :meth:`Dialer.cancel` sends CANCEL (s9.1) while
no final response has come. Reliable provisional responses (RFC 3262: ``Require: 100rel`` with an
``RSeq``; our INVITE says ``Supported: 100rel``) are PRACKed in their early dialog, once per RSeq.
Sans-IO: fed events and ``now``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from trackmesh.errors import RemoteProtocolError

from .dialog import Dialog
from .digest import DigestClient, DigestError
from .message import Headers, Request, Response, new_branch, new_tag
from .transaction import Event, ResponseReceived, TransactionTimeout
from .uas import AnswerMedia, Call, CallControl, CloseMedia

__all__ = ["Dialer", "OutgoingCall"]


def _option_tags(values: list[str]) -> set[str]:
    """The option tags of Require/Supported header values (comma lists, RFC 3261 s20.32)."""
    return {tag.strip().lower() for value in values for tag in value.split(",") if tag.strip()}

Address = tuple[str, int]


@dataclass(eq=False)
class OutgoingCall:
    call_id: str
    from_tag: str
    room: str
    peer: str
    session: int
    offer: str
    target: str  # the Request-URI
    destination: Address
    invite: Request
    key: tuple[str, ...]
    credentials: tuple[str, str] | None = None
    auth_tried: bool = False
    cancelled: bool = False
    status: int | None = None  # the final response, once there is one
    reliable: bool = False  # over TCP (the driver opens the connection to ``destination``)
    statuses: list[int] = field(default_factory=list)
    # RFC 3262: the early dialogs PRACKed (by the far end's To tag), the last RSeq acknowledged in
    # each, and the highest CSeq a PRACK took (the confirmed dialog's next request goes above it).
    early: dict[str, Dialog] = field(default_factory=dict)
    rseq: dict[str, int] = field(default_factory=dict)
    prack_seq: int = 0


class Dialer:
    """Our outgoing INVITEs until their final response; then the call belongs to ``control``."""

    def __init__(self, control: CallControl) -> None:
        self.control = control
        self.layer = control.layer
        self.calling: dict[tuple[str, ...], OutgoingCall] = {}
        self.finished: dict[str, OutgoingCall] = {}  # by Call-ID, the latest few (for the API)
        self.counters = {"dialled": 0, "answered": 0, "failed": 0, "cancelled": 0, "pracks": 0, "bad_rseq": 0}
        self.pracks: set[tuple[str, ...]] = set()  # our PRACK transactions, whose responses are ours
        control.event_hook = self.handle_event

    def handle_event(self, now: float, event: Event) -> bool:
        """CallControl's hook: True when the event was one of our dial-outs' INVITE transactions."""
        if isinstance(event, ResponseReceived):
            if event.key is not None and event.key in self.pracks:
                if event.response.status >= 200:
                    self.pracks.discard(event.key)
                return True
            return self.handle_response(now, event)
        if isinstance(event, TransactionTimeout):
            if event.key in self.pracks:
                self.pracks.discard(event.key)  # the INVITE's own outcome decides the call
                return True
            return self.handle_timeout(event)
        return False

    def dial(
        self,
        now: float,
        *,
        room: str,
        peer: str,
        session: int,
        offer: str,
        target: str,
        destination: Address,
        from_user: str = "trackmesh",
        credentials: tuple[str, str] | None = None,
        reliable: bool = False,
    ) -> str:
        """Send the INVITE (over TCP when ``reliable``); the Call-ID names the call."""
        call_id = f"{secrets.token_hex(8)}@trackmesh"
        from_tag = new_tag()
        invite = self._invite(call_id, from_tag, from_user, target, offer, 1, None, reliable)
        key = self.layer.send_request(now, invite, destination, reliable=reliable)
        out = OutgoingCall(call_id, from_tag, room, peer, session, offer, target, destination, invite, key, credentials)
        out.reliable = reliable
        self.calling[key] = out
        self.counters["dialled"] += 1
        return call_id

    def _invite(
        self,
        call_id: str,
        from_tag: str,
        from_user: str,
        target: str,
        offer: str,
        cseq: int,
        auth: tuple[str, str] | None,
        reliable: bool = False,
    ) -> Request:
        c = self.control
        h = Headers()
        h.add("Via", f"SIP/2.0/{'TCP' if reliable else 'UDP'} {c.hostport};branch={new_branch()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{from_user}@{c.hostport}>;tag={from_tag}")
        h.add("To", f"<{target}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} INVITE")
        # Over TCP the far end's requests come back over TCP too (s8.1.1.8, s18.1.1).
        h.add("Contact", f"<sip:trackmesh@{c.hostport}{';transport=tcp' if reliable else ''}>")
        h.add("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, PRACK")
        h.add("Supported", "100rel")
        if auth is not None:
            h.add(auth[0], auth[1])
        h.add("Content-Type", "application/sdp")
        return Request("INVITE", target, h, offer.encode())

    def cancel(self, now: float, call_id: str) -> bool:
        """CANCEL a call still ringing (s9.1): same Request-URI, Call-ID, From, To, CSeq number and
        Via branch as the INVITE. The INVITE's 487 then ends the attempt."""
        for out in self.calling.values():
            if out.call_id == call_id and not out.cancelled:
                inv = out.invite
                h = Headers()
                h.add("Via", inv.headers.get("Via") or "")
                h.add("Max-Forwards", "70")
                for name in ("From", "To", "Call-ID"):
                    h.add(name, inv.headers.get(name) or "")
                h.add("CSeq", f"{inv.cseq().seq} CANCEL")
                self.layer.send_request(now, Request("CANCEL", inv.uri, h), out.destination, reliable=out.reliable)
                out.cancelled = True
                self.counters["cancelled"] += 1
                return True
        return False

    def handle_response(self, now: float, event: ResponseReceived) -> bool:
        """True when the response was one of our dial-outs' (the caller then ignores it)."""
        resp = event.response
        if event.key is None:
            return False  # a 2xx retransmission: CallControl re-sends the ACK of known calls
        out = self.calling.get(event.key)
        if out is None:
            return False
        out.statuses.append(resp.status)
        if resp.status < 200:
            if resp.status > 100 and "100rel" in _option_tags(resp.headers.get_all("Require")):
                self._prack(now, out, resp)
            return True
        del self.calling[event.key]
        if resp.status < 300:
            self._answered(now, out, resp)
            return True
        if resp.status in (401, 407) and out.credentials is not None and not out.auth_tried and not out.cancelled:
            header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
            try:
                challenge = DigestClient.choose(resp.headers.get_all(header))
            except DigestError:
                challenge = None
            if challenge is not None:
                client = DigestClient(*out.credentials)
                value = client.authorize(challenge, "INVITE", out.target, secrets.token_hex(8))
                name = "Authorization" if resp.status == 401 else "Proxy-Authorization"
                from_user = out.invite.from_().uri.split(":", 1)[1].split("@", 1)[0]
                seq = out.invite.cseq().seq + 1
                out.invite = self._invite(
                    out.call_id, out.from_tag, from_user, out.target, out.offer, seq, (name, value), out.reliable
                )
                out.key = self.layer.send_request(now, out.invite, out.destination, reliable=out.reliable)
                out.auth_tried = True
                self.calling[out.key] = out
                return True
        self._failed(out, resp.status)
        return True

    def _prack(self, now: float, out: OutgoingCall, resp: Response) -> None:
        """RFC 3262 s4: PRACK a reliable provisional response in its early dialog, with
        ``RAck: <RSeq> <INVITE CSeq> INVITE``. A retransmission (an RSeq already acknowledged) gets no
        new PRACK: our PRACK's own transaction retransmits until the far end answers it."""
        try:
            rseq = int((resp.headers.get("RSeq") or "").strip())
        except ValueError:
            rseq = -1
        tag = resp.to().tag
        if not 1 <= rseq < 2**32 or not tag:
            self.counters["bad_rseq"] += 1
            return
        last = out.rseq.get(tag)
        if last is not None and rseq != last + 1:
            return  # s4: not one higher than the last: a retransmission or out of order, no PRACK
        dialog = out.early.get(tag)
        if dialog is None:
            try:
                dialog = Dialog.as_uac(out.invite, resp)
            except RemoteProtocolError:
                self.counters["bad_rseq"] += 1
                return
            dialog.local_seq = max(dialog.local_seq, out.prack_seq)
            out.early[tag] = dialog
        out.rseq[tag] = rseq
        rack = Headers()
        rack.add("RAck", f"{rseq} {out.invite.cseq().seq} INVITE")
        prack = dialog.create_request("PRACK", self.control.via(out.reliable), headers=rack)
        out.prack_seq = max(out.prack_seq, dialog.local_seq)
        key = self.layer.send_request(now, prack, dialog.next_hop(out.destination), reliable=out.reliable)
        self.pracks.add(key)
        self.counters["pracks"] += 1

    def handle_timeout(self, event: TransactionTimeout) -> bool:
        out = self.calling.pop(event.key, None)
        if out is None:
            return False
        self._failed(out, 408)
        return True

    def _failed(self, out: OutgoingCall, status: int) -> None:
        out.status = status
        self.counters["failed"] += 1
        self._finish(out)
        self.control.push_action(CloseMedia(out.call_id, out.room, out.session, f"the far end answered {status}"))

    def _finish(self, out: OutgoingCall) -> None:
        self.finished[out.call_id] = out
        while len(self.finished) > 1000:
            del self.finished[next(iter(self.finished))]

    def _answered(self, now: float, out: OutgoingCall, resp: Response) -> None:
        out.status = resp.status
        try:
            dialog = Dialog.as_uac(out.invite, resp)
        except RemoteProtocolError:
            self._failed(out, 502)  # a 2xx without To tag or Contact: nothing to talk to
            return
        control = self.control
        # After PRACKs in the early dialog, the confirmed dialog's next request (a BYE, a re-INVITE)
        # takes a CSeq above theirs (RFC 3261 s12.2.1.1: in-dialog CSeq numbers only go up).
        dialog.local_seq = max(dialog.local_seq, out.prack_seq)
        ack = dialog.create_request("ACK", control.via(out.reliable), cseq=out.invite.cseq().seq)
        # The ACK and every later request of the dialog: through the proxies that Record-Routed, else
        # to the far end's Contact (a proxy that stayed off the path would refuse them, s16.12).
        # Over TCP: on the connection the INVITE went over (the driver opens one to a new hop).
        hop = dialog.next_hop(out.destination)
        self.layer.send_stateless(ack, hop, reliable=out.reliable)
        call = Call(
            f"{out.call_id};{dialog.remote_tag}", out.invite, out.key, hop, out.reliable, out.room, out.peer,
            dialog.local_tag, state="confirmed", session=out.session, dialog=dialog, sdp=out.offer.encode(),
            outgoing=True,
        )  # fmt: skip
        control.calls[call.id] = call
        self.counters["answered"] += 1
        self._finish(out)
        control.push_action(AnswerMedia(call.id, out.room, out.session, resp.body.decode("utf-8", "replace")))
