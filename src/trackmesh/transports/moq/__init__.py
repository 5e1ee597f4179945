"""Media over QUIC transport (draft-ietf-moq-transport), sans-IO.

- :mod:`.varint`: QUIC variable-length integers (RFC 9000 s16) and a bounded reader.
- :mod:`.errors`: the draft's error codes and the decode error every parser raises.
- :mod:`.messages`: control messages as plain dataclasses, independent of the draft.
- :mod:`.codec16`: the draft-16 control codec (ALPN ``moqt-16``).
- :mod:`.objects`: data streams (SUBGROUP_HEADER, FETCH_HEADER) and OBJECT_DATAGRAM, draft-16.
- :mod:`.session`: one peer's session (server role): setup, requests, aliases, data streams.
- :mod:`.relay`: namespaces, tracks, the latest-group cache and fan-out shared by the sessions.

Nothing here reads a clock or touches a socket: drivers (``runtime/moq_listener.py``) feed
bytes and ``now`` and drain the outputs.
"""
