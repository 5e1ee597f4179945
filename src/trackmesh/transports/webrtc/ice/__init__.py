"""ICE for the WebRTC transport: STUN messages (``stun``, RFC 8489) and the ICE-lite agent
(``agent``, RFC 8445 s2.5, plus the controlling client the tests and load tester use).

Sans-IO. May import: :mod:`trackmesh.errors`, :mod:`trackmesh.net`, and each other; nothing
else in the WebRTC transport.
"""
