from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.errors import ProtocolError
from trackmesh.sdp.model import (
    Attribute,
    Candidate,
    Extmap,
    Fingerprint,
    Group,
    MediaDescription,
    Msid,
    Origin,
    Rid,
    RtcpFb,
    RtpMap,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastStream,
    Ssrc,
    SsrcGroup,
    parse,
    parse_candidate,
    render,
    render_candidate,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_sdp_error_is_protocol_error() -> None:
    assert issubclass(SdpError, ProtocolError)


def test_parse_chrome_whip_offer() -> None:
    sd = parse(fixture("chrome_whip_simulcast.sdp"))
    assert sd.origin.session_id == "4215775240449105457"
    assert sd.bundle_group() == Group("BUNDLE", ["0", "1"])
    assert sd.extmap_allow_mixed
    assert sd.attributes == [Attribute("msid-semantic", " WMS 2a8a5d0e-6c3f-4b43-9d0f-1f5b0f4d8e21")]
    audio, video = sd.media
    assert (audio.kind, audio.port, audio.proto) == ("audio", 9, "UDP/TLS/RTP/SAVPF")
    assert audio.formats == ["111", "63", "9", "0", "8", "13", "110", "126"]
    assert audio.mid == "0" and audio.direction == "sendonly"
    assert audio.rtcp_mux and audio.rtcp_rsize
    assert audio.ice_ufrag == "Hk3u" and audio.ice_pwd == "w9b8xNpQ7mLc2vT4rYzK1aDs"
    assert audio.ice_options == ["trickle"]
    assert audio.setup == "actpass"
    assert audio.fingerprints[0].algorithm == "sha-256"
    assert audio.fingerprints[0].value.startswith("5B:2D:7F")
    assert audio.rtpmap(111) == RtpMap(111, "opus", 48000, 2)
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000, None)
    assert audio.fmtps[111] == "minptime=10;useinbandfec=1"
    assert audio.feedback(111) == ["transport-cc"]
    assert audio.extmaps[0] == Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level")
    assert audio.msids == [Msid("2a8a5d0e-6c3f-4b43-9d0f-1f5b0f4d8e21", "8d1c2f7a-3e55-4c0b-9a61-5b7e2d9f0c13")]
    assert audio.ssrcs[0] == Ssrc(1361873456, "cname", "Vq3XJ0bK8wR2pLmN")
    assert audio.rtcp == "9 IN IP4 0.0.0.0"
    assert video.feedback(96) == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert video.fmtps[97] == "apt=96"
    assert [r.id for r in video.rids] == ["q", "h", "f"]
    assert all(r.direction == "send" for r in video.rids)
    assert video.simulcast == Simulcast(send=[[SimulcastStream("q")], [SimulcastStream("h")], [SimulcastStream("f")]])


def test_parse_firefox_session_level_fingerprint_and_extmap_direction() -> None:
    sd = parse(fixture("firefox_sendrecv.sdp"))
    assert sd.fingerprints == [
        Fingerprint(
            "sha-256", "9F:04:C1:5E:A8:32:6B:D7:10:E9:4C:73:2A:B6:05:F1:8D:3C:67:9A:E0:14:52:BB:C8:2F:71:D6:0E:93:A5:48"
        )
    ]
    assert sd.media[0].fingerprints == []
    assert sd.media[0].extmaps[1] == Extmap(2, "urn:ietf:params:rtp-hdrext:csrc-audio-level", "recvonly")
    assert sd.media[0].rtpmap(9) == RtpMap(9, "G722", 8000, 1)
    assert sd.media[1].ssrc_groups == [SsrcGroup("FID", [3327458219, 1091762350])]


def test_parse_gstreamer_bundle_only_and_lf_endings() -> None:
    text = fixture("gstreamer_webrtcbin.sdp")
    assert "\r" not in text
    sd = parse(text)
    assert sd.ice_options == ["trickle"]
    assert sd.media[1].port == 0 and sd.media[1].bundle_only
    assert sd.media[1].rtpmap(111) == RtpMap(111, "OPUS", 48000, 2)


def test_parse_datachannel() -> None:
    m = parse(fixture("chrome_datachannel.sdp")).media[1]
    assert (m.kind, m.proto, m.formats) == ("application", "UDP/DTLS/SCTP", ["webrtc-datachannel"])
    assert m.sctp_port == 5000 and m.max_message_size == 262144


