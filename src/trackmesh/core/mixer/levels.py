"""The levels summary: what one worker reports of its own audio sources to the other nodes (bounded mode).

Each worker with audio in a room sends, every mixer tick, one summary on its levels channel
(:func:`levels_channel`, one per room, node and worker) over the hub's message path
(:class:`~trackmesh.core.channel.MessageHub`): a message of its own type, not a media packet.
A summary with no source says the worker has stopped reporting (its last audio track in the room
stopped); a worker that goes silent otherwise (its node died) is forgotten after
:data:`~.listener.SILENCE_TIMEOUT`.

Wire format, repeated per source (network byte order)::

    peer_len:u16 peer:utf-8 track_len:u16 track:utf-8 loudness:u8 (0 silent .. 127 = 0 dBov)

A malformed summary is dropped and counted (:attr:`RemoteLevels.bad`).
"""

from __future__ import annotations

import math
import struct

from ..ids import channel_id
from ..model import TrackSource

__all__ = ["LEVELS", "RemoteLevels", "decode_levels", "encode_levels", "levels_channel"]

#: The message kind of levels channels: the cluster hub counts them apart from other messages.
LEVELS = "levels"

_U16 = struct.Struct("!H")


def levels_channel(room: str, node: int, worker: int) -> int:
    """The channel on which one worker of one node reports its audio sources' levels."""
    return channel_id(room, "~levels", f"{node}.{worker}")


def encode_levels(levels: list[tuple[TrackSource, int]]) -> bytes:
    out = bytearray()
    for source, loud in levels:
        for name in (source.peer, source.track):
            data = name.encode()[:65535]
            out += _U16.pack(len(data)) + data
        out.append(max(0, min(127, loud)))
    return bytes(out)


def decode_levels(data: bytes) -> dict[TrackSource, int]:
    """Raises ValueError on a malformed summary."""
    out: dict[TrackSource, int] = {}
    pos = 0
    while pos < len(data):
        names = []
        for _ in range(2):
            if pos + 2 > len(data):
                raise ValueError("truncated levels summary")
            (n,) = _U16.unpack_from(data, pos)
            pos += 2
            if pos + n > len(data):
                raise ValueError("truncated levels summary")
            names.append(data[pos : pos + n].decode())  # UnicodeDecodeError is a ValueError
            pos += n
        if pos >= len(data):
            raise ValueError("truncated levels summary")
        loud = data[pos]
        if loud > 127:
            raise ValueError("loudness out of range")
        out[TrackSource(names[0], names[1])] = loud
        pos += 1
    return out


class RemoteLevels:
    """A remote worker's levels channel, subscribed on the message path: its latest summary."""

    __slots__ = ("bad", "channel", "levels", "received")
    channel_kind = LEVELS  # counted apart from other messages by the cluster hub's stats

    def __init__(self, channel: int) -> None:
        self.channel = channel
        self.levels: dict[TrackSource, int] = {}
        self.received = -math.inf
        self.bad = 0

    def on_channel_message(self, now: float, channel: int, sender: str, data: bytes) -> None:
        try:
            self.levels = decode_levels(data)
        except ValueError:
            self.bad += 1
            return
        self.received = now
