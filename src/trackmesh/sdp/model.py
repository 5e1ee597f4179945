"""SDP (RFC 8866) parse/render model for the WebRTC subset trackmesh negotiates.

``parse`` turns offer text into typed dataclasses; ``render`` turns a model back into text with
CRLF line endings. Attributes trackmesh understands are parsed into typed fields; any other
attribute is kept verbatim in ``attributes`` so that nothing the peer said is silently lost.

Rendering groups attributes by kind in a fixed order (which is why ``parse(render(x)) == x``
holds even when the original text interleaved them differently). Every failure is an
:class:`SdpError` whose message names the line and what was wrong with it, because the message
becomes the body of an HTTP 400 answered to WHIP/WHEP clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trackmesh.errors import RemoteProtocolError

__all__ = [
    "Attribute",
    "Candidate",
    "Extmap",
    "Fingerprint",
    "Group",
    "MediaDescription",
    "Msid",
    "Origin",
    "Rid",
    "RtcpFb",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Simulcast",
    "SimulcastStream",
    "Ssrc",
    "SsrcGroup",
    "parse",
    "parse_candidate",
    "render",
    "render_candidate",
]

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
SETUP_ROLES = ("actpass", "active", "passive", "holdconn")


class SdpError(RemoteProtocolError):
    """An SDP body (offer or trickle fragment) that is malformed or cannot be accepted."""


# RFC 8866 s9: token-char is any visible ASCII except the "tspecials" listed there.
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_TOKEN_RE = re.compile(_TOKEN)
# RFC 8839 s5.1: ice-char = ALPHA / DIGIT / "+" / "/".
_ICE_CHARS_RE = re.compile(r"[A-Za-z0-9+/]+")
# RFC 8851 s10 / RFC 8853 s5.1: rid-id = 1*(alpha-numeric / "-" / "_").
_RID_ID_RE = re.compile(r"[A-Za-z0-9_\-]+")
_DIGITS_RE = re.compile(r"[0-9]+")
# RFC 8122 s5: fingerprint = 2UHEX *(":" 2UHEX); lower case is accepted since peers send it.
_FINGERPRINT_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*")
_RTPMAP_RE = re.compile(r"([0-9]{1,3}) ([^/ ]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?")
_MLINE_RE = re.compile(r"(" + _TOKEN + r") ([0-9]{1,5})(?:/([0-9]{1,5}))? (\S+)((?: \S+)*)")


@dataclass
class Origin:
    """The o= line (RFC 8866 s5.2)."""

    username: str = "-"
    session_id: str = "0"
    session_version: str = "0"
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"


@dataclass
class Group:
    """a=group (RFC 5888 s5), e.g. BUNDLE (RFC 9143)."""

    semantics: str
    mids: list[str] = field(default_factory=list)


@dataclass
class Fingerprint:
    """a=fingerprint (RFC 8122 s5): hash function name and colon-separated hex."""

    algorithm: str
    value: str


@dataclass
class Attribute:
    """An a= line trackmesh does not interpret; ``value`` is None for a property attribute."""

    name: str
    value: str | None = None


@dataclass
class RtpMap:
    """a=rtpmap (RFC 8866 s6.6)."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None


@dataclass
class RtcpFb:
    """a=rtcp-fb (RFC 4585 s4.2); ``payload_type`` is a PT number or "*"."""

    payload_type: str
    value: str


@dataclass
class Extmap:
    """a=extmap (RFC 8285 s5)."""

    id: int
    uri: str
    direction: str | None = None
    attributes: str | None = None


@dataclass
class Msid:
    """a=msid (RFC 8830 s2): stream id and optional track id (appdata)."""

    stream: str
    track: str | None = None


@dataclass
class Ssrc:
    """a=ssrc (RFC 5576 s4.1): one source attribute line."""

    ssrc: int
    attribute: str
    value: str | None = None


@dataclass
class SsrcGroup:
    """a=ssrc-group (RFC 5576 s4.2), e.g. FID (RTX, RFC 4588) or SIM."""

    semantics: str
    ssrcs: list[int] = field(default_factory=list)