@pytest.mark.parametrize(
    "name",
    ["chrome_whip_simulcast.sdp", "chrome_whep_recvonly.sdp", "gstreamer_webrtcbin.sdp", "firefox_sendrecv.sdp",
     "chrome_datachannel.sdp"],
)
def test_fixtures_round_trip(name: str) -> None:
    sd = parse(fixture(name))
    text = render(sd)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert parse(text) == sd


def test_crlf_and_lf_parse_identically() -> None:
    text = fixture("chrome_datachannel.sdp")
    assert parse(text) == parse(text.replace("\r\n", "\n"))
    assert parse(text.encode()) == parse(text)


def test_render_exact_lines() -> None:
    sd = SessionDescription(
        origin=Origin("-", "1", "2", "IN", "IP4", "127.0.0.1"),
        groups=[Group("BUNDLE", ["0"])],
        ice_lite=True,
        media=[
            MediaDescription(
                "video", 9, "UDP/TLS/RTP/SAVPF", ["96", "97"], mid="0", direction="recvonly", rtcp_mux=True,
                rtpmaps=[RtpMap(96, "VP8", 90000), RtpMap(97, "rtx", 90000)], fmtps={97: "apt=96"},
                rtcp_fbs=[RtcpFb("96", "nack pli")],
                rids=[Rid("h", "recv", [96], [("max-width", "1280")]), Rid("l", "recv")],
                simulcast=Simulcast(recv=[[SimulcastStream("h")], [SimulcastStream("l", paused=True)]]),
            )
        ],
    )
    assert render(sd).split("\r\n") == [
        "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0", "a=ice-lite",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=mid:0", "a=recvonly", "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=rtcp-fb:96 nack pli", "a=fmtp:97 apt=96",
        "a=rid:h recv pt=96;max-width=1280", "a=rid:l recv", "a=simulcast:recv h;~l", "",
    ]


