"""A sans-IO SIP stack (RFC 3261): messages and wire format, transactions, dialogs, digest.

Layers, lowest first (each imports only the ones above it in this list):

- ``message``: headers and structured values (Via, name-addr, CSeq, URI), the response builder.
- ``parser``: datagram parsing, stream framing (Content-Length), serialization, size caps.
- ``transaction``: the four RFC 3261 s17 state machines as tables, timers as deadlines.
- ``dialog``: dialog state (s12) and in-dialog requests.
- ``digest``: Digest authentication (RFC 2617/7616/8760), server and client sides.
- ``offer_answer``: SDP offer/answer for the SIP leg (RFC 3264) on :mod:`trackmesh.sdp`.

Nothing here reads a clock or touches a socket: drivers pass ``now`` and bytes in and drain
transmits and events out. docs/sip.md shows how a driver uses it.
"""
