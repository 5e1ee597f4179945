"""WHIP (RFC 9725) and WHEP: ingest and egress over one WebRTC connection per HTTP resource.

A transport built on :mod:`trackmesh.transports.webrtc` (it may import that package, the shared layers and the
core, never another transport): :mod:`.session` holds the room policy of one connection (join, publish on
connect, the WHEP viewer's auto-follow of the room's first track, track naming).
"""