def test_candidate_grammar() -> None:
    c = parse_candidate("842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 rport 46154 "
                        "generation 0 ufrag Hk3u network-cost 999")
    assert c == Candidate("842163049", 1, "udp", 1677729535, "203.0.113.7", 46154, "srflx", "10.0.0.2", 46154,
                          [("generation", "0"), ("ufrag", "Hk3u"), ("network-cost", "999")])
    assert render_candidate(c) == ("842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.0.2 "
                                   "rport 46154 generation 0 ufrag Hk3u network-cost 999")
    mdns = parse_candidate("1 1 UDP 2122252543 3f1a2b3c-aaaa-bbbb-cccc-0123456789ab.local 54321 typ host")
    assert mdns.address.endswith(".local") and mdns.transport == "UDP"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 1 udp 100 1.2.3.4 5 host", "malformed candidate '1 1 udp 100 1.2.3.4 5 host': expected"),
        ("1 1 udp 100 1.2.3.4 70000 typ host", "candidate port: 70000 is out of range 0-65535"),
        ("1 x udp 100 1.2.3.4 5 typ host", "candidate component-id: 'x' is not a number"),
        ("1 1 udp 100 1.2.3.4 5 typ host generation", "extension 'generation' has no value"),
        ("f@o 1 udp 100 1.2.3.4 5 typ host", "candidate foundation 'f@o' must be 1-32 ice-chars"),
    ],
)
def test_candidate_errors(value: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_candidate(value)
    assert message in str(info.value)


BASE = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing v= line (RFC 8866 s5)"),
        ("hello world", "line 1: not an SDP '<type>=<value>' line: 'hello world'"),
        ("o=- 1 1 IN IP4 x\r\n", "line 1: SDP must start with v=0 (RFC 8866 s5.1)"),
        ("v=1\r\n", "line 1: unsupported SDP version v=1"),
        ("v=0\r\no=- 1 IN\r\n", "line 2: malformed o= line '- 1 IN': expected 6 fields (RFC 8866 s5.2)"),
        ("v=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\n", "missing t= line (RFC 8866 s5)"),
        (BASE + "m=video nine RTP/AVP 96\r\n",
         "line 5: malformed m= line 'video nine RTP/AVP 96': expected '<media> <port> <proto> <fmt> ...'"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8\r\n",
         "line 6: malformed a=rtpmap:96 VP8: expected '<pt> <encoding>/<clock>[/<channels>]'"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:200 VP8/90000\r\n",
         "line 6: a=rtpmap payload type: 200 is out of range 0-127"),
        (BASE + "a=setup:server\r\n", "line 5: a=setup:server is not one of actpass, active, passive, holdconn"),
        (BASE + "a=fingerprint:sha-256 zz:11\r\n", "line 5: malformed a=fingerprint:sha-256 zz:11"),
        (BASE + "a=ice-ufrag:ab\r\n", "line 5: a=ice-ufrag: 'ab' must be 4-256 ice-chars (RFC 8839 s5.4)"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:0 urn:x\r\n",
         "line 6: a=extmap:0 urn:x id: 0 is out of range 1-4351"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:h sideways\r\n",
         "line 6: malformed a=rid:h sideways: expected '<rid-id> send|recv [params]' (RFC 8851 s10)"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=simulcast:send a;b recv\r\n",
         "line 6: malformed a=simulcast:send a;b recv: expected 'send|recv <list>' (RFC 8853 s5.1)"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=simulcast:send a;!b\r\n",
         "line 6: malformed a=simulcast:send a;!b: bad rid '!b'"),
        (BASE + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:12x cname:a\r\n", "line 6: a=ssrc id: '12x' is not a number"),
        (BASE + "a=x\rb\r\n", "line 5: stray CR or NUL inside a line (RFC 8866 s5)"),
        ("v=0\r\no=- 1 1 IN IP4 x\r\ns=-\r\nm=audio 9 RTP/AVP 0\r\n", "line 4: m= line before the t= line"),
        (BASE + "t=0 0\r\n", "line 5: duplicate t= line"),
    ],
)
def test_parse_errors_are_precise(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse(text)
    assert str(info.value).startswith(message)


def test_invalid_utf8_is_sdp_error() -> None:
    with pytest.raises(SdpError, match=r"SDP is not valid UTF-8 \(byte 7\)"):
        parse(b"v=0\r\ns=\xff\xfe")


# ---------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------

SDP_ALPHABET = st.sampled_from([*"vosctmab=: /;,~-0123456789\r\nIPNUDaxyz*", "\x00", "é"])


@settings(max_examples=300)
@given(st.text(SDP_ALPHABET, max_size=200) | st.text(max_size=200) | st.binary(max_size=200))
def test_random_input_only_raises_sdp_error(text: str | bytes) -> None:
    try:
        sd = parse(text)
    except SdpError as exc:
        assert str(exc)  # the message becomes an HTTP 400 body, so it must say something
    else:
        assert parse(render(sd)) == sd


@settings(max_examples=300)
@given(st.lists(st.sampled_from(fixture("chrome_whip_simulcast.sdp").splitlines()), max_size=40))
def test_shuffled_real_lines_only_raise_sdp_error(lines: list[str]) -> None:
    try:
        sd = parse(BASE + "\r\n".join(lines))
    except SdpError as exc:
        assert str(exc).startswith("line ")
    else:
        assert parse(render(sd)) == sd


token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+", min_size=1, max_size=12)
ice = st.text("abcdefghijklmnopqrstuvwxyz0123456789+/", min_size=22, max_size=30)
rid_id = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=6)
free = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16)
phrase = st.lists(free, min_size=1, max_size=3).map(" ".join)
u8 = st.integers(0, 127)
u32 = st.integers(0, 2**32 - 1)
port = st.integers(0, 65535)
fingerprint = st.builds(Fingerprint, st.sampled_from(["sha-256", "sha-1"]),
                        st.lists(st.sampled_from(["AB", "01", "ff"]), min_size=1, max_size=8).map(":".join))
candidate = st.builds(
    Candidate, st.text("abc123+/", min_size=1, max_size=8), st.integers(1, 2), st.sampled_from(["udp", "tcp"]), u32,
    token, port, st.sampled_from(["host", "srflx", "relay"]), st.none() | token, st.none() | port,
    st.lists(st.tuples(token, free), max_size=2),
)
stream_list = st.lists(st.lists(st.builds(SimulcastStream, rid_id, st.booleans()), min_size=1, max_size=2),
                       min_size=1, max_size=3)
