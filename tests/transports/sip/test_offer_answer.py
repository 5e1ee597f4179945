"""RFC 3264 offer/answer on the SIP leg: codec choice, rejected streams, hold, ptime, DTMF."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.sdp.codecs import PCMU
from trackmesh.sdp.model import SdpError, parse, render
from trackmesh.transports.sip.offer_answer import answer_offer, create_offer, negotiated_from_answer, reoffer

BARESIP_LIKE = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 47300 RTP/AVP 96 0 8 101\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 stereo=1;sprop-stereo=1\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    "a=ptime:20\r\na=sendrecv\r\n"
    "m=video 47302 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
)


def test_opus_first_in_offer_order_with_fmtp_and_video_rejected() -> None:
    sdp, neg = answer_offer(parse(BARESIP_LIKE), address="127.0.0.1", port=40000, session_id="7", version=1)
    assert neg is not None
    assert (neg.codec, neg.payload_type, neg.clock_rate, neg.channels) == ("opus", 96, 48000, 2)
    assert (neg.remote_address, neg.remote_port, neg.ptime, neg.dtmf_payload_type) == ("127.0.0.1", 47300, 20, None)
    audio, video = sdp.media
    assert audio.port == 40000 and audio.formats == ["96"] and audio.fmtps[96] == "stereo=1;sprop-stereo=1"
    opus = audio.rtpmap(96)
    assert opus is not None and opus.channels == 2
    assert audio.ptime == 20 and audio.direction == "sendrecv"
    assert (video.port, video.formats) == (0, ["97"])  # rejected, formats mirrored (s6)
    assert parse(render(sdp)) == sdp


def test_static_pcmu_without_rtpmap_and_telephone_event() -> None:
    offer = (
        "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 18 0 8 101\r\nc=IN IP4 10.0.0.1\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\n"
    )
    sdp, neg = answer_offer(parse(offer), address="127.0.0.1", port=40002, session_id="7", version=1)
    assert neg is not None and (neg.codec, neg.payload_type, neg.dtmf_payload_type) == ("PCMU", 0, 101)
    assert neg.ptime == 30 and sdp.media[0].formats == ["0", "101"] and sdp.media[0].ptime == 30
    assert sdp.media[0].fmtps[101] == "0-16"


def test_opus_must_be_stereo_signalled_rfc7587() -> None:
    offer = BARESIP_LIKE.replace("opus/48000/2", "opus/48000")
    _, neg = answer_offer(parse(offer), address="127.0.0.1", port=40000, session_id="7", version=1)
    assert neg is not None and neg.codec == "PCMU"


def test_hold_and_resume_directions_rfc3264_s6_1() -> None:
    for offered, expected in [
        ("sendonly", "recvonly"),
        ("inactive", "inactive"),
        ("recvonly", "sendonly"),
        ("sendrecv", "sendrecv"),
    ]:
        sdp, neg = answer_offer(
            parse(BARESIP_LIKE.replace("a=sendrecv", f"a={offered}")),
            address="127.0.0.1",
            port=40000,
            session_id="7",
            version=2,
        )
        assert neg is not None and sdp.media[0].direction == expected and neg.direction == expected
        assert neg.on_hold is (expected in ("recvonly", "inactive"))
    # RFC 2543 hold: c=0.0.0.0 with sendrecv.
    old = BARESIP_LIKE.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")
    sdp, neg = answer_offer(parse(old), address="127.0.0.1", port=40000, session_id="7", version=2)
    assert neg is not None and neg.on_hold and sdp.media[0].direction == "recvonly"
    # We hold: our sendrecv becomes sendonly.
    sdp, neg = answer_offer(parse(BARESIP_LIKE), address="127.0.0.1", port=40000, session_id="7", version=3, hold=True)
    assert sdp.media[0].direction == "sendonly"


def test_nothing_acceptable_answers_all_ports_zero() -> None:
    offer = BARESIP_LIKE.replace("96 0 8 101", "18 101")
    sdp, neg = answer_offer(parse(offer), address="127.0.0.1", port=40000, session_id="7", version=1)
    assert neg is None and [m.port for m in sdp.media] == [0, 0]


def test_our_offer_and_their_answer() -> None:
    offer = create_offer(address="127.0.0.1", port=40010, session_id="9", version=1)
    m = offer.media[0]
    assert m.formats == ["111", "9", "0", "8", "110", "101"]
    opus = m.rtpmap(111)
    assert opus is not None and opus.channels == 2 and m.ptime == 20
    # A sipp/PBX-style answer picking PCMA with telephone-event.
    ans = parse(
        "v=0\r\no=- 5 5 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 6000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n"
    )
    neg = negotiated_from_answer(offer, ans)
    assert neg is not None and (neg.codec, neg.payload_type, neg.dtmf_payload_type) == ("PCMA", 8, 101)
    assert neg.direction == "sendonly" and (neg.remote_address, neg.remote_port) == ("127.0.0.1", 6000)
    only_pcmu = create_offer(address="::1", port=40012, session_id="9", version=1, codecs=(PCMU,))
    assert only_pcmu.media[0].formats == ["0", "101"] and only_pcmu.connection == "IN IP6 ::1"
    # Our own offer answered by our own answerer agrees with itself.
    ours, accepted = answer_offer(offer, address="127.0.0.1", port=40020, session_id="1", version=1)
    back = negotiated_from_answer(offer, ours)
    assert accepted is not None and back is not None and back.codec == accepted.codec == "opus"
    assert back.dtmf_payload_type == 110


def test_answer_with_wrong_mline_count_is_an_error() -> None:
    offer = create_offer(address="127.0.0.1", port=40010, session_id="9", version=1)
    try:
        negotiated_from_answer(offer, parse(BARESIP_LIKE))
    except SdpError as e:
        assert "m-line" in str(e)
    else:
        raise AssertionError("expected SdpError")


CODECS = [
    ("0", None),
    ("8", None),
    ("9", None),
    ("18", None),
    ("96", "opus/48000/2"),
    ("97", "opus/48000"),
    ("98", "telephone-event/8000"),
    ("99", "AMR/8000"),
    ("100", "telephone-event/48000"),
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(CODECS), min_size=1, max_size=6, unique=True),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    st.integers(1, 3),
    st.integers(0, 2),
)
def test_negotiation_properties(
    formats: list[tuple[str, str | None]], direction: str, streams: int, audio_at: int
) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for i in range(streams):
        if i == min(audio_at, streams - 1):
            lines.append(f"m=audio 5000 RTP/AVP {' '.join(f for f, _ in formats)}")
            lines += [f"a=rtpmap:{f} {r}" for f, r in formats if r]
            lines.append(f"a={direction}")
        else:
            lines.append("m=video 5002 RTP/AVP 120")
    offer = parse("\r\n".join(lines) + "\r\n")
    sdp, neg = answer_offer(offer, address="127.0.0.1", port=40000, session_id="1", version=1)
    assert len(sdp.media) == len(offer.media)  # s6: every m-line mirrored
    supported = [f for f, r in formats if f in ("0", "8", "9") or r == "opus/48000/2"]
    if not supported:
        assert neg is None and all(m.port == 0 for m in sdp.media)
        return
    assert neg is not None
    assert str(neg.payload_type) == supported[0]  # the offerer's order wins
    accepted = sdp.media[neg.mline]
    assert accepted.formats[0] == supported[0] and accepted.port == 40000
    assert all(m.port == 0 for i, m in enumerate(sdp.media) if i != neg.mline)
    assert accepted.direction == {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction, direction)
    if neg.dtmf_payload_type is not None:
        assert neg.clock_rate == (48000 if neg.dtmf_payload_type == 100 else 8000)
    assert parse(render(sdp)) == sdp
    back = negotiated_from_answer(offer, sdp)
    assert back is not None and back.payload_type == neg.payload_type


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(CODECS), min_size=1, max_size=6, unique=True),
    st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"]),
    st.integers(1, 3),
    st.integers(0, 2),
)
def test_reoffer_properties(formats: list[tuple[str, str | None]], direction: str, streams: int, audio_at: int) -> None:
    """A re-INVITE without SDP (RFC 3264 s8): our offer keeps the call's codec and payload types,
    every m-line of our last SDP (the others rejected), and offers sendrecv even after a hold; the
    phone's answer to it (here: our own answerer) agrees on the same codec."""
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for i in range(streams):
        if i == min(audio_at, streams - 1):
            lines.append(f"m=audio 5000 RTP/AVP {' '.join(f for f, _ in formats)}")
            lines += [f"a=rtpmap:{f} {r}" for f, r in formats if r]
            lines.append(f"a={direction}")
        else:
            lines.append("m=video 5002 RTP/AVP 120")
    ours, neg = answer_offer(parse("\r\n".join(lines) + "\r\n"), address="127.0.0.1", port=40000,
                             session_id="1", version=1)  # fmt: skip
    if neg is None:
        return
    offer = reoffer(neg, ours, address="127.0.0.1", port=40000, session_id="1", version=2)
    assert parse(render(offer)) == offer and offer.origin.session_version == "2"
    assert len(offer.media) == len(ours.media) and offer.media[neg.mline].direction == "sendrecv"
    assert all(m.port == 0 for i, m in enumerate(offer.media) if i != neg.mline)
    assert offer.media[neg.mline].formats[0] == str(neg.payload_type)
    phone_answer, phone_neg = answer_offer(offer, address="127.0.0.1", port=5000, session_id="5", version=2)
    back = negotiated_from_answer(offer, phone_answer)
    assert phone_neg is not None and back is not None
    assert (back.codec, back.payload_type) == (neg.codec, neg.payload_type)
    assert back.dtmf_payload_type == neg.dtmf_payload_type
    assert back.direction == "sendrecv"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_an_ack_answer_of_any_text_is_used_or_refused_cleanly(text: str) -> None:
    """The answer in a delayed-offer INVITE's ACK is whatever the phone sent: it is parsed and
    matched against our offer, or refused with SdpError (the call then ends with BYE), never more."""
    offer = create_offer(address="127.0.0.1", port=40010, session_id="9", version=1)
    try:
        neg = negotiated_from_answer(offer, parse(text))
    except SdpError:
        return
    assert neg is None or neg.payload_type in {int(f) for f in offer.media[0].formats}
