"""Answer a remote WebRTC offer (WHIP publisher, WHEP viewer, SDK client).

trackmesh is always the answerer, ICE-lite, and the DTLS server. ``answer_offer`` parses the
offer, checks the transport requirements every WebRTC peer meets (BUNDLE, rtcp-mux, ICE
credentials, a DTLS fingerprint), negotiates each m-line against an :class:`AnswerPolicy`, and
returns the answer text plus the negotiated model the transport needs.

Requirements the whole session depends on raise :class:`SdpError`; an m-line we merely cannot
serve is rejected with port 0 (RFC 3264 s6) and its reason recorded in
``AnswerResult.rejected``. m-lines are numbered from 0 in messages, matching Chromium's mids.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from trackmesh.errors import LocalProtocolError
from trackmesh.sdp.codecs import (
    DEFAULT_AUDIO_CODECS,
    DEFAULT_VIDEO_CODECS,
    EXT_ABS_SEND_TIME,
    EXT_AUDIO_LEVEL,
    EXT_MID,
    EXT_RID,
    EXT_RRID,
    EXT_TWCC,
    VIEWER_VIDEO_CODECS,
    CodecSpec,
    NegotiatedCodec,
    offered_codec_names,
    parse_fmtp,
)
from trackmesh.sdp.model import (
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
    render,
)

__all__ = [
    "AnswerPolicy",
    "AnswerResult",
    "LocalParams",
    "NegotiatedMedia",
    "RejectedMedia",
    "RemoteTransport",
    "SendSsrcs",
    "answer_offer",
]


RTP_PROTO = "UDP/TLS/RTP/SAVPF"
SCTP_PROTO = "UDP/DTLS/SCTP"
# RFC 8841 s6.1: without a=max-message-size the peer can take 64 KiB.
DEFAULT_MAX_MESSAGE_SIZE = 65536
# RFC 8122 s5 lets an offer carry several fingerprints; we verify against the strongest.
_FINGERPRINT_PREFERENCE = ("sha-512", "sha-384", "sha-256")
DEFAULT_HEADER_EXTENSIONS = frozenset({EXT_MID, EXT_RID, EXT_RRID, EXT_ABS_SEND_TIME, EXT_TWCC, EXT_AUDIO_LEVEL})
DEFAULT_RTCP_FEEDBACK = frozenset({"nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"})


@dataclass(frozen=True)
class AnswerPolicy:
    """What this endpoint serves. ``directions`` are the directions *we* may take on an m-line:
    a WHIP endpoint only receives, a WHEP endpoint only sends, an SDK session does both."""

    directions: frozenset[str]
    audio_codecs: tuple[CodecSpec, ...] = DEFAULT_AUDIO_CODECS
    video_codecs: tuple[CodecSpec, ...] = DEFAULT_VIDEO_CODECS
    rtx: bool = True
    header_extensions: frozenset[str] = DEFAULT_HEADER_EXTENSIONS
    rtcp_feedback: frozenset[str] = DEFAULT_RTCP_FEEDBACK
    simulcast: bool = True
    data_channels: bool = False
    sctp_port: int = 5000
    max_message_size: int = 262144

    @classmethod
    def whip(cls, *, data_channels: bool = False) -> AnswerPolicy:
        return cls(frozenset({"recvonly"}), data_channels=data_channels)

    @classmethod
    def whep(cls, *, data_channels: bool = False) -> AnswerPolicy:
        return cls(frozenset({"sendonly"}), data_channels=data_channels, video_codecs=VIEWER_VIDEO_CODECS)

    @classmethod
    def sdk(cls, *, data_channels: bool = True) -> AnswerPolicy:
        return cls(frozenset({"sendrecv", "sendonly", "recvonly"}), data_channels=data_channels)


@dataclass(frozen=True)
class LocalParams:
    """Our side of the transport. ``fingerprint`` is the sha-256 of our DTLS certificate as
    colon-separated hex; ``host``/``port`` is our single host candidate."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str
    host: str
    port: int
    ice_lite: bool = True
    cname: str = "trackmesh"
    stream_id: str = "trackmesh"
    session_id: int | None = None
    session_version: int = 1

    def candidate(self) -> Candidate:
        # The highest host priority (RFC 8445 s5.1.2.1: type pref 126, local pref 65535, comp 1).
        return Candidate("1", 1, "udp", 2130706431, self.host, self.port, "host")


