"""RTMP message type ids and the protocol/user control messages (RTMP spec s5.4, s6.2, s7.1).

Control messages travel on chunk stream 2, message stream 0 (s5.4); commands on csid 3, and
a stream's status and media on their own csids (nginx-rtmp and ffmpeg use 5/6/7 the same way).
"""

from __future__ import annotations

import struct
from typing import Final

from trackmesh.transports.rtmp.chunk import Message
from trackmesh.transports.rtmp.errors import RtmpError

__all__ = [
    "CSID_COMMAND",
    "CSID_CONTROL",
    "CSID_STREAM_STATUS",
    "acknowledgement",
    "parse_u32",
    "parse_user_control",
    "ping_request",
    "ping_response",
    "set_chunk_size",
    "set_peer_bandwidth",
    "split_aggregate",
    "stream_begin",
    "stream_eof",
    "window_ack_size",
]

# Message type ids (s5.4, s7.1).
SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACKNOWLEDGEMENT: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
SHARED_OBJECT_AMF3: Final = 16
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
SHARED_OBJECT_AMF0: Final = 19
COMMAND_AMF0: Final = 20
AGGREGATE: Final = 22

# User control event types (s7.1.7).
UC_STREAM_BEGIN: Final = 0
UC_STREAM_EOF: Final = 1
UC_STREAM_DRY: Final = 2
UC_SET_BUFFER_LENGTH: Final = 3
UC_STREAM_IS_RECORDED: Final = 4
UC_PING_REQUEST: Final = 6
UC_PING_RESPONSE: Final = 7

CSID_CONTROL: Final = 2
CSID_COMMAND: Final = 3
CSID_STREAM_STATUS: Final = 5

#: Set Peer Bandwidth limit types (s5.4.5).
BANDWIDTH_HARD: Final = 0
BANDWIDTH_SOFT: Final = 1
BANDWIDTH_DYNAMIC: Final = 2

_U32: Final = struct.Struct("!I")
_U16: Final = struct.Struct("!H")


def parse_u32(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise RtmpError(f"{what} shorter than 4 bytes")
    value: int = _U32.unpack_from(payload, 0)[0]
    return value


def set_chunk_size(size: int) -> bytes:
    return _U32.pack(size & 0x7FFFFFFF)


def acknowledgement(sequence: int) -> bytes:
    return _U32.pack(sequence & 0xFFFFFFFF)


def window_ack_size(size: int) -> bytes:
    return _U32.pack(size)


def set_peer_bandwidth(size: int, limit_type: int = BANDWIDTH_DYNAMIC) -> bytes:
    return _U32.pack(size) + bytes((limit_type,))


def _user_control(event: int, value: int) -> bytes:
    return _U16.pack(event) + _U32.pack(value & 0xFFFFFFFF)


def stream_begin(stream_id: int) -> bytes:
    return _user_control(UC_STREAM_BEGIN, stream_id)


def stream_eof(stream_id: int) -> bytes:
    return _user_control(UC_STREAM_EOF, stream_id)


def ping_request(timestamp: int) -> bytes:
    return _user_control(UC_PING_REQUEST, timestamp)


def ping_response(timestamp: int) -> bytes:
    return _user_control(UC_PING_RESPONSE, timestamp)


def parse_user_control(payload: bytes) -> tuple[int, int]:
    """(event type, first 32-bit value); Set Buffer Length's second value is not needed."""
    if len(payload) < 6:
        raise RtmpError("User Control message shorter than 6 bytes")
    event: int = _U16.unpack_from(payload, 0)[0]
    value: int = _U32.unpack_from(payload, 2)[0]
    return event, value


def split_aggregate(msg: Message) -> list[Message]:
    """The sub-messages of an Aggregate message (RTMP spec s7.1.6): FLV-tag-shaped records
    (type 1 byte, size 3, timestamp 3 + extension 1, stream id 3, body, back pointer 4). Their
    timestamps are rebased so the first one gets the aggregate's own timestamp; the aggregate's
    message stream id applies to all of them."""
    data = msg.payload
    out: list[Message] = []
    pos = 0
    base: int | None = None
    while pos < len(data):
        if pos + 11 > len(data):
            raise RtmpError("aggregate sub-message header truncated")
        type_id = data[pos]
        size = (data[pos + 1] << 16) | (data[pos + 2] << 8) | data[pos + 3]
        ts = ((data[pos + 4] << 16) | (data[pos + 5] << 8) | data[pos + 6]) | (data[pos + 7] << 24)
        pos += 11
        if pos + size + 4 > len(data):
            raise RtmpError("aggregate sub-message overruns the message")
        if base is None:
            base = ts
        timestamp = (msg.timestamp + ts - base) & 0xFFFFFFFF
        out.append(Message(msg.csid, timestamp, type_id, msg.stream_id, data[pos : pos + size]))
        pos += size + 4  # the back pointer: size + 11, not needed to walk forwards
    return out
