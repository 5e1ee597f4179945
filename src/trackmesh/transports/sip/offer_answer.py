"""SDP offer/answer for the SIP leg (RFC 3264) over plain RTP/AVP.

The answer mirrors every m-line of the offer (s6): one audio stream is accepted, every other
stream is answered with port 0 and the offered formats. The codec is the first one *in the
offerer's order* that we support (s6.1): Opus only as ``opus/48000/2`` (RFC 7587 s7), G.722,
PCMU, PCMA; ``telephone-event`` (RFC 4733) at the codec's clock rate rides along.

Directions follow s6.1: sendonly is answered recvonly, recvonly sendonly, inactive inactive,
so a phone putting the call on hold gets the answer that keeps the call up (the failure of
livekit/sip #779). An old-style hold (``c=0.0.0.0``, s8.4) counts as "the peer receives
nothing". ``a=ptime`` is mirrored when offered (RFC 3264 s6.1 / RFC 8866 s6.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trackmesh.sdp.codecs import G722, OPUS, PCMA, PCMU, STATIC_RTPMAPS, CodecSpec, parse_fmtp
from trackmesh.sdp.model import MediaDescription, Origin, RtpMap, SdpError, SessionDescription

__all__ = [
    "SIP_AUDIO_CODECS",
    "Negotiated",
    "answer_offer",
    "create_offer",
    "negotiated_from_answer",
    "reoffer",
]

#: What we can send and receive on the SIP leg, in our order of preference for our offers.
SIP_AUDIO_CODECS: tuple[CodecSpec, ...] = (OPUS, G722, PCMU, PCMA)
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
# Our offer's dynamic payload types (any 96-127 value works; these match common phones).
OPUS_PT = 111
DTMF_PT = 101
DTMF_48K_PT = 110


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The audio stream both sides agreed on, as seen from our side."""

    remote_address: str  # where we send RTP (0.0.0.0 on old-style hold)
    remote_port: int
    payload_type: int
    codec: str  # "opus", "G722", "PCMU", "PCMA"
    clock_rate: int
    channels: int
    dtmf_payload_type: int | None
    ptime: int
    direction: str  # our direction: "sendrecv", "sendonly" (peer on hold), "recvonly", "inactive"
    mline: int

    @property
    def on_hold(self) -> bool:
        """The peer does not want our media (it put the call on hold)."""
        return self.direction in ("recvonly", "inactive") or self.remote_address in ("0.0.0.0", "::")


def _rtpmap(m: MediaDescription, pt: int) -> RtpMap | None:
    return m.rtpmap(pt) or STATIC_RTPMAPS.get(pt)


def _connection_address(sd: SessionDescription, m: MediaDescription) -> str:
    c = m.connection or sd.connection
    if c is None:
        raise SdpError("no c= line for an audio stream (RFC 8866 s5.7)")
    parts = c.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"unsupported c= line {c!r}")
    return parts[2].split("/")[0]


def _pick(m: MediaDescription, supported: Sequence[CodecSpec]) -> tuple[int, RtpMap, int | None] | None:
    """The first offered format we support, and telephone-event at its clock rate."""
    chosen: tuple[int, RtpMap] | None = None
    for fmt in m.formats:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        rtpmap = _rtpmap(m, pt)
        if rtpmap is None:
            continue
        fmtp = parse_fmtp(m.fmtps.get(pt))
        if any(spec.matches(rtpmap, fmtp) for spec in supported):
            chosen = (pt, rtpmap)
            break
    if chosen is None:
        return None
    return chosen[0], chosen[1], _dtmf_for(m, chosen[1].clock_rate)


def _dtmf_for(m: MediaDescription, clock_rate: int) -> int | None:
    """The telephone-event format (RFC 4733 s7.1.1) at ``clock_rate``, if listed."""
    for fmt in m.formats:
        r = m.rtpmap(int(fmt)) if fmt.isdigit() else None
        if r is not None and r.encoding.lower() == "telephone-event" and r.clock_rate == clock_rate:
            return int(fmt)
    return None


