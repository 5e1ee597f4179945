"""Builders for the sipp XML scenarios of the SIP end-to-end tests.

Each builder returns one element of a scenario as XML text (two-space indented, one line or block
per element); ``scenario`` wraps them. A test then says only what is special about its scenario:
the headers it adds, the SDP it offers, the checks it makes of what it receives.

The message text follows sipp's conventions (its ``[keywords]`` are filled in at run time): lines
end in ``\\n`` (sipp sends CRLF), a message with a body says ``Content-Length: [len]`` (sipp counts
it), one without says ``Content-Length: 0``. sipp trims blank lines around a message's text
(``clean_cdata`` in its scenario.cpp), so a message ends with its last line.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

#: The Request-URI of a call: sipp's -s service at the remote address.
SERVICE_URI = "sip:[service]@[remote_ip]:[remote_port]"
#: sipp's usual From tag (its built-in uac's).
CALLER_TAG = "[pid]SIPpTag00[call_number]"
#: What a UAS echoes from the request it answers (RFC 3261 s8.2.6.2).
ECHOED = ("[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]", "[last_CSeq:]")

Codec = tuple[int, str]
PCMU: Codec = (0, "PCMU/8000")
PCMA: Codec = (8, "PCMA/8000")
TELEPHONE_EVENT: Codec = (101, "telephone-event/8000")


def _attr(value: str) -> str:
    return escape(value, {'"': "&quot;"})


def _attrs(**attrs: str | int | bool | None) -> str:
    """`` name="value"`` for each attribute given (None and False are left out), in order."""
    out = ""
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        out += f' {name}="{"true" if value is True else _attr(str(value))}"'
    return out


def sdp_audio(
    *codecs: Codec,
    session_id: int = 53655765,
    version: int = 2353687637,
    port: str = "[media_port]",
    connection: str = "IP[media_ip_type] [media_ip]",
    fmtp: Sequence[str] = (),
    direction: str | None = None,
) -> str:
    """One audio m-line offering ``codecs`` (payload type, rtpmap) in order (RFC 4566 s5); ``version``
    is the o-line's, to raise in each new offer of the session (RFC 3264 s8); ``port``
    ``[auto_media_port]`` where sipp plays a pcap; ``fmtp`` lines as ``"101 0-15"``."""
    lines = [
        "v=0",
        f"o=user1 {session_id} {version} IN IP[local_ip_type] [local_ip]",
        "s=-",
        f"c=IN {connection}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt, _ in codecs)}",
        *(f"a=rtpmap:{pt} {name}" for pt, name in codecs),
        *(f"a=fmtp:{line}" for line in fmtp),
    ]
    if direction is not None:
        lines.append(f"a={direction}")
    return "\n".join(lines) + "\n"


def _message(first_line: str, headers: Sequence[str], sdp: str | None) -> str:
    if sdp is None:
        return "\n".join([first_line, *headers, "Content-Length: 0"]) + "\n"
    head = [first_line, *headers, "Content-Type: application/sdp", "Content-Length: [len]"]
    return "\n".join(head) + "\n\n" + sdp


def _send(text: str, **attrs: str | int | bool | None) -> str:
    return f"  <send{_attrs(**attrs)}><![CDATA[\n{text}]]></send>\n"


def request(
    method: str,
    *,
    cseq: int,
    user: str = "sipp",
    uri: str = SERVICE_URI,
    to: str = f"<{SERVICE_URI}>",
    in_dialog: bool = False,
    from_: str | None = None,
    from_tag: str = CALLER_TAG,
    display: str = "sipp ",
    contact: str | bool = True,
    branch: str = "[branch]",
    rport: bool = False,
    route_set: bool = False,
    rack: str | None = None,
    authentication: bool = False,
    expires: int | None = None,
    headers: Sequence[str] = (),
    sdp: str | None = None,
    retrans: int | None = 500,
    start_txn: str | None = None,
    ack_txn: str | None = None,
) -> str:
    """A ``<send>`` of a request from sipp as a UAC (RFC 3261 s8.1.1), headers in this order:
    Via, the route set, From, To, Call-ID, CSeq, RAck, Contact, sipp's ``[authentication]``,
    Expires, Max-Forwards, then ``headers``, then the body's.

    ``user`` names the caller in From and Contact (``from_`` replaces the whole From; ``contact``
    False leaves Contact out, a string replaces it). ``in_dialog`` adds the remote tag sipp learnt
    (``[peer_tag_param]``) to To; ``route_set`` sends it along the Record-Route sipp kept from
    ``rrs`` (``[next_url]``, ``[routes]``: RFC 3261 s12.2.1.1). ``branch`` ``[branch-N]`` reuses the
    branch of the message N before (a CANCEL's, s9.1). An ACK is never retransmitted by itself
    (s17.1.1.3): ``retrans`` does not apply to it."""
    if method == "ACK":
        retrans = None
    if route_set:
        uri = "[next_url]"
    lines = [f"Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={branch}{';rport' if rport else ''}"]
    if route_set:
        lines.append("[routes]")
    lines += [
        f"From: {from_ or f'{display}<sip:{user}@[local_ip]:[local_port]>;tag={from_tag}'}",
        f"To: {to}{'[peer_tag_param]' if in_dialog else ''}",
        "Call-ID: [call_id]",
        f"CSeq: {cseq} {method}",
    ]
    if rack is not None:
        lines.append(f"RAck: {rack}")
    if contact is True:
        lines.append(f"Contact: <sip:{user}@[local_ip]:[local_port]>")
    elif contact:
        lines.append(f"Contact: {contact}")
    if authentication:
        lines.append("[authentication]")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += ["Max-Forwards: 70", *headers]
    text = _message(f"{method} {uri} SIP/2.0", lines, sdp)
    return _send(text, retrans=retrans, start_txn=start_txn, ack_txn=ack_txn)


def register(
    user: str,
    *,
    cseq: int,
    contact: str,
    domain: str = "[remote_ip]",
    authentication: bool = False,
    rport: bool = False,
) -> str:
    """A REGISTER of ``sip:user@domain`` (RFC 3261 s10.2) binding ``contact`` for 60 s; with
    ``authentication`` the credentials sipp computed from the 401 it received (``auth="true"``)."""
    aor = f"<sip:{user}@{domain}>"
    return request(
        "REGISTER", cseq=cseq, uri="sip:[remote_ip]:[remote_port]", from_=f"{aor};tag=r[call_number]", to=aor,
        contact=contact, authentication=authentication, expires=60, rport=rport,
    )  # fmt: skip


def response(
    status: str,
    *,
    echoed: Sequence[str] = ECHOED,
    to_tag: str | None = None,
    headers: Sequence[str] = (),
    sdp: str | None = None,
    retrans: int | None = None,
) -> str:
    """A ``<send>`` of a response from sipp as a UAS: ``status`` (``"200 OK"``), the dialog's headers
    ``echoed`` from the request (RFC 3261 s8.2.6.2), To with ``to_tag`` (sipp's own tag, on the first
    response of a dialog), then ``headers`` and the body's."""
    lines = list(echoed)
    if to_tag is not None:
        lines = [f"{line};tag={to_tag}" if line == "[last_To:]" else line for line in lines]
    return _send(_message(f"SIP/2.0 {status}", [*lines, *headers], sdp), retrans=retrans)


def check(regexp: str, var: str, *, search_in: str = "msg", header: str | None = None) -> str:
    """An ``<ereg>`` that fails the call unless ``regexp`` matches (``check_it``), in the whole
    message, its ``body`` or (``search_in="hdr"``) the value of ``header``; kept in ``var``."""
    attrs = _attrs(regexp=regexp, search_in=search_in, header=header, check_it=True, assign_to=var)
    return f"<ereg{attrs}/>"


def recv(
    *,
    response: int | None = None,
    request: str | None = None,
    optional: bool = False,
    rrs: bool = False,
    auth: bool = False,
    timeout: int | None = None,
    crlf: bool = False,
    response_txn: str | None = None,
    checks: Sequence[str] = (),
) -> str:
    """A ``<recv>`` of a ``response`` code or a ``request`` method; ``rrs`` keeps its Record-Route,
    ``auth`` answers its challenge in the next ``[authentication]``, ``timeout`` in ms; ``checks``
    (``check(...)``) must all match."""
    attrs = _attrs(
        response=response, request=request, optional=optional, rrs=rrs, auth=auth, timeout=timeout, crlf=crlf,
        response_txn=response_txn,
    )  # fmt: skip
    if not checks:
        return f"  <recv{attrs}/>\n"
    actions = "".join(f"      {c}\n" for c in checks)
    return f"  <recv{attrs}>\n    <action>\n{actions}    </action>\n  </recv>\n"


def pause(milliseconds: int) -> str:
    return f'  <pause milliseconds="{milliseconds}"/>\n'


def play_pcap(path: str) -> str:
    """sipp starts playing ``path``'s RTP toward the media address of the last SDP it received."""
    return f'  <nop><action><exec play_pcap_audio="{_attr(path)}"/></action></nop>\n'


def scenario(name: str, *parts: str, references: Sequence[str] = ()) -> str:
    """A whole scenario file of ``parts`` in order. ``references`` names the variables that only
    ``check`` assigns, which sipp would otherwise refuse as unused."""
    refs = f'  <Reference variables="{",".join(references)}"/>\n' if references else ""
    return (
        f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{_attr(name)}">\n'
        + "".join(parts)
        + refs
        + "</scenario>\n"
    )
