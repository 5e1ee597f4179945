"""RTP, RTCP and SRTP: the media layer every RTP transport shares (WebRTC today; SIP, RTMP out,
MoQ bridges and recording next).

``packet`` parses and builds RTP headers and header extensions (RFC 3550, RFC 8285); ``rtcp``
the RTCP packets we send and read (RFC 3550, RFC 4585, RFC 5104); ``srtp`` protects and
unprotects with keys handed in as bytes (RFC 3711, RFC 7714), so DTLS-SRTP and SDES key it
alike; ``nack`` is the NACK generator and retransmission ring (RFC 4585, RFC 4588);
``rewrite`` the sequence/timestamp rewriting of a forwarded stream; ``twcc`` transport-wide
congestion control feedback and the bandwidth estimate; ``reports`` receiver statistics for
RR/SR report blocks.

Every module is sans-IO: fed bytes and ``now``, never reading a clock or a socket.
May import: the standard library, ``cryptography``/``pylibsrtp``, :mod:`trackmesh.errors`,
:mod:`trackmesh.net`, :mod:`trackmesh.core.model`, and each other. Never a transport, the
runtime, HTTP or the CLI (tests/test_layering.py checks).
"""
