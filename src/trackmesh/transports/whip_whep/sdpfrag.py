"""``application/trickle-ice-sdpfrag`` bodies (RFC 8840 s4.2 and s9.2, as used by WHIP RFC 9725
s4.3.2 and WHEP for trickle ICE and ICE restarts).

A fragment is a cut-down SDP: session-level ICE attributes (ice-lite, ice-options, ice-ufrag,
ice-pwd, end-of-candidates), then per m= line its mid, ICE credentials, candidates and
end-of-candidates. It has no v=/o=/s=/t= lines. Attributes outside that grammar are ignored
(RFC 8840 s9.2 leaves room for extension); any other line type is an error.

A fragment whose ice-ufrag/ice-pwd differ from the current ones is an ICE restart (RFC 8839
s4.4.1.1.1); :func:`restart_answer` builds the fragment we send back with fresh credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trackmesh.sdp.model import (
    _MLINE_RE,
    Candidate,
    SdpError,
    _ice_chars,
    _int,
    _split_lines,
    _token,
    parse_candidate,
    render_candidate,
)

__all__ = ["FragMedia", "SdpFrag", "is_ice_restart", "parse_sdpfrag", "render_sdpfrag", "restart_answer"]


@dataclass
class FragMedia:
    """An m= line of a fragment; the m= line itself only locates the section (RFC 8840 s4.2)."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    mid: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False


@dataclass
class SdpFrag:
    ice_lite: bool = False
    ice_options: list[str] = field(default_factory=list)
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    end_of_candidates: bool = False
    media: list[FragMedia] = field(default_factory=list)

    def credentials(self) -> tuple[str, str] | None:
        """The fragment's ICE credentials, session level first, else the first m= section's."""
        holders: list[SdpFrag | FragMedia] = [self, *self.media]
        for holder in holders:
            if holder.ice_ufrag is not None and holder.ice_pwd is not None:
                return holder.ice_ufrag, holder.ice_pwd
        return None

    def candidates(self) -> list[tuple[str | None, Candidate]]:
        """Every candidate with the mid of the section that carries it."""
        return [(m.mid, c) for m in self.media for c in m.candidates]

    @property
    def complete(self) -> bool:
        """True when the peer signalled end-of-candidates (RFC 8840 s8.2)."""
        return self.end_of_candidates or any(m.end_of_candidates for m in self.media)


def _set_attr(target: SdpFrag | FragMedia, name: str, value: str | None) -> None:
    if name == "ice-ufrag" and value is not None:
        target.ice_ufrag = _ice_chars(value, "a=ice-ufrag", 4, 256)
    elif name == "ice-pwd" and value is not None:
        target.ice_pwd = _ice_chars(value, "a=ice-pwd", 22, 256)
    elif name == "end-of-candidates" and value is None:
        target.end_of_candidates = True
    elif isinstance(target, SdpFrag):
        if name == "ice-lite" and value is None:
            target.ice_lite = True
        elif name == "ice-options" and value is not None:
            target.ice_options = [_token(t, "a=ice-options") for t in value.split(" ")]
        elif name == "candidate":
            raise SdpError("a=candidate before any m= line; candidates belong to an m= section (RFC 8840 s4.2)")
    elif name == "mid" and value is not None:
        target.mid = _token(value, "a=mid")
    elif name == "candidate" and value is not None:
        target.candidates.append(parse_candidate(value))


def parse_sdpfrag(text: str | bytes) -> SdpFrag:
    """Parse a trickle-ice-sdpfrag body; :class:`SdpError` names the bad line."""
    frag = SdpFrag()
    for number, line in enumerate(_split_lines(text), start=1):
        if not line:
            continue
        try:
            if "\r" in line or "\0" in line:
                raise SdpError("stray CR or NUL inside a line (RFC 8866 s5)")
            if line.startswith("a="):
                name, colon, value = line[2:].partition(":")
                if not name:
                    raise SdpError("empty attribute name")
                _set_attr(frag.media[-1] if frag.media else frag, name, value if colon else None)
            elif line.startswith("m="):
                match = _MLINE_RE.fullmatch(line[2:])
                if not match:
                    raise SdpError(f"malformed m= line {line[2:]!r}: expected '<media> <port> <proto> <fmt> ...'")
                frag.media.append(
                    FragMedia(match[1], _int(match[2], "m= port", 0, 65535), match[4], match[5].split(" ")[1:])
                )
            else:
                raise SdpError(f"{line[:40]!r} is not allowed in a trickle-ice-sdpfrag (RFC 8840 s9.2)")
        except SdpError as exc:
            raise SdpError(f"sdpfrag line {number}: {exc}") from None
    holders: list[SdpFrag | FragMedia] = [frag, *frag.media]
    for holder in holders:
        if (holder.ice_ufrag is None) != (holder.ice_pwd is None):
            raise SdpError("sdpfrag has a=ice-ufrag without a=ice-pwd or the reverse (RFC 8839 s5.4)")
    return frag


def render_sdpfrag(frag: SdpFrag) -> str:
    """Render a fragment with CRLF line endings."""
    out: list[str] = []

    def ice(holder: SdpFrag | FragMedia) -> None:
        if holder.ice_ufrag is not None:
            out.append(f"a=ice-ufrag:{holder.ice_ufrag}")
        if holder.ice_pwd is not None:
            out.append(f"a=ice-pwd:{holder.ice_pwd}")

    if frag.ice_lite:
        out.append("a=ice-lite")
    if frag.ice_options:
        out.append("a=ice-options:" + " ".join(frag.ice_options))
    ice(frag)
    if frag.end_of_candidates:
        out.append("a=end-of-candidates")
    for m in frag.media:
        out.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
        if m.mid is not None:
            out.append(f"a=mid:{m.mid}")
        ice(m)
        out += [f"a=candidate:{render_candidate(c)}" for c in m.candidates]
        if m.end_of_candidates:
            out.append("a=end-of-candidates")
    return "".join(line + "\r\n" for line in out)


def is_ice_restart(frag: SdpFrag, current_ufrag: str, current_pwd: str) -> bool:
    """True when the fragment carries ICE credentials other than the current remote ones:
    new credentials mean a new ICE generation (RFC 8839 s4.4.1.1.1, RFC 9725 s4.3.2)."""
    creds = frag.credentials()
    return creds is not None and creds != (current_ufrag, current_pwd)


def restart_answer(
    ice_ufrag: str, ice_pwd: str, candidate: Candidate, mid: str, kind: str = "audio", ice_lite: bool = True
) -> SdpFrag:
    """Our fragment answering an ICE restart: new credentials plus our (only) candidate in the
    first bundled m= section. We are ICE-lite, so gathering is already complete."""
    media = FragMedia(kind, 9, "UDP/TLS/RTP/SAVPF" if kind != "application" else "UDP/DTLS/SCTP",
                      ["0"] if kind != "application" else ["webrtc-datachannel"], mid=mid,
                      candidates=[candidate], end_of_candidates=True)
    return SdpFrag(ice_lite=ice_lite, ice_ufrag=ice_ufrag, ice_pwd=ice_pwd, media=[media])