def _negotiated(
    sd: SessionDescription, m: MediaDescription, index: int, pt: int, rtpmap: RtpMap, dtmf: int | None, direction: str
) -> Negotiated:
    return Negotiated(
        remote_address=_connection_address(sd, m),
        remote_port=m.port,
        payload_type=pt,
        codec=rtpmap.encoding,
        clock_rate=rtpmap.clock_rate,
        channels=rtpmap.channels or 1,
        dtmf_payload_type=dtmf,
        ptime=m.ptime or 20,
        direction=direction,
        mline=index,
    )


def answer_offer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    session_id: str,
    version: int,
    supported: Sequence[CodecSpec] = SIP_AUDIO_CODECS,
    hold: bool = False,
) -> tuple[SessionDescription, Negotiated | None]:
    """Our answer to ``offer`` with RTP on ``address:port``; None when no stream was acceptable
    (the caller answers 488 Not Acceptable Here). ``hold`` makes us the side that holds."""
    answer = SessionDescription(
        origin=Origin("trackmesh", session_id, str(version), "IN", "IP6" if ":" in address else "IP4", address),
        session_name="trackmesh",
        connection=f"IN {'IP6' if ':' in address else 'IP4'} {address}",
    )
    accepted: Negotiated | None = None
    for index, m in enumerate(offer.media):
        picked = None
        if accepted is None and m.kind == "audio" and m.proto in RTP_PROFILES and m.port != 0:
            picked = _pick(m, supported)
        if picked is None:
            # s6: a rejected stream is answered with port 0 and the offered formats.
            answer.media.append(MediaDescription(kind=m.kind, port=0, proto=m.proto, formats=list(m.formats)))
            continue
        pt, rtpmap, dtmf = picked
        theirs = m.effective_direction
        if _connection_address(offer, m) in ("0.0.0.0", "::") and theirs in ("sendrecv", "sendonly"):
            theirs = "sendonly"  # s8.4: RFC 2543 hold, they will not receive
        ours = ANSWER_DIRECTION.get(theirs, "sendrecv")
        if hold:
            ours = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(ours, ours)
        formats = [str(pt)] + ([str(dtmf)] if dtmf is not None else [])
        media = MediaDescription(kind="audio", port=port, proto=m.proto, formats=formats, direction=ours)
        media.rtpmaps.append(RtpMap(pt, rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels))
        if pt in m.fmtps:
            media.fmtps[pt] = m.fmtps[pt]
        if dtmf is not None:
            media.rtpmaps.append(RtpMap(dtmf, "telephone-event", rtpmap.clock_rate))
            media.fmtps[dtmf] = m.fmtps.get(dtmf, "0-16")
        media.ptime = m.ptime
        answer.media.append(media)
        accepted = _negotiated(offer, m, index, pt, rtpmap, dtmf, ours)
    return answer, accepted


def create_offer(
    *,
    address: str,
    port: int,
    session_id: str,
    version: int,
    codecs: Sequence[CodecSpec] = SIP_AUDIO_CODECS,
    direction: str = "sendrecv",
    ptime: int = 20,
) -> SessionDescription:
    """An audio offer over RTP/AVP: ``codecs`` in order, telephone-event at 8 and 48 kHz."""
    ip = "IP6" if ":" in address else "IP4"
    offer = SessionDescription(
        origin=Origin("trackmesh", session_id, str(version), "IN", ip, address),
        session_name="trackmesh",
        connection=f"IN {ip} {address}",
    )
    m = MediaDescription(kind="audio", port=port, proto="RTP/AVP", formats=[], direction=direction, ptime=ptime)
    static_pt = {r.encoding: pt for pt, r in STATIC_RTPMAPS.items()}
    dynamic = iter([OPUS_PT, *range(96, 100)])
    for spec in codecs:
        pt = static_pt.get(spec.name)
        if pt is None:
            pt = next(dynamic)
            if spec.name == "opus":
                m.fmtps[pt] = "useinbandfec=1"
        m.rtpmaps.append(RtpMap(pt, spec.name, spec.clock_rate, spec.channels if spec.channels != 1 else None))
        m.formats.append(str(pt))
    if any(spec.clock_rate == 48000 for spec in codecs):
        m.formats.append(str(DTMF_48K_PT))
        m.rtpmaps.append(RtpMap(DTMF_48K_PT, "telephone-event", 48000))
        m.fmtps[DTMF_48K_PT] = "0-16"
    m.formats.append(str(DTMF_PT))
    m.rtpmaps.append(RtpMap(DTMF_PT, "telephone-event", 8000))
    m.fmtps[DTMF_PT] = "0-16"
    offer.media.append(m)
    return offer


