from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackmesh.sdp.codecs import EXT_RID
from trackmesh.sdp.model import Fingerprint, SdpError, parse
from trackmesh.transports.webrtc.answer import AnswerPolicy, AnswerResult, LocalParams, SendSsrcs, answer_offer

FIXTURES = Path(__file__).parents[2] / "sdp" / "fixtures"
FP = ":".join(["AB"] * 32)
LOCAL = LocalParams("srv1", "serverpassword0123456789", FP, "192.0.2.10", 40000, session_id=42)
TRANSPORT_LINES = [
    "c=IN IP4 192.0.2.10",
    "a=ice-ufrag:srv1",
    "a=ice-pwd:serverpassword0123456789",
    f"a=fingerprint:sha-256 {FP}",
    "a=setup:passive",
]
CANDIDATE_LINES = ["a=candidate:1 1 udp 2130706431 192.0.2.10 40000 typ host", "a=end-of-candidates"]


def counter(start: int = 1000) -> Callable[[], int]:
    it = itertools.count(start)
    return lambda: next(it)


def answer(name: str, policy: AnswerPolicy, **kwargs: Any) -> AnswerResult:
    text = (FIXTURES / name).read_text()
    return answer_offer(text, LOCAL, policy, rng=counter(), **kwargs)


def lines(result: AnswerResult) -> list[str]:
    assert result.sdp.endswith("\r\n")
    return result.sdp.split("\r\n")[:-1]


def section(result: AnswerResult, index: int) -> list[str]:
    all_lines = lines(result)
    starts = [i for i, line in enumerate(all_lines) if line.startswith("m=")]
    end = starts[index + 1] if index + 1 < len(starts) else len(all_lines)
    return all_lines[starts[index]:end]


def test_chrome_whip_simulcast_answer() -> None:
    result = answer("chrome_whip_simulcast.sdp", AnswerPolicy.whip())
    assert lines(result)[:7] == [
        "v=0", "o=- 42 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1", "a=ice-lite", "a=extmap-allow-mixed",
    ]
    assert section(result, 0) == [
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        *TRANSPORT_LINES,
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        *CANDIDATE_LINES,
    ]
    video = section(result, 1)
    # Our preference order (VP8, VP9 profile 0, H264 42e01f, 42001f, 4d001f, 640c1f), each RTX after.
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 96 98 106 102 127 39 97 99 107 103 125 40"
    assert video[1:6] == TRANSPORT_LINES
    assert video[6:14] == [
        "a=mid:1",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "a=recvonly",
        "a=rtcp-mux",
    ]
    assert "a=fmtp:98 profile-id=0" in video
    assert "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" in video
    assert "a=fmtp:97 apt=96" in video and "a=fmtp:40 apt=39" in video
    for absent in ("AV1", "VP9/90000\r\na=fmtp:100", "rtpmap:104", "rtpmap:108", "red/", "ulpfec", "toffset", "a=ssrc"):
        assert absent not in "\r\n".join(video)
    assert video[-4:] == ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f"]
    assert "a=candidate" not in "\r\n".join(video)  # only in the answerer-tagged m-line

    audio_m, video_m = result.media
    assert result.rejected == ()
    assert result.bundle == ("0", "1")
    assert audio_m.direction == video_m.direction == "recvonly"
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in audio_m.codecs] == [(111, "opus", 48000, 2)]
    vp8 = video_m.codecs[0]
    assert (vp8.payload_type, vp8.name, vp8.rtx_payload_type) == (96, "VP8", 97)
    assert vp8.rtcp_feedback == ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
    assert [c.fmtp.get("profile-level-id") for c in video_m.codecs[2:]] == ["42e01f", "42001f", "4d001f", "640c1f"]
    assert video_m.extensions[EXT_RID] == 10
    assert [r.id for r in video_m.rids] == ["q", "h", "f"]
    assert audio_m.remote_ssrcs == (1361873456,) and audio_m.remote_cname == "Vq3XJ0bK8wR2pLmN"
    t = result.transport
    assert (t.ice_ufrag, t.ice_pwd, t.setup) == ("Hk3u", "w9b8xNpQ7mLc2vT4rYzK1aDs", "actpass")
    assert t.fingerprint.algorithm == "sha-256" and t.fingerprint.value.startswith("5B:2D")
    assert audio_m.transport is t


