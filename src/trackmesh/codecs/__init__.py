"""Payload formats: what the RTP payload of each codec means, shared by every transport.

One module per codec, each with its payload descriptor parsing, key-frame and layer detection
(VP8/VP9 descriptors, the HEVC TID, the AV1 OBU extension), a packetizer (frame -> RTP
payloads within an MTU) and a depacketizer (RTP payloads in sequence order -> whole frames,
loss dropped and counted):
``vp8`` (RFC 7741), ``vp9`` (RFC 9628), ``h264`` (RFC 6184, plus Annex B <-> AVCC and avcC),
``hevc`` (RFC 7798, plus hvcC), ``av1`` (AOM RTP payload spec, OBU helpers), ``opus``
(RFC 7587, TOC), ``g711`` (RFC 3551 PCMU/PCMA and the companding tables). ``payload`` holds what
they share (PayloadError, Frame, the depacketizer loop); ``registry`` finds a codec by its SDP
encoding name; ``layers`` selects simulcast and SVC layers per viewer.

Sans-IO and allocation-light (these run per packet).
May import: the standard library, :mod:`trackmesh.errors`, :mod:`trackmesh.core.model`, and
each other. Never :mod:`trackmesh.rtp` internals it does not need, a transport, the runtime,
HTTP or the CLI (tests/test_layering.py checks).
"""