@dataclass
class Rid:
    """a=rid (RFC 8851 s10): id, direction, optional pt list and restriction params."""

    id: str
    direction: str
    payload_types: list[int] = field(default_factory=list)
    params: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class SimulcastStream:
    """One rid in an a=simulcast alternative list; ``paused`` is the "~" prefix."""

    rid: str
    paused: bool = False


@dataclass
class Simulcast:
    """a=simulcast (RFC 8853 s5.1): per direction, a list of streams, each a list of alternatives."""

    send: list[list[SimulcastStream]] = field(default_factory=list)
    recv: list[list[SimulcastStream]] = field(default_factory=list)


@dataclass
class Candidate:
    """An ICE candidate (RFC 8839 s5.1)."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class MediaDescription:
    """One m= section with the attributes WebRTC uses typed out."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    mid: str | None = None
    direction: str | None = None
    rtcp: str | None = None
    rtcp_mux: bool = False
    rtcp_mux_only: bool = False
    rtcp_rsize: bool = False
    bundle_only: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    extmap_allow_mixed: bool = False
    extmaps: list[Extmap] = field(default_factory=list)
    rtpmaps: list[RtpMap] = field(default_factory=list)
    fmtps: dict[int, str] = field(default_factory=dict)
    ptime: int | None = None  # a=ptime, ms (RFC 8866 s6.4); SIP/RTP-AVP peers use it
    maxptime: int | None = None  # a=maxptime, ms (RFC 8866 s6.5)
    rtcp_fbs: list[RtcpFb] = field(default_factory=list)
    msids: list[Msid] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)
    ssrcs: list[Ssrc] = field(default_factory=list)
    rids: list[Rid] = field(default_factory=list)
    simulcast: Simulcast | None = None
    sctp_port: int | None = None
    max_message_size: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def effective_direction(self) -> str:
        """The direction, defaulting to sendrecv when absent (RFC 8866 s6.7)."""
        return self.direction or "sendrecv"

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        for rtpmap in self.rtpmaps:
            if rtpmap.payload_type == payload_type:
                return rtpmap
        return None

    def feedback(self, payload_type: int) -> list[str]:
        """rtcp-fb values for ``payload_type``, including wildcard "*" lines (RFC 4585 s4.2)."""
        pt = str(payload_type)
        return [fb.value for fb in self.rtcp_fbs if fb.payload_type in (pt, "*")]


