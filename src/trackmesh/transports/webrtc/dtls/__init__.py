"""DTLS for the WebRTC transport: the DTLS endpoint (``endpoint``, RFC 6347/9147 through
pyOpenSSL memory BIOs), certificates and fingerprints (``certificate``, RFC 8122), and
``keying``, which turns a finished DTLS-SRTP handshake into an SRTP session (RFC 5764 s4.2).

``keying`` is the only module that knows both DTLS and SRTP: :mod:`trackmesh.rtp.srtp` is keyed
by bytes and imports nothing from here.
Sans-IO. May import: :mod:`trackmesh.rtp.srtp`, :mod:`trackmesh.errors`, and each other.
"""
