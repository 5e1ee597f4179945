"""The WHIP/WHEP transport (RFC 9725 and the WHEP draft): WebRTC ingest and egress over HTTP.

A twin of :mod:`trackmesh.transports.sdk`: the HTTP resource semantics and the session policy
(join, publish on connect, follow the room's first track) on top of a
:mod:`trackmesh.transports.webrtc` peer. Today it holds ``sdpfrag``, the trickle-ICE / ICE
restart SDP fragments of PATCH requests (RFC 8840).

Sans-IO. May import: :mod:`trackmesh.transports.webrtc` (the connection it drives),
:mod:`trackmesh.sdp`, :mod:`trackmesh.rtp`, :mod:`trackmesh.codecs`, :mod:`trackmesh.core`,
:mod:`trackmesh.errors`, :mod:`trackmesh.net`. Never the SDK transport, the runtime, HTTP or the
CLI.
"""
