"""The error codes of draft-ietf-moq-transport-16 (s13 registries) and the parsers' error type."""

from __future__ import annotations

from enum import IntEnum

from trackmesh.errors import RemoteProtocolError

__all__ = [
    "MoqDecodeError",
    "PublishDoneCode",
    "RequestErrorCode",
    "SessionError",
    "SessionErrorCode",
    "StreamResetCode",
    "Truncated",
]


class MoqDecodeError(RemoteProtocolError):
    """Bytes from a MoQ peer that break the wire format (a PROTOCOL_VIOLATION)."""


class Truncated(MoqDecodeError):
    """The input ended inside a field: a stream parser waits for more, a datagram is dropped."""


class SessionErrorCode(IntEnum):
    """Session close codes (draft-16 s13.1)."""

    NO_ERROR = 0x0
    INTERNAL_ERROR = 0x1
    UNAUTHORIZED = 0x2
    PROTOCOL_VIOLATION = 0x3
    INVALID_REQUEST_ID = 0x4
    DUPLICATE_TRACK_ALIAS = 0x5
    KEY_VALUE_FORMATTING_ERROR = 0x6
    TOO_MANY_REQUESTS = 0x7
    INVALID_PATH = 0x8
    MALFORMED_PATH = 0x9
    GOAWAY_TIMEOUT = 0x10
    CONTROL_MESSAGE_TIMEOUT = 0x11
    DATA_STREAM_TIMEOUT = 0x12
    VERSION_NEGOTIATION_FAILED = 0x15


class RequestErrorCode(IntEnum):
    """REQUEST_ERROR codes (draft-16 s13.1.2)."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TIMEOUT = 0x2
    NOT_SUPPORTED = 0x3
    MALFORMED_AUTH_TOKEN = 0x4
    EXPIRED_AUTH_TOKEN = 0x5
    DOES_NOT_EXIST = 0x10
    INVALID_RANGE = 0x11
    MALFORMED_TRACK = 0x12
    DUPLICATE_SUBSCRIPTION = 0x19
    UNINTERESTED = 0x20
    PREFIX_OVERLAP = 0x30
    INVALID_JOINING_REQUEST_ID = 0x32


class PublishDoneCode(IntEnum):
    """PUBLISH_DONE status codes (draft-16 s13.1.3)."""

    INTERNAL_ERROR = 0x0
    UNAUTHORIZED = 0x1
    TRACK_ENDED = 0x2
    SUBSCRIPTION_ENDED = 0x3
    GOING_AWAY = 0x4
    EXPIRED = 0x5
    TOO_FAR_BEHIND = 0x6
    UPDATE_FAILED = 0x8
    MALFORMED_TRACK = 0x12


class StreamResetCode(IntEnum):
    """Data stream reset codes (draft-16 s13.1.4)."""

    INTERNAL_ERROR = 0x0
    CANCELLED = 0x1
    DELIVERY_TIMEOUT = 0x2
    SESSION_CLOSED = 0x3
    GOING_AWAY = 0x4
    TOO_FAR_BEHIND = 0x5
    UNKNOWN_OBJECT_STATUS = 0x6
    MALFORMED_TRACK = 0x12


class SessionError(Exception):
    """Raised inside the session to close it with ``code`` and ``reason`` (never a crash)."""

    def __init__(self, code: SessionErrorCode, reason: str) -> None:
        super().__init__(f"{code.name}: {reason}")
        self.code = code
        self.reason = reason