def test_chrome_whep_answer_carries_our_ssrcs() -> None:
    result = answer("chrome_whep_recvonly.sdp", AnswerPolicy.whep())
    audio, video = section(result, 0), section(result, 1)
    assert "a=sendonly" in audio and "a=msid:trackmesh trackmesh-0" in audio
    assert audio[-4:] == ["a=ssrc:1000 cname:trackmesh", "a=ssrc:1000 msid:trackmesh trackmesh-0", *CANDIDATE_LINES]
    assert "a=ssrc-group" not in "\r\n".join(audio)  # no RTX for opus
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 96 102 45 97 103 46"  # VP8, VP9, AV1 (+ their rtx)
    assert video[-5:] == [
        "a=ssrc-group:FID 1001 1002",
        "a=ssrc:1001 cname:trackmesh",
        "a=ssrc:1001 msid:trackmesh trackmesh-1",
        "a=ssrc:1002 cname:trackmesh",
        "a=ssrc:1002 msid:trackmesh trackmesh-1",
    ]
    video_m = result.by_mid("1")
    assert video_m is not None
    assert (video_m.direction, video_m.local_ssrc, video_m.local_rtx_ssrc) == ("sendonly", 1001, 1002)
    assert video_m.rids == () and video_m.simulcast is None


def test_caller_supplied_ssrcs() -> None:
    result = answer("chrome_whep_recvonly.sdp", AnswerPolicy.whep(), send_ssrcs={"1": SendSsrcs(7, 8)})
    assert "a=ssrc-group:FID 7 8" in section(result, 1)
    video_m = result.by_mid("1")
    assert video_m is not None and (video_m.local_ssrc, video_m.local_rtx_ssrc) == (7, 8)
    audio_m = result.by_mid("0")
    assert audio_m is not None and audio_m.local_ssrc not in (7, 8)


def test_gstreamer_bundle_only_offer() -> None:
    result = answer("gstreamer_webrtcbin.sdp", AnswerPolicy.whip())
    assert "a=group:BUNDLE video0 audio1" in lines(result)
    assert section(result, 1)[0] == "m=audio 40000 UDP/TLS/RTP/SAVPF 111"
    assert "a=rtpmap:111 OPUS/48000/2" in section(result, 1)
    video_m, audio_m = result.media
    assert video_m.remote_ssrcs == (2717236544,)
    assert video_m.remote_rtx_ssrcs == {2717236544: 3940281652}
    assert video_m.codecs[0].rtcp_feedback == ("nack", "nack pli", "ccm fir", "transport-cc")
    assert audio_m.transport.ice_ufrag == "u7Bq0yYqF4eYcZ9T0rJ5aH2mQ8wX3sLk"


