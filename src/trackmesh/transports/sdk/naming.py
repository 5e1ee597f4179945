"""Which m-line carries which SDK sender or receiver.

The SDK adds its transceivers senders first (``sendonly``), then receivers (``recvonly``), each in the order of
``Tracks.senders`` / ``Tracks.receivers`` of the connect request; the legacy ``offerToReceiveAudio/Video`` offer
options may add one more ``recvonly`` m-line per kind that has no receiver. So, per kind, the m-lines the client
sends on are its senders in order and the m-lines it receives on are its receivers in order; m-lines beyond the
declared ones carry nothing.

``NegotiatedMedia.direction`` is *our* direction: an m-line we receive on (``recvonly``) is a client sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trackmesh.transports.sdk.protocol import shared_pb2
from trackmesh.transports.webrtc.answer import NegotiatedMedia

KIND_NAMES = {shared_pb2.AUDIO: "audio", shared_pb2.VIDEO: "video"}


@dataclass(frozen=True, slots=True)
class MlineNames:
    """mid -> sender name (m-lines we receive on) and mid -> receiver name (m-lines we send on)."""

    senders: dict[str, str]
    receivers: dict[str, str]


def _assign(
    media: Sequence[NegotiatedMedia], ours: tuple[str, ...], declared: Sequence[tuple[str, str]]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind in ("audio", "video"):
        names = [name for name, k in declared if k == kind]
        lines = [m for m in media if m.kind == kind and m.direction in ours]
        for m, name in zip(lines, names, strict=False):
            out[m.mid] = name
    return out


def assign_mlines(tracks: shared_pb2.Tracks, media: Sequence[NegotiatedMedia]) -> MlineNames:
    senders = [(s.name, KIND_NAMES.get(s.kind, "")) for s in tracks.senders]
    receivers = [(r.name, KIND_NAMES.get(r.kind, "")) for r in tracks.receivers]
    return MlineNames(
        senders=_assign(media, ("recvonly", "sendrecv"), senders),
        receivers=_assign(media, ("sendonly",), receivers),
    )
