"""The raw-QUIC ALPNs of Media over QUIC that trackmesh answers, and the draft codec each one speaks.

In our order of preference (a QUIC server picks the first of its own list that the client offers,
RFC 7301 s3.2): draft-20 is the working group's interop target; draft-21 is wire-identical to it;
draft-22 too except its LOCATION_FILTER encoding (codec20.py); draft-16 is what most clients speak.
"""

from __future__ import annotations

__all__ = ["DRAFT_OF_ALPN", "parse_alpns"]

DRAFT_OF_ALPN: dict[str, int] = {"moqt-20": 20, "moqt-22": 22, "moqt-21": 20, "moqt-16": 16}


def parse_alpns(text: str) -> tuple[str, ...]:
    """A comma-separated choice of :data:`DRAFT_OF_ALPN`'s ALPNs, in the order given (our order of
    preference). Raises ValueError naming the accepted ones for anything else, a repeat or none."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in DRAFT_OF_ALPN]
    if not values or unknown or len(set(values)) != len(values):
        accepted = ", ".join(DRAFT_OF_ALPN)
        raise ValueError(f"{text!r} is not accepted; accepted: one or more of {accepted}, comma-separated")
    return values
