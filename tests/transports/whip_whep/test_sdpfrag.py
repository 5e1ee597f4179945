from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.sdp.model import Candidate, SdpError
from trackmesh.transports.whip_whep.sdpfrag import (
    FragMedia,
    SdpFrag,
    is_ice_restart,
    parse_sdpfrag,
    render_sdpfrag,
    restart_answer,
)

# The shape of RFC 9725 s4.3.1's trickle PATCH body (values invented).
TRICKLE = (
    "a=ice-ufrag:EsAw\r\n"
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=mid:0\r\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
    "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw\r\n"
    "a=end-of-candidates\r\n"
)


def test_parse_trickle_fragment() -> None:
    frag = parse_sdpfrag(TRICKLE)
    assert frag.credentials() == ("EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert len(frag.media) == 1 and frag.media[0].mid == "0"
    (mid, udp), (_, tcp) = frag.candidates()
    assert mid == "0"
    assert (udp.transport, udp.address, udp.port, udp.type) == ("udp", "192.0.2.1", 61764, "host")
    assert tcp.extensions[0] == ("tcptype", "active")
    assert frag.complete
    assert render_sdpfrag(frag) == TRICKLE


def test_lf_and_unknown_attributes() -> None:
    frag = parse_sdpfrag(TRICKLE.replace("\r\n", "\n") + "a=x-unknown:1\n")
    assert frag == parse_sdpfrag(TRICKLE)


def test_ice_restart_detection() -> None:
    frag = parse_sdpfrag(TRICKLE)
    assert not is_ice_restart(frag, "EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert is_ice_restart(frag, "old1", "bP+XJMM09aR8AiX1jdukzR6Y")
    assert is_ice_restart(frag, "EsAw", "oldpasswordoldpassword")
    media_level = parse_sdpfrag("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=ice-ufrag:New1\r\n"
                                "a=ice-pwd:newpasswordnewpassword1\r\n")
    assert media_level.credentials() == ("New1", "newpasswordnewpassword1")
    assert is_ice_restart(media_level, "EsAw", "bP+XJMM09aR8AiX1jdukzR6Y")
    no_creds = parse_sdpfrag("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=end-of-candidates\r\n")
    assert no_creds.credentials() is None and not is_ice_restart(no_creds, "EsAw", "x" * 22)


def test_restart_answer_renders_exactly() -> None:
    cand = Candidate("1", 1, "udp", 2130706431, "192.0.2.10", 40000, "host")
    frag = restart_answer("nU3w", "newserverpassword012345", cand, mid="0")
    assert render_sdpfrag(frag).split("\r\n") == [
        "a=ice-lite",
        "a=ice-ufrag:nU3w",
        "a=ice-pwd:newserverpassword012345",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
        "a=candidate:1 1 udp 2130706431 192.0.2.10 40000 typ host",
        "a=end-of-candidates",
        "",
    ]
    assert parse_sdpfrag(render_sdpfrag(frag)) == frag


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v=0\r\n", "sdpfrag line 1: 'v=0' is not allowed in a trickle-ice-sdpfrag (RFC 8840 s9.2)"),
        ("a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n",
         "sdpfrag line 1: a=candidate before any m= line; candidates belong to an m= section (RFC 8840 s4.2)"),
        ("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=candidate:1 1 udp 1 1.2.3.4 99999 typ host\r\n",
         "sdpfrag line 2: candidate port: 99999 is out of range 0-65535"),
        ("a=ice-ufrag:abcd\r\n", "sdpfrag has a=ice-ufrag without a=ice-pwd or the reverse (RFC 8839 s5.4)"),
        ("a=ice-pwd:short\r\n", "sdpfrag line 1: a=ice-pwd: 'short' must be 22-256 ice-chars (RFC 8839 s5.4)"),
        ("m=audio\r\n", "sdpfrag line 1: malformed m= line 'audio': expected '<media> <port> <proto> <fmt> ...'"),
        ("a=\r\n", "sdpfrag line 1: empty attribute name"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdpfrag(text)
    assert str(info.value) == message


TRICKLE_LINES = st.lists(st.sampled_from(TRICKLE.split("\r\n"))).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200) | TRICKLE_LINES)
def test_random_input_only_raises_sdp_error(text: str | bytes) -> None:
    try:
        frag = parse_sdpfrag(text)
    except SdpError as exc:
        assert str(exc)
    else:
        assert parse_sdpfrag(render_sdpfrag(frag)) == frag


token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8)
ice_text = st.text("abcdefghijklmnopqrstuvwxyzABC0123456789+/", min_size=22, max_size=24)
# RFC 8839 s5.1: "raddr" and "rport" are the candidate's related address and port, never extension
# attributes (a pair named so is the related address, read into its own fields).
extension_name = token.filter(lambda name: name not in ("raddr", "rport"))
candidate = st.builds(
    Candidate, st.text("abc123", min_size=1, max_size=6), st.integers(1, 2), st.sampled_from(["udp", "tcp"]),
    st.integers(0, 2**32 - 1), token, st.integers(0, 65535), st.sampled_from(["host", "srflx"]),
    st.none() | token, st.none() | st.integers(0, 65535), st.lists(st.tuples(extension_name, token), max_size=2),
)
creds = st.none() | st.tuples(ice_text, ice_text)


@st.composite
def frags(draw: st.DrawFn) -> SdpFrag:
    session = draw(creds)
    media = []
    for _ in range(draw(st.integers(0, 3))):
        mcreds = draw(creds)
        media.append(FragMedia(
            draw(st.sampled_from(["audio", "video"])), 9, "UDP/TLS/RTP/SAVPF", ["0"], draw(st.none() | token),
            mcreds[0] if mcreds else None, mcreds[1] if mcreds else None, draw(st.lists(candidate, max_size=3)),
            draw(st.booleans()),
        ))
    return SdpFrag(draw(st.booleans()), draw(st.lists(token, max_size=2)), session[0] if session else None,
                   session[1] if session else None, draw(st.booleans()), media)


@settings(max_examples=200, deadline=None)
@given(frags())
def test_round_trip(frag: SdpFrag) -> None:
    assert parse_sdpfrag(render_sdpfrag(frag)) == frag
