"""The WebRTC transport: sans-IO ICE-lite, DTLS, SRTP, RTP/RTCP and SDP state machines.

Every module here is a pure state machine or codec: it is fed bytes and ``now`` (monotonic
seconds, a float) and drained of outputs. None imports asyncio, socket, time or threading;
the asyncio driver lives in ``trackmesh.runtime``.
"""
