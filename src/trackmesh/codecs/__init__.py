"""Payload formats: what the RTP payload of each codec means to a forwarder.

``keyframe`` reads VP8 payload descriptors and detects key frames of VP8, VP9 and H.264
(RFC 7741, RFC 6184); ``vp9`` parses VP9 payload descriptors (RFC 9628); ``layers`` selects
simulcast and SVC layers per viewer. Packetizers and depacketizers for RTMP, SIP and recording
join here, one module per codec.

Sans-IO and allocation-light (these run per packet).
May import: the standard library, :mod:`trackmesh.errors`, :mod:`trackmesh.core.model`, and
each other. Never :mod:`trackmesh.rtp` internals it does not need, a transport, the runtime,
HTTP or the CLI (tests/test_layering.py checks).
"""
