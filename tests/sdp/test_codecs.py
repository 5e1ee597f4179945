"""Codec matching helpers shared by SDP answerers (trackmesh.sdp.codecs)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackmesh.sdp.codecs import OPUS, VP9, h264_profile, offered_codec_names, parse_fmtp
from trackmesh.sdp.model import MediaDescription, RtpMap


def test_h264_profiles_match_by_profile_not_by_string() -> None:
    assert h264_profile("42c01e") == h264_profile("42e01f") == "constrained-baseline"
    assert h264_profile("4d401f") == "main"  # constraint_set0 clear: not Constrained Baseline (table 5)
    assert h264_profile("4d801f") == "constrained-baseline"
    assert h264_profile("42001f") == "baseline"
    assert h264_profile("4d001f") == "main"
    assert h264_profile("640c1f") == "constrained-high"
    assert h264_profile("640032") == "high"
    for bad in ("42e0", "zzzzzz", "42e11f", "42e31f"):
        assert h264_profile(bad) is None, bad


@given(st.text(max_size=200))
def test_h264_profile_of_any_text_is_a_name_or_none(text: str) -> None:
    assert h264_profile(text) is None or isinstance(h264_profile(text), str)


def test_fmtp_parameters_are_split_and_keys_lower_cased() -> None:
    assert parse_fmtp("Profile-Level-Id=42e01f; packetization-mode=1;;x") == {
        "profile-level-id": "42e01f",
        "packetization-mode": "1",
        "x": "",
    }
    assert parse_fmtp(None) == {}


@given(st.text(max_size=200))
def test_fmtp_of_any_text_gives_stripped_lower_case_keys(text: str) -> None:
    for key in parse_fmtp(text):
        assert key and key == key.strip().lower() and ";" not in key


def test_codec_specs_match_rtpmap_and_fmtp_defaults() -> None:
    assert OPUS.matches(RtpMap(111, "opus", 48000, 2), {})
    assert not OPUS.matches(RtpMap(111, "opus", 48000, None), {})  # RFC 8866 s6.6: no count = one channel
    assert VP9.matches(RtpMap(98, "VP9", 90000, None), {})  # RFC 9628 s6: profile-id defaults to 0
    assert not VP9.matches(RtpMap(98, "VP9", 90000, None), {"profile-id": "2"})


def test_offered_codec_names_skip_rtx_and_name_static_types() -> None:
    m = MediaDescription("audio", 9, "UDP/TLS/RTP/SAVPF", ["111", "0", "112"])
    m.rtpmaps = [RtpMap(111, "opus", 48000, 2), RtpMap(112, "rtx", 48000, None)]
    assert offered_codec_names(m) == "opus, PCMU"
