"""The atm0s-media-server 0.2 WebRTC SDK transport.

Rooms over WebRTC driven by the published npm package ``@atm0s-media-sdk/core``: protobuf bodies on three HTTP calls
(connect, ice-candidate, restart-ice) and protobuf RPC plus room events on a negotiated data channel. The wire
messages live in :mod:`trackmesh.transports.sdk.protocol`; docs/sdk-protocol.md describes the protocol.

Modules: :mod:`.session` answers the RPCs and pushes room events (the dispatcher); :mod:`.slots` holds the
session's media slots (senders and receivers: publish, attach, configure, state pushes) behind a public API that
:mod:`.renegotiation` (``session.sdp`` and ICE-restart offers) and :mod:`.allocation` (bitrate control) use too;
:mod:`.naming`, :mod:`.temporal`, :mod:`.stats` and :mod:`.errors` are helpers. None imports another of them
upwards (no cycle). The package imports ``trackmesh.core``, the shared layers and ``transports.webrtc`` (the
connection it drives), never a driver.
"""