def test_firefox_sdk_sendrecv() -> None:
    result = answer("firefox_sendrecv.sdp", AnswerPolicy.sdk())
    assert result.transport.fingerprint == Fingerprint(
        "sha-256", "9F:04:C1:5E:A8:32:6B:D7:10:E9:4C:73:2A:B6:05:F1:8D:3C:67:9A:E0:14:52:BB:C8:2F:71:D6:0E:93:A5:48"
    )
    audio, video = result.media
    assert audio.direction == video.direction == "sendrecv"
    # csrc-audio-level is unsupported; playout-delay and toffset too.
    assert set(audio.extensions) == {
        "urn:ietf:params:rtp-hdrext:ssrc-audio-level", "urn:ietf:params:rtp-hdrext:sdes:mid"
    }
    # VP9 without profile-id means profile 0; H264 97 lacks packetization-mode=1.
    assert [(c.payload_type, c.name, c.rtx_payload_type) for c in video.codecs] == [
        (120, "VP8", 124), (121, "VP9", 125), (126, "H264", 127)
    ]
    assert video.remote_rtx_ssrcs == {3327458219: 1091762350}
    assert section(result, 1)[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 120 121 126 124 125 127"


def test_sendonly_extmap_is_answered_recvonly() -> None:
    level = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    offer = (FIXTURES / "firefox_sendrecv.sdp").read_text()
    offer = offer.replace(f"a=extmap:1 {level}", f"a=extmap:1/sendonly {level}")
    result = answer_offer(offer, LOCAL, AnswerPolicy.whip(), rng=counter())
    # RFC 8285 s6: a sendonly extension is answered recvonly.
    assert "a=extmap:1/recvonly urn:ietf:params:rtp-hdrext:ssrc-audio-level" in section(result, 0)


def test_datachannel_accepted_and_rejected_by_policy() -> None:
    result = answer("chrome_datachannel.sdp", AnswerPolicy.sdk())
    assert section(result, 1) == [
        "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel", *TRANSPORT_LINES, "a=mid:1", "a=sctp-port:5000",
        "a=max-message-size:262144",
    ]
    data = result.by_mid("1")
    assert data is not None
    assert (data.sctp_port, data.remote_sctp_port, data.remote_max_message_size) == (5000, 5000, 262144)

    result = answer("chrome_datachannel.sdp", AnswerPolicy.sdk(data_channels=False))
    assert section(result, 1) == ["m=application 0 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", "a=mid:1"]
    assert [(r.index, r.kind, r.mid, r.reason) for r in result.rejected] == [
        (1, "application", "1", "m-line 1 (application): data channels are disabled on this endpoint")
    ]
    assert "a=group:BUNDLE 0" in lines(result)


def test_whep_endpoint_rejects_a_sendonly_m_line() -> None:
    result = answer("chrome_whip_simulcast.sdp", AnswerPolicy.sdk())
    assert result.media[1].direction == "recvonly"
    with pytest.raises(SdpError) as info:
        answer("chrome_whip_simulcast.sdp", AnswerPolicy.whep())
    assert str(info.value) == (
        "no m-line could be accepted: m-line 0 (audio): offered sendonly but this endpoint is sendonly only; "
        "m-line 1 (video): offered sendonly but this endpoint is sendonly only"
    )


def test_no_common_codec_rejects_m_line() -> None:
    offer = (FIXTURES / "chrome_whep_recvonly.sdp").read_text()
    offer = offer.replace("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46", "m=video 9 UDP/TLS/RTP/SAVPF 45 46 63")
    offer += "a=rtpmap:63 red/90000\r\n"
    # A viewer policy without AV1 (the default codec list: what publishers' answers use).
    policy = AnswerPolicy(frozenset({"sendonly"}))
    result = answer_offer(offer, LOCAL, policy, rng=counter())
    assert result.rejected[0].reason == "m-line 1 (video): no common codec; offered: AV1, red"
    assert section(result, 1)[:3] == ["m=video 0 UDP/TLS/RTP/SAVPF 45 46 63", "c=IN IP4 0.0.0.0", "a=mid:1"]
    assert result.bundle == ("0",)
    # WHEP viewers also take AV1 (after the others), for sources that send nothing else (RTMP av01).
    result = answer_offer(offer, LOCAL, AnswerPolicy.whep(), rng=counter())
    assert not result.rejected and section(result, 1)[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 45 46"


def test_whep_viewers_take_h265_main_with_the_offered_fmtp() -> None:
    """RFC 7798 s7.1: H265 Main (profile-id 1, also when absent) for RTMP hvc1 sources; other
    profiles are declined; publishers' answers do not take it."""
    offer = (FIXTURES / "chrome_whep_recvonly.sdp").read_text()
    offer = offer.replace("m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 45 46", "m=video 9 UDP/TLS/RTP/SAVPF 49 50 51 52")
    offer += (
        "a=rtpmap:49 H265/90000\r\na=fmtp:49 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST\r\n"
        "a=rtcp-fb:49 nack pli\r\na=rtpmap:50 rtx/90000\r\na=fmtp:50 apt=49\r\n"
        "a=rtpmap:51 H265/90000\r\na=fmtp:51 level-id=93;profile-id=2;tier-flag=0\r\n"
        "a=rtpmap:52 H265/90000\r\n"
    )
    result = answer_offer(offer, LOCAL, AnswerPolicy.whep(), rng=counter())
    assert not result.rejected
    lines = section(result, 1)
    assert lines[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 49 52 50", lines  # codecs, then rtx
    assert "a=fmtp:49 level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST" in lines
    assert "a=rtcp-fb:49 nack pli" in lines
    result = answer_offer(offer, LOCAL, AnswerPolicy(frozenset({"sendonly"})), rng=counter())
    assert result.rejected and "no common codec; offered: H265" in result.rejected[0].reason


def _minimal(extra_session: str = "", extra_media: str = "", fmt: str = "96") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + extra_session
        + f"m=video 9 UDP/TLS/RTP/SAVPF {fmt}\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
        + "a=rtpmap:96 VP8/90000\r\n" + extra_media
    )


GOOD_SESSION = "a=group:BUNDLE 0\r\n"
GOOD_MEDIA = (
    "a=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
    f"a=fingerprint:sha-256 {FP}\r\na=setup:actpass\r\n"
)


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        (_minimal("", GOOD_MEDIA),
         "offer has no a=group:BUNDLE; trackmesh carries all media on one transport (RFC 9143)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA.replace("a=rtcp-mux\r\n", "")),
         "m-line 0 (video): no a=rtcp-mux; RTP and RTCP must share the port (RFC 8858)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA.replace(f"a=fingerprint:sha-256 {FP}\r\n", "")),
         "m-line 0 (video): no a=fingerprint at media or session level; DTLS-SRTP needs one (RFC 8122 s5)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA.replace("sha-256", "sha-1")),
         "m-line 0 (video): no usable a=fingerprint; offered sha-1, need sha-256, sha-384 or sha-512 (RFC 8122 s5)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA.replace("a=ice-ufrag:abcd\r\n", "")),
         "m-line 0 (video): no a=ice-ufrag/a=ice-pwd at media or session level (RFC 8839 s5.4)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA.replace("actpass", "passive")),
         "m-line 0 (video): a=setup:passive is not supported; trackmesh is always the DTLS server "
         "(a=setup:passive), so the offer must use actpass or active (RFC 8842 s5.2)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA, fmt="45"),
         "no m-line could be accepted: m-line 0 (video): no common codec; offered: PT 45"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA, fmt="abc"),
         "m-line 0 (video): format 'abc' is not an RTP payload type 0-127"),
        (_minimal("a=group:BUNDLE 0 7\r\n", GOOD_MEDIA),
         "a=group:BUNDLE names mid '7' but no m-line has it (RFC 5888 s5)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA).replace("a=mid:0\r\n", ""),
         "m-line 0 (video): no a=mid; unified plan needs one per m-line (RFC 8829 s5.2.1)"),
        (_minimal(GOOD_SESSION, GOOD_MEDIA + "a=rid:h send\r\na=simulcast:send h;l\r\n"
                  "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"),
         "m-line 0 (video): a=simulcast names rid 'l' with no a=rid:l send line (RFC 8853 s5.1)"),
        ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "offer has no m= lines"),
        ("<html>garbage</html>", "line 1: not an SDP '<type>=<value>' line: '<html>garbage</html>'"),
        ("", "missing v= line (RFC 8866 s5)"),
    ],
)
def test_offer_errors(offer: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        answer_offer(offer, LOCAL, AnswerPolicy.whip(), rng=counter())
    assert str(info.value) == message


def test_minimal_offer_accepted_and_active_setup_ok() -> None:
    result = answer_offer(_minimal(GOOD_SESSION, GOOD_MEDIA.replace("actpass", "active")), LOCAL, AnswerPolicy.whip())
    assert result.transport.setup == "active"
    assert "a=setup:passive" in section(result, 0)
    assert parse(result.sdp) == result.answer


def test_simulcast_with_paused_layer_and_pt_restriction() -> None:
    media = GOOD_MEDIA + (
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        "a=rtpmap:45 AV1/90000\r\n"
        "a=rid:f send pt=96;max-width=1920\r\na=rid:h send pt=45\r\na=rid:q send\r\n"
        "a=simulcast:send f;h;~q\r\n"
    )
    result = answer_offer(_minimal(GOOD_SESSION, media, fmt="96 45"), LOCAL, AnswerPolicy.whip())
    # h only allows AV1, which we decline, so it is dropped; q stays paused.
    assert section(result, 0)[-5:-2] == ["a=rid:f recv pt=96", "a=rid:q recv", "a=simulcast:recv f;~q"]
    assert [r.id for r in result.media[0].rids] == ["f", "q"]
    assert result.media[0].rids[0].params == [("max-width", "1920")]


def test_simulcast_declined_without_rid_extension() -> None:
    media = GOOD_MEDIA + "a=rid:f send\r\na=rid:h send\r\na=simulcast:send f;h\r\n"
    result = answer_offer(_minimal(GOOD_SESSION, media), LOCAL, AnswerPolicy.whip())
    assert not any(line.startswith(("a=rid", "a=simulcast")) for line in lines(result))
    assert result.media[0].simulcast is None


def test_offerer_rejected_m_line_and_unbundled_m_line() -> None:
    offer = _minimal(GOOD_SESSION, GOOD_MEDIA) + (
        "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=text 9 UDP/TLS/RTP/SAVPF 98\r\na=mid:3\r\n"
    ).replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 3")
    offer = offer.replace(GOOD_SESSION, "a=group:BUNDLE 0 3\r\n")
    result = answer_offer(offer, LOCAL, AnswerPolicy.whip())
    assert [r.reason for r in result.rejected] == [
        "m-line 1 (audio): rejected by the offerer (port 0)",
        "m-line 2 (audio): mid 2 is outside the first a=group:BUNDLE (RFC 9143)",
        "m-line 3 (text): media kind 'text' is not supported",
    ]
    assert [line for line in lines(result) if line.startswith("m=")] == [
        "m=video 40000 UDP/TLS/RTP/SAVPF 96", "m=audio 0 UDP/TLS/RTP/SAVPF 111", "m=audio 0 UDP/TLS/RTP/SAVPF 111",
        "m=text 0 UDP/TLS/RTP/SAVPF 98",
    ]


fixture_lines = [
    line for name in ("chrome_whip_simulcast.sdp", "firefox_sendrecv.sdp", "chrome_datachannel.sdp")
    for line in (FIXTURES / name).read_text().splitlines()
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(fixture_lines), max_size=60), st.sampled_from(["whip", "whep", "sdk"]))
def test_answer_random_offers_only_raise_sdp_error(offer_lines: list[str], role: str) -> None:
    policy = getattr(AnswerPolicy, role)()
    text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + "\r\n".join(offer_lines)
    try:
        result = answer_offer(text, LOCAL, policy, rng=counter())
    except SdpError as exc:
        assert str(exc)
    else:
        assert parse(result.sdp) == result.answer
        assert len(result.answer.media) == len(result.offer.media)
        assert len(result.media) + len(result.rejected) == len(result.offer.media)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_answer_garbage_only_raises_sdp_error(text: str | bytes) -> None:
    with pytest.raises(SdpError):
        answer_offer(text, LOCAL, AnswerPolicy.sdk())
