"""RTMP ingest, sans-IO (the layers of rml_rtmp, with ``now`` passed in).

- :mod:`.handshake`: C0/C1/C2 -> S0/S1/S2, simple and the FP9 digest form.
- :mod:`.chunk`: the chunk stream (RTMP spec s5.3): bytes <-> :class:`~.chunk.Message`.
- :mod:`.messages`: protocol control and user control messages (s5.4, s6.2, s7.1).
- :mod:`.amf0` / :mod:`.amf3`: the command and data encodings.
- :mod:`.flv`: FLV and Enhanced RTMP (v1, v2) audio/video tag bodies.
- :mod:`.session` (+ :mod:`.events`): the server session: commands, replies and events;
  accept/reject is the caller's.
- :mod:`.ingest`: one stream's tags -> configs, Annex B access units, audio frames, B-frame alerts.
- :mod:`.media`: those frames -> core MediaPackets through the codecs/ packetizers.

Everything here is fed bytes and a time; nothing reads a clock or touches a socket.
"""
