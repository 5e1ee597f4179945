"""Codec and header-extension negotiation helpers shared by every SDP user (WebRTC, SIP).

:class:`CodecSpec` describes a codec we can forward and matches it against an offered
``a=rtpmap``/``a=fmtp`` pair (H.264 by profile, RFC 6184 s8.1; VP9 by profile-id, RFC 9628
s6); :class:`NegotiatedCodec` is what one answer settled on. The answer policy of a transport
(BUNDLE, ICE, DTLS, directions) lives with that transport, e.g.
:mod:`trackmesh.transports.webrtc.answer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trackmesh.sdp.model import MediaDescription, RtpMap

__all__ = [
    "AV1",
    "DEFAULT_AUDIO_CODECS",
    "DEFAULT_VIDEO_CODECS",
    "EXT_ABS_SEND_TIME",
    "EXT_AUDIO_LEVEL",
    "EXT_MID",
    "EXT_RID",
    "EXT_RRID",
    "EXT_TWCC",
    "G722",
    "H265",
    "OPUS",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "STATIC_RTPMAPS",
    "VIEWER_VIDEO_CODECS",
    "VP8",
    "VP9",
    "CodecSpec",
    "NegotiatedCodec",
    "h264_profile",
    "offered_codec_names",
    "parse_fmtp",
]

EXT_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
EXT_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
EXT_RRID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
EXT_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXT_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
EXT_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

# RFC 3551 s6: static payload types that need no a=rtpmap (named only for error messages).
STATIC_PAYLOAD_TYPES = {0: "PCMU", 3: "GSM", 4: "G723", 8: "PCMA", 9: "G722", 13: "CN", 18: "G729", 34: "H263"}


def parse_fmtp(params: str | None) -> dict[str, str]:
    """``a=fmtp`` parameters as a dict with lower-cased keys ("k=v;k2=v2", RFC 8866 s6.15)."""
    out: dict[str, str] = {}
    for item in (params or "").split(";"):
        key, _, value = item.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip()
    return out


@dataclass(frozen=True)
class CodecSpec:
    """A codec we can forward. ``required_fmtp`` values must match (case-insensitively);
    ``fmtp_defaults`` supply a parameter's value when the offer omits it."""

    name: str
    clock_rate: int
    channels: int | None = None
    required_fmtp: tuple[tuple[str, str], ...] = ()
    fmtp_defaults: tuple[tuple[str, str], ...] = ()

    def matches(self, rtpmap: RtpMap, fmtp: Mapping[str, str]) -> bool:
        if rtpmap.encoding.lower() != self.name.lower() or rtpmap.clock_rate != self.clock_rate:
            return False
        # RFC 8866 s6.6: an audio rtpmap without a channel count means one channel.
        if self.channels is not None and (rtpmap.channels or 1) != self.channels:
            return False
        defaults = dict(self.fmtp_defaults)
        for key, want in self.required_fmtp:
            got = fmtp.get(key, defaults.get(key))
            if got is None:
                return False
            if key == "profile-level-id":
                # Same H.264 profile at any level: a relay forwards the publisher's level as is.
                if h264_profile(got) is None or h264_profile(got) != h264_profile(want):
                    return False
            elif got.lower() != want.lower():
                return False
        return True


def h264_profile(profile_level_id: str) -> str | None:
    """The H.264 profile named by an SDP ``profile-level-id`` (RFC 6184 s8.1, table 5), ignoring
    the level: x264's ``42c01e`` and Chrome's ``42e01f`` are both Constrained Baseline."""
    if len(profile_level_id) != 6:
        return None
    try:
        idc, iop = int(profile_level_id[0:2], 16), int(profile_level_id[2:4], 16)
    except ValueError:
        return None
    if iop & 0x03:
        return None  # reserved_zero_2bits (constraint_set4/5 are the two bits above them)
    cs0, cs1, cs3 = iop & 0x80, iop & 0x40, iop & 0x10
    if (idc == 0x42 and cs1) or (idc == 0x4D and cs0) or (idc == 0x58 and cs0 and cs1):
        return "constrained-baseline"
    if idc == 0x42:
        return "baseline"
    if idc == 0x58:
        return "extended"
    if idc == 0x4D:
        return "main"
    if idc == 0x64:
        return "constrained-high" if iop == 0x0C else "high"
    if idc in (0x6E, 0x7A, 0xF4):
        return {0x6E: "high-10", 0x7A: "high-422", 0xF4: "high-444"}[idc] + ("-intra" if cs3 else "")
    return None


