"""Per-SSRC RTP stream state, protocol-neutral: what any RTP transport (WebRTC today, plain RTP
for SIP next) keeps for each stream it receives or sends, whatever carries and keys the packets.

``inbound``: the receive side of one SSRC (sequence extension, duplicate window, loss and
counts for receiver report blocks, the NACK generator, the sender's last SR for LSR/DLSR) and
:class:`~trackmesh.rtp.streams.inbound.InboundStreams`, the SSRC table with the receiver-side
RTCP timers (generic NACK, RR). ``outbound``: the send side of one SSRC (seq/ts rewriting into
one continuous space, the header template with its extension block, the retransmission ring
and RTX wrapping, sent counts and the SR).

What stays with a transport: keying and protection (SRTP bound to DTLS or SDES), how SSRCs are
learned (WebRTC's mid/rid header extensions), simulcast and layer selection, transport-wide
congestion control bound to one connection, and the glue to the room model.

Sans-IO: fed packets and ``now``, never reading a clock or a socket. May import: the standard
library, the rest of :mod:`trackmesh.rtp`, :mod:`trackmesh.core`, :mod:`trackmesh.codecs`,
:mod:`trackmesh.sdp`, :mod:`trackmesh.errors` and :mod:`trackmesh.net`; never a transport, the
runtime, HTTP or the CLI (tests/test_layering.py checks).
"""
