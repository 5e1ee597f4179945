"""The WHIP/WHEP transport (RFC 9725 and the WHEP draft): WebRTC ingest and egress over HTTP.

A twin of :mod:`trackmesh.transports.sdk`: the HTTP resource semantics and the session policy
on top of a :mod:`trackmesh.transports.webrtc` peer. :mod:`.session` is the room policy of one
connection (join, publish on connect, the WHEP viewer's auto-follow of the room's first track,
track naming); :mod:`.sdpfrag` the trickle-ICE / ICE restart SDP fragments of PATCH requests
(RFC 8840).

Sans-IO. May import: :mod:`trackmesh.transports.webrtc` (the connection it drives),
:mod:`trackmesh.sdp`, :mod:`trackmesh.rtp`, :mod:`trackmesh.codecs`, :mod:`trackmesh.core`,
:mod:`trackmesh.errors`, :mod:`trackmesh.net`. Never the SDK transport, the runtime, HTTP or the
CLI.
"""
