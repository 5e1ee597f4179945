"""The atm0s-media-server 0.2 WebRTC SDK transport.

Rooms over WebRTC driven by the published npm package ``@atm0s-media-sdk/core``: protobuf bodies on three HTTP calls
(connect, ice-candidate, restart-ice) and protobuf RPC plus room events on a negotiated data channel. The wire
messages live in :mod:`trackmesh.transports.sdk.protocol`; docs/sdk-protocol.md describes the protocol.
"""