def reoffer(
    negotiated: Negotiated, previous: SessionDescription, *, address: str, port: int, session_id: str, version: int
) -> SessionDescription:
    """Our offer in the 200 to a re-INVITE without SDP (RFC 3261 s14.2, RFC 3264 s8): the call's
    codec and telephone-event under the payload types already in use (s8.3.2: a mapping is not
    changed within a session), ``sendrecv`` (we never hold), on the call's port. Every other m-line
    of our ``previous`` SDP stays, rejected (s8: a session's m-lines are never removed)."""
    ip = "IP6" if ":" in address else "IP4"
    offer = SessionDescription(
        origin=Origin("trackmesh", session_id, str(version), "IN", ip, address),
        session_name="trackmesh",
        connection=f"IN {ip} {address}",
    )
    pt = negotiated.payload_type
    m = MediaDescription(kind="audio", port=port, proto="RTP/AVP", formats=[str(pt)], direction="sendrecv")
    channels = negotiated.channels if negotiated.channels != 1 else None
    m.rtpmaps.append(RtpMap(pt, negotiated.codec, negotiated.clock_rate, channels))
    if negotiated.codec.lower() == "opus":
        m.fmtps[pt] = "useinbandfec=1"
    if negotiated.dtmf_payload_type is not None:
        dtmf = negotiated.dtmf_payload_type
        m.formats.append(str(dtmf))
        m.rtpmaps.append(RtpMap(dtmf, "telephone-event", negotiated.clock_rate))
        m.fmtps[dtmf] = "0-16"
    m.ptime = negotiated.ptime
    for index, old in enumerate(previous.media):
        if index != negotiated.mline:
            offer.media.append(MediaDescription(kind=old.kind, port=0, proto=old.proto, formats=list(old.formats)))
        else:
            offer.media.append(m)
    if len(offer.media) <= negotiated.mline:
        offer.media.append(m)
    return offer


def negotiated_from_answer(offer: SessionDescription, answer: SessionDescription) -> Negotiated | None:
    """What the peer accepted of our offer (s7: the answer's first format is its choice)."""
    if len(answer.media) != len(offer.media):
        raise SdpError("the answer must have one m-line per offered m-line (RFC 3264 s6)")
    for index, (ours, theirs) in enumerate(zip(offer.media, answer.media, strict=True)):
        if theirs.port == 0 or theirs.kind != "audio" or ours.port == 0:
            continue
        offered = set(ours.formats)
        for fmt in theirs.formats:
            if not fmt.isdigit() or fmt not in offered:
                continue
            pt = int(fmt)
            rtpmap = _rtpmap(theirs, pt) or _rtpmap(ours, pt)
            if rtpmap is None or rtpmap.encoding.lower() == "telephone-event":
                continue
            dtmf = _dtmf_for(theirs, rtpmap.clock_rate)
            theirs_dir = theirs.effective_direction
            ours_dir = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(theirs_dir, theirs_dir)
            return _negotiated(answer, theirs, index, pt, rtpmap, dtmf, ours_dir)
    return None
