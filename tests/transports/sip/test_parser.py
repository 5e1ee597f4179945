"""RFC 3261 parser/serializer: torture cases in the spirit of RFC 4475 and property tests."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import RemoteProtocolError
from trackmesh.transports.sip.message import (
    CSeq,
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    make_response,
    response_address,
    split_list,
    stamp_received,
)
from trackmesh.transports.sip.parser import Limits, StreamFramer, parse_message, serialize


def msg(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


BASIC = [
    "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1;rport",
    "Max-Forwards: 70",
    "From: Alice <sip:alice@example.com>;tag=a1",
    "To: <sip:room@example.com>",
    "Call-ID: c1@192.0.2.1",
    "CSeq: 1 OPTIONS",
]


def test_basic_request_and_round_trip() -> None:
    raw = msg("OPTIONS sip:room@example.com SIP/2.0", *BASIC, "Content-Length: 0")
    m = parse_message(raw)
    assert isinstance(m, Request)
    assert (m.method, m.uri) == ("OPTIONS", "sip:room@example.com")
    assert m.top_via().branch == "z9hG4bK-1"
    assert m.from_().tag == "a1"
    assert m.to().tag is None
    assert m.cseq() == CSeq(1, "OPTIONS")
    assert m.max_forwards() == 70
    again = parse_message(serialize(m))
    assert again == m


def test_wide_range_of_valid_forms() -> None:
    """RFC 4475 s3.1.1.1 spirit: compact forms, odd case, LWS, folding, escaped quotes."""
    raw = msg(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
        "TO :",
        " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        'from   : "J Rosenberg \\\\\\"" <sip:jdrosen@example.com>',
        "  ;",
        "  tag = 98asjd8",
        "MaX-fOrWaRdS: 0068",
        "Call-ID: wsinv.ndaksdj@192.0.2.1",
        "cseq: 0009",
        "  INVITE",
        "Via  : SIP  /   2.0",
        " /UDP",
        "    192.0.2.2;branch=390skdjuw",
        "s :",
        "NewFangledHeader:   newfangled value",
        " continued newfangled value",
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
        "      newvalue ;",
        "  secondparam ; q = 0.33",
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
        "  branch  =   z9hG4bK9ikj8  ,",
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
        " z9hG4bK30239",
        "l: 3",
        body="v=0",
    )
    m = parse_message(raw)
    assert isinstance(m, Request)
    assert m.max_forwards() == 68
    assert m.cseq() == CSeq(9, "INVITE")
    assert m.to().tag == "1918181833n"
    assert m.from_().tag == "98asjd8"
    vias = m.via()
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[1].host == "spindle.example.com" and vias[1].branch == "z9hG4bK9ikj8"
    assert vias[2].branch == "z9hG4bK30239"
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    contact = NameAddr.parse(m.headers.get("Contact") or "")
    assert contact.uri == "sip:jdrosen@example.com" and contact.params["q"] == "0.33"
    assert m.headers.get("Subject") == ""
    assert m.body == b"v=0"


def test_comma_inside_quotes_and_angle_brackets_is_not_a_separator() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == ['"a, b" <sip:x@y;p=1,2>', "<sip:z@w>"]
    with pytest.raises(SipParseError):
        split_list('"open, quote')
    with pytest.raises(SipParseError):
        split_list("<sip:a@b>,,<sip:c@d>")
    with pytest.raises(SipParseError):
        NameAddr.parse('"escaped quote\\" <sip:x@y>')  # the closing quote is escaped: unterminated


def test_response_parse_and_reason_with_spaces() -> None:
    raw = msg("SIP/2.0 486 Busy Here, try later", *BASIC)
    m = parse_message(raw)
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (486, "Busy Here, try later")
    assert parse_message(serialize(m)) == m


def test_udp_body_framing_s18_3() -> None:
    # Extra bytes after Content-Length are dropped; without it, the body is the rest of the datagram.
    m = parse_message(msg("MESSAGE sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 2 MESSAGE", "l: 2", body="hiEXTRA"))
    assert m.body == b"hi"
    m = parse_message(msg("MESSAGE sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 2 MESSAGE", body="all of it"))
    assert m.body == b"all of it"
    with pytest.raises(SipParseError, match="shorter"):
        parse_message(msg("MESSAGE sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 2 MESSAGE", "l: 50", body="short"))


@pytest.mark.parametrize(
    ("raw", "status", "why"),
    [
        (msg("OPTIONS sip:a@b SIP/7.0", *BASIC), 505, "version"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[1:]), 400, "missing Via"),
        (msg("OPTIONS sip:a@b SIP/2.0", *[h for h in BASIC if not h.startswith("Call-ID")]), 400, "Call-ID"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 1 INVITE"), 400, "CSeq method"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 99999999999 OPTIONS"), 400, "range"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: -1 OPTIONS"), 400, "CSeq"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:1], "Max-Forwards: 300", *BASIC[2:]), 400, "Max-Forwards"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Max-Forwards: 69"), 400, "repeated Max-Forwards"),
        (msg("OPTIONS  sip:a@b SIP/2.0", *BASIC), 400, "request line"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Content-Length: 1", "Content-Length: 2"), 400, "Content-Length"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "From: <sip:b@c>"), 400, "repeated"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Bad Header Name: x"), 400, "malformed"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Via: SIP/2.0/UDP host:99999"), 400, "port"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Via: SIP/2.0/UDP [::1;branch=x"), 400, "IPv6"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:2], "From: sip:a@b, sip:c@d", *BASIC[3:]), 400, "addr-spec"),
        (msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:3], "To: <sip:x@y", *BASIC[4:]), 400, "unterminated"),
        (msg("OPTIONS nouri SIP/2.0", *BASIC), 416, "Request-URI"),
        (msg("SIP/2.0 99 Nope", *BASIC), 400, "status line"),
        (b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n", 400, "empty line"),
        (b"\r\n\r\n", 400, "empty"),
        (b"\xff\xfe\r\n\r\n", 400, "UTF-8"),
    ],
)
def test_malformed_messages_are_rejected_with_the_owed_status(raw: bytes, status: int, why: str) -> None:
    with pytest.raises(SipParseError, match=why) as info:
        parse_message(raw)
    assert info.value.status == status


def test_size_caps() -> None:
    limits = Limits(max_message=2000, max_headers=10, max_line=200)
    with pytest.raises(SipParseError, match="too large") as info:
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", *BASIC, body="x" * 3000), limits)
    assert info.value.status == 513
    with pytest.raises(SipParseError, match="too many"):
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", *BASIC, *[f"X-H{i}: v" for i in range(10)]), limits)
    with pytest.raises(SipParseError, match="too long"):
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Subject: " + "y" * 300), limits)
    # Folding cannot smuggle a long line past the cap.
    with pytest.raises(SipParseError, match="too long"):
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Subject: a", *([" " + "z" * 50] * 5)), limits)


def test_stream_framer_splits_coalesced_and_partial_messages() -> None:
    one = msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Content-Length: 5", body="hello")
    two = msg("OPTIONS sip:a@b SIP/2.0", *BASIC[:-1], "CSeq: 2 OPTIONS", "l: 0")
    stream = b"\r\n\r\n" + one + two
    framer = StreamFramer()
    got = []
    for i in range(len(stream)):  # one byte at a time
        framer.feed(stream[i : i + 1])
        while (m := framer.next_message()) is not None:
            got.append(m)
    assert [m.cseq().seq for m in got] == [1, 2]
    assert got[0].body == b"hello"
    assert framer.keepalives >= 1 and framer.buffered == 0


def test_stream_framer_requires_content_length_and_caps_size() -> None:
    framer = StreamFramer()
    framer.feed(msg("OPTIONS sip:a@b SIP/2.0", *BASIC))
    with pytest.raises(SipParseError, match="mandatory"):
        framer.next_message()
    framer = StreamFramer(Limits(max_message=500))
    framer.feed(msg("OPTIONS sip:a@b SIP/2.0", *BASIC, "Content-Length: 100000"))
    with pytest.raises(SipParseError, match="too large"):
        framer.next_message()
    framer = StreamFramer(Limits(max_message=500))
    with pytest.raises(SipParseError):
        framer.feed(b"A" * 2000)
        framer.next_message()


def test_uri_and_structured_values() -> None:
    u = SipUri.parse("sips:+1555@[2001:db8::1]:5061;transport=tcp;lr?subject=x")
    assert (u.scheme, u.user, u.host, u.port, u.params) == (
        "sips",
        "+1555",
        "[2001:db8::1]",
        5061,
        {
            "transport": "tcp",
            "lr": None,
        },
    )
    assert str(u) == "sips:+1555@[2001:db8::1]:5061;transport=tcp;lr?subject=x"
    with pytest.raises(SipParseError):
        SipUri.parse("tel:+1555")
    na = NameAddr.parse("sip:bob@example.com;tag=zz")  # addr-spec: the tag belongs to the header
    assert na.uri == "sip:bob@example.com" and na.tag == "zz"
    assert str(na.with_tag("q")) == "<sip:bob@example.com>;tag=q"


def test_rport_and_received_rfc3581() -> None:
    req = parse_message(msg("OPTIONS sip:a@b SIP/2.0", *BASIC))
    assert isinstance(req, Request)
    stamp_received(req, ("198.51.100.7", 40000))
    top = req.top_via()
    assert top.params["rport"] == "40000" and top.params["received"] == "198.51.100.7"
    assert response_address(top) == ("198.51.100.7", 40000)
    # Without rport: received is added only when the host differs; the port is sent-by's.
    plain = Via.parse("SIP/2.0/UDP host.example;branch=z9hG4bKx")
    assert response_address(plain) == ("host.example", 5060)
    req2 = parse_message(msg("OPTIONS sip:a@b SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKy", *BASIC[1:]))
    assert isinstance(req2, Request)
    stamp_received(req2, ("127.0.0.1", 5070))
    assert "received" not in req2.top_via().params


def test_response_builder_copies_the_s8_2_6_headers() -> None:
    raw = msg(
        "INVITE sip:room@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK-1",
        "Via: SIP/2.0/UDP proxy.example;branch=z9hG4bK-p",
        *BASIC[1:-1],
        "CSeq: 7 INVITE",
        "Timestamp: 54",
    )
    req = parse_message(raw)
    assert isinstance(req, Request)
    trying = make_response(req, 100, to_tag="t1")
    assert trying.to().tag is None and trying.headers.get("Timestamp") == "54"
    ok = make_response(req, 200, to_tag="t1")
    assert ok.reason == "OK"
    assert ok.headers.get_all("Via") == req.headers.get_all("Via")
    assert ok.to().tag == "t1" and ok.from_().tag == "a1"
    assert (ok.call_id(), ok.cseq()) == ("c1@192.0.2.1", CSeq(7, "INVITE"))
    assert parse_message(serialize(ok)) == ok


# --- property tests ----------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
safe_value = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=',"<>\\'), max_size=30
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER"]) | token)
    user = draw(token)
    req = Request(method, f"sip:{user}@example.com")
    for i in range(draw(st.integers(1, 3))):
        req.headers.add("Via", f"SIP/2.0/UDP 10.0.0.{i}:{5060 + i};branch=z9hG4bK{draw(token)}")
    req.headers.add("Max-Forwards", str(draw(st.integers(0, 255))))
    req.headers.add("From", f"<sip:{user}@example.com>;tag={draw(token)}")
    req.headers.add("To", f'"{draw(safe_value)}" <sip:b@example.com>')
    req.headers.add("Call-ID", draw(token))
    req.headers.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    for _ in range(draw(st.integers(0, 4))):
        req.headers.add("X-" + draw(token), draw(safe_value).strip())
    req.body = draw(st.binary(max_size=200))
    return req


@settings(max_examples=200, deadline=None)
@given(requests())
def test_serialize_then_parse_is_identity(req: Request) -> None:
    wire = serialize(req)
    assert parse_message(wire) == req
    framer = StreamFramer()
    framer.feed(wire + wire)
    assert framer.next_message() == req
    assert framer.next_message() == req
    assert framer.next_message() is None


@settings(max_examples=300, deadline=None)
@given(requests(), st.data())
def test_mutated_messages_raise_only_protocol_errors(req: Request, data: st.DataObject) -> None:
    wire = bytearray(serialize(req))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            wire[pos] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del wire[pos]
        elif op == "insert":
            wire[pos:pos] = data.draw(st.sampled_from([b",", b'"', b"<", b">", b";", b":", b"\r\n", b" ", b"\x00"]))
        else:
            del wire[pos:]
        if not wire:
            break
    try:
        m = parse_message(bytes(wire))
    except RemoteProtocolError:
        return
    for getter in (m.via, m.cseq, m.from_, m.to):
        getter()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_raises_only_protocol_errors(blob: bytes) -> None:
    for stream in (False, True):
        with contextlib.suppress(RemoteProtocolError):
            parse_message(blob, stream=stream)
    framer = StreamFramer()
    try:
        framer.feed(blob)
        framer.next_message()
    except RemoteProtocolError:
        pass


def test_a_forged_received_cannot_redirect_responses() -> None:
    forged = msg(
        "OPTIONS sip:a@b SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKf;received=198.51.100.99;rport=9",
        *BASIC[1:],
    )
    req = parse_message(forged)
    assert isinstance(req, Request)
    stamp_received(req, ("127.0.0.1", 5070))
    assert response_address(req.top_via()) == ("127.0.0.1", 5070)
    req = parse_message(forged.replace(b";rport=9", b""))
    assert isinstance(req, Request)
    stamp_received(req, ("127.0.0.1", 5070))
    assert "received" not in req.top_via().params
    assert response_address(req.top_via()) == ("127.0.0.1", 5070)


def test_list_headers_whose_grammar_allows_an_empty_list() -> None:
    """baresip 1.0 sends ``Supported:`` with no option tag: valid (RFC 3261 s20.37), an empty list."""
    raw = (
        b"OPTIONS sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5600;branch=z9hG4bKx\r\n"
        b"To: <sip:room@127.0.0.1>\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        b"Max-Forwards: 70\r\nSupported:\r\nAllow: \r\nAccept:\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert msg.headers.get_all("Supported") == [""] and msg.headers.get("Allow") == ""
    with pytest.raises(SipParseError, match="empty element"):
        parse_message(raw.replace(b"Supported:\r\n", b"Supported: timer,,100rel\r\n"))
