"""SDP for every transport that negotiates with it (WebRTC, WHIP/WHEP, SIP).

``model`` parses and renders session descriptions (RFC 8866 and the attributes WebRTC adds:
BUNDLE, ICE, DTLS fingerprints, simulcast, SSRC groups); ``codecs`` holds the codec and
header-extension matching an answerer needs (:class:`~trackmesh.sdp.codecs.CodecSpec`,
H.264 profile matching). Each transport keeps its own answer policy.

Pure functions and dataclasses, sans-IO.
May import: the standard library, :mod:`trackmesh.errors`, and each other. Never a transport,
the runtime, HTTP or the CLI (tests/test_layering.py checks).
"""