simulcast = st.one_of(
    st.builds(Simulcast, stream_list, st.just([])),
    st.builds(Simulcast, st.just([]), stream_list),
    st.builds(Simulcast, stream_list, stream_list),
)
unknown_attr = st.builds(Attribute, token.map(lambda t: "x-" + t), st.none() | phrase)
media = st.builds(
    MediaDescription,
    kind=st.sampled_from(["audio", "video", "application"]),
    port=port,
    proto=st.sampled_from(["UDP/TLS/RTP/SAVPF", "UDP/DTLS/SCTP"]),
    formats=st.lists(u8.map(str), min_size=1, max_size=4),
    port_count=st.none() | st.integers(1, 4),
    connection=st.none() | st.just("IN IP4 0.0.0.0"),
    bandwidths=st.lists(st.just("AS:500"), max_size=1),
    mid=st.none() | token,
    direction=st.none() | st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    rtcp=st.none() | st.just("9 IN IP4 0.0.0.0"),
    rtcp_mux=st.booleans(),
    rtcp_mux_only=st.booleans(),
    rtcp_rsize=st.booleans(),
    bundle_only=st.booleans(),
    ice_ufrag=st.none() | ice,
    ice_pwd=st.none() | ice,
    ice_options=st.lists(token, max_size=2),
    fingerprints=st.lists(fingerprint, max_size=2),
    setup=st.none() | st.sampled_from(["actpass", "active", "passive"]),
    extmap_allow_mixed=st.booleans(),
    extmaps=st.lists(st.builds(Extmap, st.integers(1, 255), free, st.none() | st.just("sendonly"),
                               st.none() | free), max_size=3),
    rtpmaps=st.lists(st.builds(RtpMap, u8, token, st.integers(1, 96000), st.none() | st.integers(1, 8)), max_size=3),
    fmtps=st.dictionaries(u8, free, max_size=2),
    rtcp_fbs=st.lists(st.builds(RtcpFb, u8.map(str) | st.just("*"), phrase), max_size=3),
    msids=st.lists(st.builds(Msid, token, st.none() | token), max_size=2),
    ssrc_groups=st.lists(st.builds(SsrcGroup, st.sampled_from(["FID", "SIM"]), st.lists(u32, max_size=3)), max_size=2),
    ssrcs=st.lists(st.builds(Ssrc, u32, token, st.none() | phrase), max_size=3),
    rids=st.lists(st.builds(Rid, rid_id, st.sampled_from(["send", "recv"]), st.lists(u8, max_size=2),
                            st.lists(st.tuples(token.filter(lambda t: t != "pt" and "." not in t and "+" not in t
                                                            and "_" not in t),
                                               st.none() | token), max_size=2)), max_size=3),
    simulcast=st.none() | simulcast,
    sctp_port=st.none() | port,
    max_message_size=st.none() | st.integers(0, 2**40),
    candidates=st.lists(candidate, max_size=2),
    end_of_candidates=st.booleans(),
    attributes=st.lists(unknown_attr, max_size=2),
)
session = st.builds(
    SessionDescription,
    origin=st.builds(Origin, token, st.integers(0, 2**63).map(str), st.integers(0, 99).map(str), st.just("IN"),
                     st.sampled_from(["IP4", "IP6"]), token),
    session_name=st.just("-") | phrase,
    info_lines=st.lists(st.tuples(st.sampled_from(list("iuepzk")), phrase), max_size=2),
    connection=st.none() | st.just("IN IP4 0.0.0.0"),
    timing=st.just("0 0"),
    groups=st.lists(st.builds(Group, st.sampled_from(["BUNDLE", "LS"]), st.lists(token, max_size=3)), max_size=2),
    ice_lite=st.booleans(),
    ice_ufrag=st.none() | ice,
    ice_pwd=st.none() | ice,
    ice_options=st.lists(token, max_size=2),
    fingerprints=st.lists(fingerprint, max_size=2),
    setup=st.none() | st.sampled_from(["actpass", "active"]),
    extmap_allow_mixed=st.booleans(),
    attributes=st.lists(unknown_attr, max_size=2),
    media=st.lists(media, max_size=3),
)


@settings(max_examples=250, deadline=None)
@given(session)
def test_parse_render_round_trip(sd: SessionDescription) -> None:
    text = render(sd)
    assert parse(text) == sd
    assert render(parse(text)) == text


def test_ptime_and_maxptime_are_typed_and_round_trip() -> None:
    from trackmesh.sdp.model import parse as parse_sdp
    from trackmesh.sdp.model import render as render_sdp

    text = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\na=ptime:20.0\r\na=maxptime:40\r\n"
    )
    sd = parse_sdp(text)
    assert (sd.media[0].ptime, sd.media[0].maxptime) == (20, 40)
    assert not sd.media[0].attributes
    assert parse_sdp(render_sdp(sd)) == sd