def _h264(profile_level_id: str) -> CodecSpec:
    # RFC 6184 s8.1: packetization-mode defaults to 0 (single NAL), which cannot carry the
    # STAP-A/FU-A packets browsers send, so mode 1 is required.
    return CodecSpec(
        "H264",
        90000,
        None,
        (("packetization-mode", "1"), ("profile-level-id", profile_level_id)),
        (("packetization-mode", "0"), ("profile-level-id", "420010")),
    )


OPUS = CodecSpec("opus", 48000, 2)
# Telephony codecs (RFC 3551 s4.5); G.722's RTP clock is 8000 although it samples at 16 kHz.
PCMU = CodecSpec("PCMU", 8000, 1)
PCMA = CodecSpec("PCMA", 8000, 1)
G722 = CodecSpec("G722", 8000, 1)
#: RFC 3551 s6 static payload types usable without an a=rtpmap line.
STATIC_RTPMAPS = {0: RtpMap(0, "PCMU", 8000, 1), 8: RtpMap(8, "PCMA", 8000, 1), 9: RtpMap(9, "G722", 8000, 1)}
VP8 = CodecSpec("VP8", 90000)
# RFC 9628 s6: profile-id defaults to 0 when absent.
VP9 = CodecSpec("VP9", 90000, None, (("profile-id", "0"),), (("profile-id", "0"),))
DEFAULT_AUDIO_CODECS = (OPUS,)
DEFAULT_VIDEO_CODECS = (VP8, VP9, _h264("42e01f"), _h264("42001f"), _h264("4d001f"), _h264("640c1f"))
# The AV1 RTP spec (AOMedia, s7.2): profile defaults to 0 (Main) when absent. Offered to WHEP
# viewers only (after the others), for sources that send nothing else (RTMP av01); publishers'
# answers are unchanged.
AV1 = CodecSpec("AV1", 90000, None, (("profile", "0"),), (("profile", "0"),))
# RFC 7798 s7.1: profile-id defaults to 1 (Main) when absent; level-id and tier-flag are the
# publisher's (a relay forwards its level as is, as for H.264). Main only: what encoders send
# over RTMP (x265, hardware encoders) and what WebRTC's H.265 decoders take. Viewers only, last.
H265 = CodecSpec("H265", 90000, None, (("profile-id", "1"),), (("profile-id", "1"),))
VIEWER_VIDEO_CODECS = (*DEFAULT_VIDEO_CODECS, AV1, H265)


@dataclass(frozen=True)
class NegotiatedCodec:
    payload_type: int
    name: str
    clock_rate: int
    channels: int | None
    fmtp: Mapping[str, str]
    rtx_payload_type: int | None
    rtcp_feedback: tuple[str, ...]


def offered_codec_names(m: MediaDescription) -> str:
    """The codecs an m-line offers, for error messages (static payload types by their RFC 3551 names)."""
    names: list[str] = []
    for fmt in m.formats:
        pt = int(fmt)
        rtpmap = m.rtpmap(pt)
        name = rtpmap.encoding if rtpmap else STATIC_PAYLOAD_TYPES.get(pt, f"PT {pt}")
        # rtx is a repair format, not a codec: listing it would not help the reader.
        if name.lower() != "rtx" and name not in names:
            names.append(name)
    return ", ".join(names) or "nothing"
