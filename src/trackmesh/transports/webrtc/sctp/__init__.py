"""SCTP over DTLS and WebRTC data channels (RFC 8261, RFC 8831, RFC 8832).

``packet`` parses and builds SCTP packets and chunks (RFC 9260); ``sender`` and ``receiver``
are the outbound and inbound queues; ``association`` the association state machine;
``datachannel`` the DCEP channel layer on top.
Sans-IO. May import: :mod:`trackmesh.errors`, and each other.
"""