@dataclass(frozen=True)
class SendSsrcs:
    """SSRCs the caller wants us to announce for an m-line we send on."""

    ssrc: int
    rtx_ssrc: int | None = None


@dataclass(frozen=True)
class RemoteTransport:
    """The offerer's ICE/DTLS parameters, taken from the BUNDLE-tagged m-line (RFC 9143 s7.2)."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: Fingerprint
    fingerprints: tuple[Fingerprint, ...]
    setup: str
    ice_options: tuple[str, ...]
    ice_lite: bool
    candidates: tuple[Candidate, ...]
    end_of_candidates: bool


@dataclass(frozen=True)
class NegotiatedMedia:
    """One accepted m-line. ``direction`` is ours (as in the answer)."""

    index: int
    mid: str
    kind: str
    direction: str
    transport: RemoteTransport
    codecs: tuple[NegotiatedCodec, ...] = ()
    extensions: Mapping[str, int] = field(default_factory=dict)
    rids: tuple[Rid, ...] = ()
    simulcast: Simulcast | None = None
    remote_ssrcs: tuple[int, ...] = ()
    remote_rtx_ssrcs: Mapping[int, int] = field(default_factory=dict)
    remote_cname: str | None = None
    remote_msid: Msid | None = None
    local_ssrc: int | None = None
    local_rtx_ssrc: int | None = None
    local_msid: Msid | None = None
    sctp_port: int | None = None
    remote_sctp_port: int | None = None
    remote_max_message_size: int | None = None


@dataclass(frozen=True)
class RejectedMedia:
    index: int
    kind: str
    mid: str | None
    reason: str


@dataclass(frozen=True)
class AnswerResult:
    """The answer (``sdp``) and what was negotiated (``media``, ``transport``...).

    A connection keeps its AnswerResult for its whole life (a subsequent offer is checked against it),
    so the parsed offer and answer are not kept: their objects cost more than 100 KB for a meeting
    participant's 13 m-lines (issue 19). :attr:`offer` and :attr:`answer` parse the texts again when
    asked (a renegotiation does, once); ``parse(render(answer)) == answer`` (tests/transports/webrtc)."""

    sdp: str
    offer_sdp: str
    transport: RemoteTransport
    bundle: tuple[str, ...]
    media: tuple[NegotiatedMedia, ...]
    rejected: tuple[RejectedMedia, ...]

    @property
    def answer(self) -> SessionDescription:
        """Our answer, parsed from :attr:`sdp` (a new object on each access)."""
        return parse(self.sdp)

    @property
    def offer(self) -> SessionDescription:
        """The offer it answers, parsed from :attr:`offer_sdp` (a new object on each access)."""
        return parse(self.offer_sdp)

    def by_mid(self, mid: str) -> NegotiatedMedia | None:
        return next((m for m in self.media if m.mid == mid), None)


class _Reject(Exception):
    """Internal: this m-line is answered with port 0 for the given reason."""


# ---------------------------------------------------------------------------------------------


def _label(index: int, m: MediaDescription) -> str:
    return f"m-line {index} ({m.kind})"


def _remote_transport(sd: SessionDescription, index: int, m: MediaDescription) -> RemoteTransport:
    """Transport parameters of the BUNDLE-tagged m-line (media level wins over session level)."""
    label = _label(index, m)
    ufrag, pwd = m.ice_ufrag or sd.ice_ufrag, m.ice_pwd or sd.ice_pwd
    if ufrag is None or pwd is None:
        raise SdpError(f"{label}: no a=ice-ufrag/a=ice-pwd at media or session level (RFC 8839 s5.4)")
    fingerprints = m.fingerprints or sd.fingerprints
    if not fingerprints:
        raise SdpError(f"{label}: no a=fingerprint at media or session level; DTLS-SRTP needs one (RFC 8122 s5)")
    usable = [fp for algo in _FINGERPRINT_PREFERENCE for fp in fingerprints if fp.algorithm == algo]
    if not usable:
        offered = ", ".join(fp.algorithm for fp in fingerprints)
        raise SdpError(
            f"{label}: no usable a=fingerprint; offered {offered}, need sha-256, sha-384 or sha-512 (RFC 8122 s5)"
        )
    return RemoteTransport(
        ice_ufrag=ufrag,
        ice_pwd=pwd,
        fingerprint=usable[0],
        fingerprints=tuple(fingerprints),
        # RFC 4145 s4: an absent a=setup means active, which suits us as the DTLS server.
        setup=m.setup or sd.setup or "active",
        ice_options=tuple(m.ice_options or sd.ice_options),
        ice_lite=sd.ice_lite,
        candidates=tuple(m.candidates),
        end_of_candidates=m.end_of_candidates,
    )


def _check_bundled_transport(sd: SessionDescription, index: int, m: MediaDescription, t: RemoteTransport) -> None:
    label = _label(index, m)
    ufrag, pwd = m.ice_ufrag or sd.ice_ufrag, m.ice_pwd or sd.ice_pwd
    # RFC 9143 s7.2: bundled m-lines share one transport, so their ICE credentials must agree.
    if (ufrag is not None and ufrag != t.ice_ufrag) or (pwd is not None and pwd != t.ice_pwd):
        raise SdpError(f"{label}: a=ice-ufrag/a=ice-pwd differ from the BUNDLE-tagged m-line (RFC 9143 s7.2)")
    setup = m.setup or sd.setup or t.setup
    if setup not in ("actpass", "active"):
        raise SdpError(
            f"{label}: a=setup:{setup} is not supported; trackmesh is always the DTLS server "
            "(a=setup:passive), so the offer must use actpass or active (RFC 8842 s5.2)"
        )


def _answer_direction(index: int, m: MediaDescription, policy: AnswerPolicy) -> str:
    # RFC 3264 s6.1: the answer's direction must be compatible with the offered one.
    offered = m.effective_direction
    candidates = {
        "sendrecv": ("sendrecv", "recvonly", "sendonly"),
        "sendonly": ("recvonly",),
        "recvonly": ("sendonly",),
        "inactive": ("inactive",),
    }[offered]
    for direction in candidates:
        if direction in policy.directions or direction == "inactive":
            return direction
    allowed = "/".join(sorted(policy.directions))
    raise _Reject(f"{_label(index, m)}: offered {offered} but this endpoint is {allowed} only")


def _negotiate_codecs(
    index: int, m: MediaDescription, policy: AnswerPolicy, twcc: bool, keep: tuple[NegotiatedCodec, ...] | None = None
) -> list[NegotiatedCodec]:
    specs = policy.audio_codecs if m.kind == "audio" else policy.video_codecs
    offered: list[tuple[int, RtpMap]] = []
    rtx_for: dict[int, int] = {}
    for fmt in m.formats:
        if not fmt.isdigit() or int(fmt) > 127:
            raise SdpError(f"{_label(index, m)}: format {fmt!r} is not an RTP payload type 0-127")
        pt = int(fmt)
        rtpmap = m.rtpmap(pt)
        if rtpmap is None:
            continue  # static payload types: nothing we forward
        if rtpmap.encoding.lower() == "rtx":
            apt = parse_fmtp(m.fmtps.get(pt)).get("apt", "")
            if apt.isdigit():
                rtx_for.setdefault(int(apt), pt)
        else:
            offered.append((pt, rtpmap))
    chosen: list[NegotiatedCodec] = []
    for spec in specs:
        for pt, rtpmap in offered:
            fmtp = parse_fmtp(m.fmtps.get(pt))
            if any(c.payload_type == pt for c in chosen) or not spec.matches(rtpmap, fmtp):
                continue
            rtx = rtx_for.get(pt) if policy.rtx else None
            rtx_map = m.rtpmap(rtx) if rtx is not None else None
            if rtx_map is not None and rtx_map.clock_rate != rtpmap.clock_rate:
                rtx = None  # RFC 4588 s8.1: the rtx clock rate must equal the original's
            feedback: list[str] = []
            for value in m.feedback(pt):
                # transport-cc feedback is meaningless without the transport-wide-cc extension.
                usable = value in policy.rtcp_feedback and (value != "transport-cc" or twcc)
                if usable and value not in feedback:
                    feedback.append(value)
            chosen.append(
                NegotiatedCodec(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels, fmtp, rtx, tuple(feedback))
            )
    if keep is not None:
        # A subsequent answer keeps the payload types of an m-line already negotiated (RFC 3264 s8.3.2, RFC 8829
        # s5.3.2): the forwarding set up for it maps those numbers, so codecs it did not have are left out.
        before = {(c.payload_type, c.name.lower(), c.clock_rate) for c in keep}
        chosen = [c for c in chosen if (c.payload_type, c.name.lower(), c.clock_rate) in before]
        if not chosen:
            raise SdpError(
                f"{_label(index, m)}: mid {m.mid} no longer offers any of its negotiated payload types "
                f"{sorted(p for p, _, _ in before)} (RFC 3264 s8.3.2)"
            )
    if not chosen:
        raise _Reject(f"{_label(index, m)}: no common codec; offered: {offered_codec_names(m)}")
    return chosen


def _negotiate_extensions(index: int, m: MediaDescription, policy: AnswerPolicy) -> list[Extmap]:
    out: list[Extmap] = []
    used: set[int] = set()
    invert = {"sendonly": "recvonly", "recvonly": "sendonly"}
    for ext in m.extmaps:
        if ext.id in used:
            raise SdpError(f"{_label(index, m)}: a=extmap id {ext.id} is used twice (RFC 8285 s5)")
        used.add(ext.id)
        # 4096-4351 only appear in answers (RFC 8285 s7); an offer using them is ignored.
        if ext.uri in policy.header_extensions and ext.id <= 255:
            direction = invert.get(ext.direction, ext.direction) if ext.direction else None
            out.append(Extmap(ext.id, ext.uri, direction))
    return out


def _negotiate_simulcast(
    index: int, m: MediaDescription, codecs: list[NegotiatedCodec]
) -> tuple[list[Rid], Simulcast] | None:
    """Answer a=simulcast:send with a=simulcast:recv in the same order (RFC 8853 s5.3)."""
    if m.simulcast is None or not m.simulcast.send:
        return None
    send_rids = {r.id: r for r in m.rids if r.direction == "send"}
    pts = {c.payload_type for c in codecs}
    streams: list[list[SimulcastStream]] = []
    remote: list[Rid] = []
    for alternatives in m.simulcast.send:
        kept: list[SimulcastStream] = []
        for alt in alternatives:
            rid = send_rids.get(alt.rid)
            if rid is None:
                raise SdpError(
                    f"{_label(index, m)}: a=simulcast names rid {alt.rid!r} with no "
                    f"a=rid:{alt.rid} send line (RFC 8853 s5.1)"
                )
            # RFC 8851 s6: a rid restricted to payload types we declined cannot be received.
            if rid.payload_types and not pts.intersection(rid.payload_types):
                continue
            kept.append(SimulcastStream(alt.rid, alt.paused))
            remote.append(rid)
        if kept:
            streams.append(kept)
    if not streams:
        return None
    return remote, Simulcast(recv=streams)


def _offered_ssrcs(m: MediaDescription) -> tuple[tuple[int, ...], dict[int, int], str | None]:
    fid = {g.ssrcs[0]: g.ssrcs[1] for g in m.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) == 2}
    repair = set(fid.values())
    media: list[int] = []
    for line in m.ssrcs:
        if line.ssrc not in repair and line.ssrc not in media:
            media.append(line.ssrc)
    cname = next((s.value for s in m.ssrcs if s.attribute == "cname"), None)
    return tuple(media), fid, cname


def _transport_attrs(out: MediaDescription, local: LocalParams) -> None:
    out.connection = f"IN {'IP6' if ':' in local.host else 'IP4'} {local.host}"
    out.ice_ufrag, out.ice_pwd = local.ice_ufrag, local.ice_pwd
    out.fingerprints = [Fingerprint("sha-256", local.fingerprint.upper())]
    # We are the DTLS server (RFC 8842 s5.2): the offer said actpass or active.
    out.setup = "passive"


class _SsrcSource:
    def __init__(self, rng: Callable[[], int], taken: set[int]) -> None:
        self._rng, self._taken = rng, taken

    def take(self) -> int:
        for _ in range(1000):
            value = self._rng() & 0xFFFFFFFF
            if value and value not in self._taken:
                self._taken.add(value)
                return value
        raise LocalProtocolError("SSRC generator keeps returning used values")  # a broken injected RNG


def _accept_rtp(
    index: int,
    m: MediaDescription,
    policy: AnswerPolicy,
    local: LocalParams,
    transport: RemoteTransport,
    ssrc_source: _SsrcSource,
    send_ssrcs: Mapping[str, SendSsrcs],
    keep_codecs: Mapping[str, tuple[NegotiatedCodec, ...]],
) -> tuple[MediaDescription, NegotiatedMedia]:
    assert m.mid is not None
    label = _label(index, m)
    if m.proto != RTP_PROTO:
        raise _Reject(f"{label}: proto {m.proto} is not supported; need {RTP_PROTO} (RFC 8829 s5.1.2)")
    if not m.rtcp_mux:
        raise SdpError(f"{label}: no a=rtcp-mux; RTP and RTCP must share the port (RFC 8858)")
    direction = _answer_direction(index, m, policy)
    extmaps = _negotiate_extensions(index, m, policy)
    ext_ids = {e.uri: e.id for e in extmaps}
    codecs = _negotiate_codecs(index, m, policy, EXT_TWCC in ext_ids, keep_codecs.get(m.mid))

    out = MediaDescription(kind=m.kind, port=local.port, proto=RTP_PROTO, formats=[])
    _transport_attrs(out, local)
    out.mid, out.direction, out.extmaps = m.mid, direction, extmaps
    out.rtcp_mux, out.rtcp_rsize = True, m.rtcp_rsize
    for codec in codecs:
        # Keep the offerer's payload type numbers and spelling (RFC 3264 s6.1).
        out.formats.append(str(codec.payload_type))
        out.rtpmaps.append(RtpMap(codec.payload_type, codec.name, codec.clock_rate, codec.channels))
        out.rtcp_fbs += [RtcpFb(str(codec.payload_type), fb) for fb in codec.rtcp_feedback]
        if m.fmtps.get(codec.payload_type):
            out.fmtps[codec.payload_type] = m.fmtps[codec.payload_type]
    for codec in codecs:
        if codec.rtx_payload_type is not None:
            rtx = codec.rtx_payload_type
            out.formats.append(str(rtx))
            out.rtpmaps.append(RtpMap(rtx, "rtx", codec.clock_rate))
            out.fmtps[rtx] = f"apt={codec.payload_type}"

    rids: tuple[Rid, ...] = ()
    simulcast = None
    receives = direction in ("recvonly", "sendrecv")
    # Without the rtp-stream-id extension layers cannot be told apart, so simulcast is declined
    # by leaving it out of the answer (RFC 8853 s5.3) and the sender falls back to one stream.
    if receives and policy.simulcast and EXT_RID in ext_ids:
        negotiated = _negotiate_simulcast(index, m, codecs)
        if negotiated is not None:
            remote_rids, simulcast = negotiated
            rids = tuple(remote_rids)
            pts = {c.payload_type for c in codecs}
            out.rids = [Rid(r.id, "recv", [p for p in r.payload_types if p in pts]) for r in remote_rids]
            out.simulcast = simulcast

    remote_ssrcs, remote_rtx, remote_cname = _offered_ssrcs(m)
    local_ssrc = local_rtx = None
    local_msid = None
    if direction in ("sendonly", "sendrecv"):
        has_rtx = any(c.rtx_payload_type is not None for c in codecs)
        given = send_ssrcs.get(m.mid)
        local_ssrc = given.ssrc if given else ssrc_source.take()
        if has_rtx:
            local_rtx = given.rtx_ssrc if given and given.rtx_ssrc is not None else ssrc_source.take()
        local_msid = Msid(local.stream_id, f"{local.stream_id}-{m.mid}")
        out.msids = [local_msid]
        msid_value = f"{local_msid.stream} {local_msid.track}"
        if local_rtx is not None:
            # RFC 4588 s8.2 / RFC 5576 s4.2: FID pairs the media SSRC with its RTX SSRC.
            out.ssrc_groups = [SsrcGroup("FID", [local_ssrc, local_rtx])]
        for ssrc in (local_ssrc, local_rtx):
            if ssrc is not None:
                out.ssrcs += [Ssrc(ssrc, "cname", local.cname), Ssrc(ssrc, "msid", msid_value)]

    negotiated_media = NegotiatedMedia(
        index=index,
        mid=m.mid,
        kind=m.kind,
        direction=direction,
        transport=transport,
        codecs=tuple(codecs),
        extensions=ext_ids,
        rids=rids,
        simulcast=simulcast,
        remote_ssrcs=remote_ssrcs,
        remote_rtx_ssrcs=remote_rtx,
        remote_cname=remote_cname,
        remote_msid=m.msids[0] if m.msids else None,
        local_ssrc=local_ssrc,
        local_rtx_ssrc=local_rtx,
        local_msid=local_msid,
    )
    return out, negotiated_media


def _accept_data(
    index: int, m: MediaDescription, policy: AnswerPolicy, local: LocalParams, transport: RemoteTransport
) -> tuple[MediaDescription, NegotiatedMedia]:
    assert m.mid is not None
    label = _label(index, m)
    if m.proto != SCTP_PROTO or m.formats != ["webrtc-datachannel"]:
        raise _Reject(
            f"{label}: data channel m-line must be '{SCTP_PROTO} webrtc-datachannel', "
            f"got '{m.proto} {' '.join(m.formats)}' (RFC 8841 s4.1)"
        )
    if not policy.data_channels:
        raise _Reject(f"{label}: data channels are disabled on this endpoint")
    out = MediaDescription(kind="application", port=local.port, proto=SCTP_PROTO, formats=["webrtc-datachannel"])
    _transport_attrs(out, local)
    out.mid, out.sctp_port, out.max_message_size = m.mid, policy.sctp_port, policy.max_message_size
    negotiated = NegotiatedMedia(
        index=index,
        mid=m.mid,
        kind="application",
        direction="sendrecv",
        transport=transport,
        sctp_port=policy.sctp_port,
        # RFC 8841 s5.2: an absent a=sctp-port means 5000.
        remote_sctp_port=m.sctp_port if m.sctp_port is not None else 5000,
        remote_max_message_size=m.max_message_size if m.max_message_size is not None else DEFAULT_MAX_MESSAGE_SIZE,
    )
    return out, negotiated


def _rejected_line(m: MediaDescription) -> MediaDescription:
    # RFC 3264 s6: a rejected stream keeps its format list and gets port 0; RFC 8829 s5.3.1
    # keeps the mid so the offerer can match it.
    return MediaDescription(
        kind=m.kind, port=0, proto=m.proto, formats=list(m.formats), connection="IN IP4 0.0.0.0", mid=m.mid
    )


def _check_mids(sd: SessionDescription) -> Group:
    bundle = sd.bundle_group()
    if bundle is None or not bundle.mids:
        raise SdpError("offer has no a=group:BUNDLE; trackmesh carries all media on one transport (RFC 9143)")
    mids: set[str] = set()
    for index, m in enumerate(sd.media):
        if m.mid is None:
            if m.port != 0 or m.bundle_only:
                raise SdpError(f"{_label(index, m)}: no a=mid; unified plan needs one per m-line (RFC 8829 s5.2.1)")
            continue
        if m.mid in mids:
            raise SdpError(f"{_label(index, m)}: a=mid:{m.mid} is used by an earlier m-line (RFC 5888 s4)")
        mids.add(m.mid)
    for mid in bundle.mids:
        if mid not in mids:
            raise SdpError(f"a=group:BUNDLE names mid {mid!r} but no m-line has it (RFC 5888 s5)")
    return bundle


def answer_offer(
    offer_text: str | bytes,
    local: LocalParams,
    policy: AnswerPolicy,
    *,
    send_ssrcs: Mapping[str, SendSsrcs] | None = None,
    keep_codecs: Mapping[str, tuple[NegotiatedCodec, ...]] | None = None,
    rng: Callable[[], int] | None = None,
) -> AnswerResult:
    """Answer ``offer_text``. ``send_ssrcs`` (by mid) fixes the SSRCs we announce on m-lines we
    send on; others come from ``rng`` (32-bit values, default :mod:`secrets`). ``keep_codecs``
    (by mid, for a subsequent answer) limits an m-line to the codecs it already negotiated, with
    the same payload types; an m-line that offers none of them any more raises :class:`SdpError`."""
    offer = parse(offer_text)
    if not offer.media:
        raise SdpError("offer has no m= lines")
    bundle = _check_mids(offer)
    by_mid = {m.mid: (i, m) for i, m in enumerate(offer.media) if m.mid is not None}
    tagged_index, tagged = by_mid[bundle.mids[0]]
    # RFC 9143 s7.2: the offerer-tagged m-line (first mid in the group) carries the transport.
    transport = _remote_transport(offer, tagged_index, tagged)

    draw = rng if rng is not None else (lambda: secrets.randbits(32))
    taken = {s.ssrc for m in offer.media for s in m.ssrcs}
    taken |= {s for given in (send_ssrcs or {}).values() for s in (given.ssrc, given.rtx_ssrc) if s is not None}
    ssrc_source = _SsrcSource(draw, taken)

    answer_media: list[MediaDescription] = []
    accepted: list[NegotiatedMedia] = []
    rejected: list[RejectedMedia] = []
    for index, m in enumerate(offer.media):
        label = _label(index, m)
        try:
            if m.port == 0 and not m.bundle_only:
                raise _Reject(f"{label}: rejected by the offerer (port 0)")
            if m.mid not in bundle.mids:
                raise _Reject(f"{label}: mid {m.mid} is outside the first a=group:BUNDLE (RFC 9143)")
            _check_bundled_transport(offer, index, m, transport)
            if m.kind in ("audio", "video"):
                line, negotiated = _accept_rtp(
                    index, m, policy, local, transport, ssrc_source, send_ssrcs or {}, keep_codecs or {}
                )
            elif m.kind == "application":
                line, negotiated = _accept_data(index, m, policy, local, transport)
            else:
                raise _Reject(f"{label}: media kind {m.kind!r} is not supported")
        except _Reject as reject:
            answer_media.append(_rejected_line(m))
            rejected.append(RejectedMedia(index, m.kind, m.mid, str(reject)))
            continue
        answer_media.append(line)
        accepted.append(negotiated)

    if not accepted:
        raise SdpError("no m-line could be accepted: " + "; ".join(r.reason for r in rejected))
    accepted_mids = [mid for mid in bundle.mids if any(a.mid == mid for a in accepted)]
    # The answerer-tagged m-line (first mid of the answer's group) carries our candidate; as an
    # ICE-lite agent we have gathered everything, so we also signal end-of-candidates (RFC 8840).
    tagged_line = next(line for line in answer_media if line.mid == accepted_mids[0] and line.port != 0)
    tagged_line.candidates = [local.candidate()]
    tagged_line.end_of_candidates = True

    session_id = local.session_id if local.session_id is not None else secrets.randbits(62)
    answer = SessionDescription(
        origin=Origin("-", str(session_id), str(local.session_version), "IN", "IP4", "127.0.0.1"),
        groups=[Group("BUNDLE", accepted_mids)],
        ice_lite=local.ice_lite,
        # RFC 8285 s6: echo extmap-allow-mixed only when offered.
        extmap_allow_mixed=offer.extmap_allow_mixed,
        media=answer_media,
    )
    for out, m in zip(answer_media, offer.media, strict=True):
        out.extmap_allow_mixed = m.extmap_allow_mixed and out.port != 0
    return AnswerResult(
        sdp=render(answer),
        offer_sdp=offer_text if isinstance(offer_text, str) else offer_text.decode(),
        transport=transport,
        bundle=tuple(accepted_mids),
        media=tuple(accepted),
        rejected=tuple(rejected),
    )