@dataclass
class SessionDescription:
    """A whole SDP body."""

    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    version: int = 0
    info_lines: list[tuple[str, str]] = field(default_factory=list)
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    timing: str = "0 0"
    groups: list[Group] = field(default_factory=list)
    ice_lite: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: list[str] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)
    setup: str | None = None
    extmap_allow_mixed: bool = False
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def bundle_group(self) -> Group | None:
        """The first BUNDLE group; trackmesh runs one transport, so only one is honoured."""
        for group in self.groups:
            if group.semantics == "BUNDLE":
                return group
        return None


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _int(text: str, what: str, lo: int, hi: int) -> int:
    if not _DIGITS_RE.fullmatch(text) or len(text) > 20:
        raise SdpError(f"{what}: {text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise SdpError(f"{what}: {value} is out of range {lo}-{hi}")
    return value


def _token(text: str, what: str) -> str:
    if not _TOKEN_RE.fullmatch(text):
        raise SdpError(f"{what}: {text!r} is not a valid token")
    return text


def _ice_chars(text: str, what: str, lo: int, hi: int) -> str:
    # RFC 8839 s5.4: ice-ufrag is 4-256 ice-chars, ice-pwd 22-256.
    if not _ICE_CHARS_RE.fullmatch(text) or not lo <= len(text) <= hi:
        raise SdpError(f"{what}: {text!r} must be {lo}-{hi} ice-chars (RFC 8839 s5.4)")
    return text


def parse_candidate(value: str) -> Candidate:
    """Parse the value of an a=candidate attribute (the text after "candidate:")."""
    parts = value.split(" ")
    if len(parts) < 8 or parts[6] != "typ":
        raise SdpError(
            f"malformed candidate {value!r}: expected '<foundation> <component> <transport> "
            "<priority> <address> <port> typ <type> ...' (RFC 8839 s5.1)"
        )
    foundation, component, transport, priority, address, port, _, ctype = parts[:8]
    if not _ICE_CHARS_RE.fullmatch(foundation) or len(foundation) > 32:
        raise SdpError(f"candidate foundation {foundation!r} must be 1-32 ice-chars (RFC 8839 s5.1)")
    cand = Candidate(
        foundation=foundation,
        component=_int(component, "candidate component-id", 1, 256),
        transport=_token(transport, "candidate transport"),
        priority=_int(priority, "candidate priority", 0, 2**32 - 1),
        address=_token(address, "candidate connection-address"),
        port=_int(port, "candidate port", 0, 65535),
        type=_token(ctype, "candidate type"),
    )
    rest = parts[8:]
    if rest[:1] == ["raddr"]:
        if len(rest) < 2:
            raise SdpError(f"malformed candidate {value!r}: raddr without an address")
        cand.related_address = _token(rest[1], "candidate raddr")
        rest = rest[2:]
    if rest[:1] == ["rport"]:
        if len(rest) < 2:
            raise SdpError(f"malformed candidate {value!r}: rport without a port")
        cand.related_port = _int(rest[1], "candidate rport", 0, 65535)
        rest = rest[2:]
    if len(rest) % 2:
        raise SdpError(f"malformed candidate {value!r}: extension {rest[-1]!r} has no value")
    for i in range(0, len(rest), 2):
        name = _token(rest[i], "candidate extension name")
        if not rest[i + 1]:
            raise SdpError(f"malformed candidate {value!r}: empty extension value")
        cand.extensions.append((name, rest[i + 1]))
    return cand


def _parse_rid(value: str) -> Rid:
    parts = value.split(" ", 2)
    if len(parts) < 2 or parts[1] not in ("send", "recv"):
        raise SdpError(f"malformed a=rid:{value}: expected '<rid-id> send|recv [params]' (RFC 8851 s10)")
    if not _RID_ID_RE.fullmatch(parts[0]):
        raise SdpError(f"malformed a=rid:{value}: rid-id {parts[0]!r} is not alphanumeric/-/_")
    rid = Rid(id=parts[0], direction=parts[1])
    if len(parts) == 3:
        for i, param in enumerate(parts[2].split(";")):
            name, eq, val = param.partition("=")
            if not re.fullmatch(r"[A-Za-z0-9\-]+", name):
                raise SdpError(f"malformed a=rid:{value}: bad parameter {param!r}")
            if name == "pt" and i == 0 and eq:
                rid.payload_types = [_int(p, f"a=rid:{rid.id} pt", 0, 127) for p in val.split(",")]
            else:
                rid.params.append((name, val if eq else None))
    return rid


def _parse_simulcast(value: str) -> Simulcast:
    # RFC 8853 s5.1: sc-value = (sc-send [SP sc-recv]) / (sc-recv [SP sc-send]).
    parts = value.split(" ")
    sim = Simulcast()
    if len(parts) not in (2, 4):
        raise SdpError(f"malformed a=simulcast:{value}: expected 'send|recv <list>' (RFC 8853 s5.1)")
    seen: set[str] = set()
    for i in range(0, len(parts), 2):
        direction, lst = parts[i], parts[i + 1]
        if direction not in ("send", "recv") or direction in seen:
            raise SdpError(f"malformed a=simulcast:{value}: bad direction {direction!r}")
        seen.add(direction)
        streams: list[list[SimulcastStream]] = []
        for alt_list in lst.split(";"):
            alts: list[SimulcastStream] = []
            for sc_id in alt_list.split(","):
                paused = sc_id.startswith("~")
                rid = sc_id[1:] if paused else sc_id
                if not _RID_ID_RE.fullmatch(rid):
                    raise SdpError(f"malformed a=simulcast:{value}: bad rid {sc_id!r}")
                alts.append(SimulcastStream(rid, paused))
            streams.append(alts)
        if direction == "send":
            sim.send = streams
        else:
            sim.recv = streams
    return sim


def _parse_fingerprint(value: str) -> Fingerprint:
    algo, _, fp = value.partition(" ")
    if not _TOKEN_RE.fullmatch(algo) or not _FINGERPRINT_RE.fullmatch(fp):
        raise SdpError(f"malformed a=fingerprint:{value}: expected '<hash> <hex:hex:...>' (RFC 8122 s5)")
    return Fingerprint(algo.lower(), fp)


def _parse_extmap(value: str) -> Extmap:
    parts = value.split(" ", 2)
    if len(parts) < 2:
        raise SdpError(f"malformed a=extmap:{value}: expected '<id>[/<direction>] <uri>' (RFC 8285 s5)")
    if not parts[1]:
        raise SdpError(f"malformed a=extmap:{value}: empty URI (RFC 8285 s5)")
    ident, _, direction = parts[0].partition("/")
    ext_id = _int(ident, f"a=extmap:{value} id", 1, 4351)
    if 255 < ext_id < 4096:
        raise SdpError(f"a=extmap:{value}: id {ext_id} is outside 1-255 (RFC 8285 s5)")
    if direction and direction not in DIRECTIONS:
        raise SdpError(f"a=extmap:{value}: bad direction {direction!r}")
    return Extmap(ext_id, parts[1], direction or None, parts[2] if len(parts) == 3 else None)


def _parse_session_attr(sd: SessionDescription, name: str, value: str | None) -> bool:
    """Session-only attributes; returns False when ``name`` is not one of them."""
    if name == "group":
        if not value:
            raise SdpError("a=group needs semantics (RFC 5888 s5)")
        sem, *mids = value.split(" ")
        sd.groups.append(Group(_token(sem, "a=group semantics"), [_token(m, "a=group mid") for m in mids]))
    elif name == "ice-lite" and value is None:
        sd.ice_lite = True
    else:
        return False
    return True


def _parse_shared_attr(
    target: SessionDescription | MediaDescription, name: str, value: str | None
) -> bool:
    """Attributes valid at session and media level (RFC 8839, 8122, 8842, 8285)."""
    if name == "ice-ufrag" and value is not None:
        target.ice_ufrag = _ice_chars(value, "a=ice-ufrag", 4, 256)
    elif name == "ice-pwd" and value is not None:
        target.ice_pwd = _ice_chars(value, "a=ice-pwd", 22, 256)
    elif name == "ice-options" and value is not None:
        target.ice_options = [_token(t, "a=ice-options") for t in value.split(" ")]
    elif name == "fingerprint" and value is not None:
        target.fingerprints.append(_parse_fingerprint(value))
    elif name == "setup" and value is not None:
        if value not in SETUP_ROLES:
            raise SdpError(f"a=setup:{value} is not one of {', '.join(SETUP_ROLES)} (RFC 4145 s4)")
        target.setup = value
    elif name == "extmap-allow-mixed" and value is None:
        target.extmap_allow_mixed = True
    else:
        return False
    return True


def _parse_media_attr(m: MediaDescription, name: str, value: str | None) -> bool:
    if value is None:
        if name in DIRECTIONS:
            m.direction = name
        elif name in ("rtcp-mux", "rtcp-mux-only", "rtcp-rsize", "bundle-only", "end-of-candidates"):
            setattr(m, name.replace("-", "_"), True)
        else:
            return False
        return True
    if name == "mid":
        m.mid = _token(value, "a=mid")
    elif name == "rtcp":
        m.rtcp = value
    elif name == "rtpmap":
        match = _RTPMAP_RE.fullmatch(value)
        if not match:
            raise SdpError(f"malformed a=rtpmap:{value}: expected '<pt> <encoding>/<clock>[/<channels>]'")
        pt = _int(match[1], "a=rtpmap payload type", 0, 127)
        channels = None if match[4] is None else _int(match[4], "a=rtpmap channels", 1, 255)
        m.rtpmaps.append(RtpMap(pt, match[2], _int(match[3], "a=rtpmap clock rate", 1, 2**32 - 1), channels))
    elif name in ("ptime", "maxptime"):
        # RFC 8866 s6.4 allows a decimal ("20.0" from some phones): whole milliseconds kept.
        whole = value.strip().split(".", 1)[0]
        setattr(m, name, _int(whole, f"a={name}", 1, 10000))
    elif name == "fmtp":
        pt_text, _, params = value.partition(" ")
        m.fmtps[_int(pt_text, "a=fmtp payload type", 0, 127)] = params
    elif name == "rtcp-fb":
        pt_text, _, fb = value.partition(" ")
        if pt_text != "*":
            _int(pt_text, "a=rtcp-fb payload type", 0, 127)
        if not fb:
            raise SdpError(f"malformed a=rtcp-fb:{value}: no feedback type (RFC 4585 s4.2)")
        m.rtcp_fbs.append(RtcpFb(pt_text, fb))
    elif name == "extmap":
        m.extmaps.append(_parse_extmap(value))
    elif name == "msid":
        stream, _, track = value.partition(" ")
        # RFC 8830 s2 says token-char, but libwebrtc and GStreamer put '@' and the like in
        # stream ids, so any visible text is accepted.
        if not stream or not stream.isprintable():
            raise SdpError(f"malformed a=msid:{value}: expected '<stream id> [<track id>]' (RFC 8830 s2)")
        m.msids.append(Msid(stream, track or None))
    elif name == "ssrc":
        ssrc_text, _, rest = value.partition(" ")
        attr, colon, attr_value = rest.partition(":")
        m.ssrcs.append(
            Ssrc(_int(ssrc_text, "a=ssrc id", 0, 2**32 - 1), _token(attr, "a=ssrc attribute"),
                 attr_value if colon else None)
        )
    elif name == "ssrc-group":
        sem, *ids = value.split(" ")
        ssrcs = [_int(s, "a=ssrc-group ssrc", 0, 2**32 - 1) for s in ids]
        m.ssrc_groups.append(SsrcGroup(_token(sem, "a=ssrc-group semantics"), ssrcs))
    elif name == "rid":
        m.rids.append(_parse_rid(value))
    elif name == "simulcast":
        m.simulcast = _parse_simulcast(value)
    elif name == "candidate":
        m.candidates.append(parse_candidate(value))
    elif name == "sctp-port":
        m.sctp_port = _int(value, "a=sctp-port", 0, 65535)
    elif name == "max-message-size":
        m.max_message_size = _int(value, "a=max-message-size", 0, 2**53)
    else:
        return False
    return True


def _split_lines(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(f"SDP is not valid UTF-8 (byte {exc.start})") from None
    # RFC 8866 s5 mandates CRLF, but accepting a bare LF costs nothing and many tools send it.
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP body. Raises :class:`SdpError` naming the offending line."""
    lines = _split_lines(text)
    sd = SessionDescription()
    media: MediaDescription | None = None
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line:
            continue  # tolerated: trailing newline, blank separators
        try:
            _parse_line(sd, media, seen, line)
        except SdpError as exc:
            raise SdpError(f"line {number}: {exc}") from None
        if line.startswith("m="):
            media = sd.media[-1]
    for required in ("v", "o", "s", "t"):
        if required not in seen:
            raise SdpError(f"missing {required}= line (RFC 8866 s5)")
    return sd


def _parse_line(sd: SessionDescription, media: MediaDescription | None, seen: set[str], line: str) -> None:
    if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
        raise SdpError(f"not an SDP '<type>=<value>' line: {line[:40]!r}")
    if "\r" in line or "\0" in line:
        raise SdpError("stray CR or NUL inside a line (RFC 8866 s5)")
    kind, value = line[0], line[2:]
    if not seen:
        if kind != "v":
            raise SdpError("SDP must start with v=0 (RFC 8866 s5.1)")
        if value != "0":
            raise SdpError(f"unsupported SDP version v={value}")
    elif kind == "v":
        raise SdpError("duplicate v= line")
    if media is None:
        if kind in "vost" and kind in seen:
            raise SdpError(f"duplicate {kind}= line")
        seen.add(kind)
    if kind == "v":
        return
    if kind == "o":
        parts = value.split(" ")
        if len(parts) != 6 or not all(parts):
            raise SdpError(f"malformed o= line {value!r}: expected 6 fields (RFC 8866 s5.2)")
        sd.origin = Origin(*parts)
    elif kind == "s":
        sd.session_name = value
    elif kind == "t":
        sd.timing = value
    elif kind == "m":
        match = _MLINE_RE.fullmatch(value)
        if not match:
            raise SdpError(f"malformed m= line {value!r}: expected '<media> <port> <proto> <fmt> ...'")
        if "t" not in seen:
            raise SdpError("m= line before the t= line (RFC 8866 s5)")
        count = None if match[3] is None else _int(match[3], "m= port count", 1, 65535)
        sd.media.append(
            MediaDescription(
                kind=match[1],
                port=_int(match[2], "m= port", 0, 65535),
                proto=match[4],
                formats=match[5].split(" ")[1:],
                port_count=count,
            )
        )
    elif kind == "c":
        if media is None:
            sd.connection = value
        else:
            media.connection = value
    elif kind == "b":
        (sd.bandwidths if media is None else media.bandwidths).append(value)
    elif kind == "a":
        name, colon, attr_value = value.partition(":")
        if not _TOKEN_RE.fullmatch(name):
            raise SdpError(f"malformed attribute name {name!r}")
        val = attr_value if colon else None
        if media is None:
            handled = _parse_session_attr(sd, name, val) or _parse_shared_attr(sd, name, val)
            if not handled:
                sd.attributes.append(Attribute(name, val))
        elif not (_parse_shared_attr(media, name, val) or _parse_media_attr(media, name, val)):
            media.attributes.append(Attribute(name, val))
    elif media is None:
        # i=, u=, e=, p=, r=, z=, k= carry nothing WebRTC uses; keep them for round trips.
        sd.info_lines.append((kind, value))
    # Unknown media-level line types (i=, k=) are ignored as RFC 8866 s5 allows.


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render_candidate(c: Candidate) -> str:
    """The value of an a=candidate attribute (without the "candidate:" name)."""
    parts = [c.foundation, str(c.component), c.transport, str(c.priority), c.address, str(c.port)]
    parts += ["typ", c.type]
    if c.related_address is not None:
        parts += ["raddr", c.related_address]
    if c.related_port is not None:
        parts += ["rport", str(c.related_port)]
    for name, value in c.extensions:
        parts += [name, value]
    return " ".join(parts)


def _render_simulcast(sim: Simulcast) -> str:
    def lst(streams: list[list[SimulcastStream]]) -> str:
        return ";".join(",".join(("~" if s.paused else "") + s.rid for s in alts) for alts in streams)

    parts = []
    if sim.send:
        parts.append("send " + lst(sim.send))
    if sim.recv:
        parts.append("recv " + lst(sim.recv))
    return " ".join(parts)


def _render_rid(rid: Rid) -> str:
    params = []
    if rid.payload_types:
        params.append("pt=" + ",".join(map(str, rid.payload_types)))
    params += [name if value is None else f"{name}={value}" for name, value in rid.params]
    return f"{rid.id} {rid.direction}" + (" " + ";".join(params) if params else "")


def _attr(name: str, value: str | None = None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _render_shared(out: list[str], t: SessionDescription | MediaDescription) -> None:
    if t.ice_ufrag is not None:
        out.append(_attr("ice-ufrag", t.ice_ufrag))
    if t.ice_pwd is not None:
        out.append(_attr("ice-pwd", t.ice_pwd))
    if t.ice_options:
        out.append(_attr("ice-options", " ".join(t.ice_options)))
    out += [_attr("fingerprint", f"{fp.algorithm} {fp.value}") for fp in t.fingerprints]
    if t.setup is not None:
        out.append(_attr("setup", t.setup))
    if t.extmap_allow_mixed:
        out.append(_attr("extmap-allow-mixed"))


def _render_media(out: list[str], m: MediaDescription) -> None:
    port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
    out.append(f"m={m.kind} {port} {m.proto} {' '.join(m.formats)}")
    if m.connection is not None:
        out.append(f"c={m.connection}")
    out += [f"b={b}" for b in m.bandwidths]
    if m.rtcp is not None:
        out.append(_attr("rtcp", m.rtcp))
    _render_shared(out, m)
    if m.mid is not None:
        out.append(_attr("mid", m.mid))
    if m.bundle_only:
        out.append(_attr("bundle-only"))
    out += [
        _attr("extmap", f"{e.id}{'/' + e.direction if e.direction else ''} {e.uri}"
              + (f" {e.attributes}" if e.attributes is not None else ""))
        for e in m.extmaps
    ]
    if m.direction is not None:
        out.append(_attr(m.direction))
    out += [_attr("msid", ms.stream + (f" {ms.track}" if ms.track is not None else "")) for ms in m.msids]
    for name in ("rtcp-mux", "rtcp-mux-only", "rtcp-rsize"):
        if getattr(m, name.replace("-", "_")):
            out.append(_attr(name))
    for r in m.rtpmaps:
        channels = f"/{r.channels}" if r.channels is not None else ""
        out.append(_attr("rtpmap", f"{r.payload_type} {r.encoding}/{r.clock_rate}{channels}"))
    out += [_attr("rtcp-fb", f"{fb.payload_type} {fb.value}") for fb in m.rtcp_fbs]
    out += [_attr("fmtp", f"{pt} {params}") for pt, params in m.fmtps.items()]
    if m.ptime is not None:
        out.append(_attr("ptime", str(m.ptime)))
    if m.maxptime is not None:
        out.append(_attr("maxptime", str(m.maxptime)))
    out += [_attr("ssrc-group", " ".join([g.semantics, *map(str, g.ssrcs)])) for g in m.ssrc_groups]
    out += [
        _attr("ssrc", f"{s.ssrc} {s.attribute}" + (f":{s.value}" if s.value is not None else ""))
        for s in m.ssrcs
    ]
    out += [_attr("rid", _render_rid(r)) for r in m.rids]
    if m.simulcast is not None:
        out.append(_attr("simulcast", _render_simulcast(m.simulcast)))
    if m.sctp_port is not None:
        out.append(_attr("sctp-port", str(m.sctp_port)))
    if m.max_message_size is not None:
        out.append(_attr("max-message-size", str(m.max_message_size)))
    out += [_attr(a.name, a.value) for a in m.attributes]
    out += [_attr("candidate", render_candidate(c)) for c in m.candidates]
    if m.end_of_candidates:
        out.append(_attr("end-of-candidates"))


def render(sd: SessionDescription) -> str:
    """Render ``sd`` as SDP text with CRLF line endings (RFC 8866 s5)."""
    o = sd.origin
    out = [
        f"v={sd.version}",
        f"o={o.username} {o.session_id} {o.session_version} {o.nettype} {o.addrtype} {o.address}",
        f"s={sd.session_name}",
    ]
    out += [f"{kind}={value}" for kind, value in sd.info_lines]
    if sd.connection is not None:
        out.append(f"c={sd.connection}")
    out += [f"b={b}" for b in sd.bandwidths]
    out.append(f"t={sd.timing}")
    out += [_attr("group", " ".join([g.semantics, *g.mids])) for g in sd.groups]
    if sd.ice_lite:
        out.append(_attr("ice-lite"))
    _render_shared(out, sd)
    out += [_attr(a.name, a.value) for a in sd.attributes]
    for m in sd.media:
        _render_media(out, m)
    return "\r\n".join(out) + "\r\n"
