"""Typed errors of core controls.

A control that makes no sense (subscribe to a track that does not exist, leave a room not
joined) returns a :class:`ControlError`. Nothing the client can send makes the core raise, so
no exception can reach a worker loop from a control.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    INVALID_NAME = "invalid_name"
    TRACK_NOT_FOUND = "track_not_found"
    TRACK_ALREADY_PUBLISHED = "track_already_published"
    TRACK_KIND_MISMATCH = "track_kind_mismatch"
    LOCAL_TRACK_NOT_FOUND = "local_track_not_found"
    LOCAL_TRACK_EXISTS = "local_track_exists"
    LOCAL_TRACK_NOT_ATTACHED = "local_track_not_attached"
    NOT_SUBSCRIBED = "not_subscribed"
    ALREADY_SUBSCRIBED = "already_subscribed"
    MODE_IS_AUTO = "mode_is_auto"
    INVALID_VALUE = "invalid_value"
    ENDPOINT_CLOSED = "endpoint_closed"
    UNKNOWN_CONN = "unknown_conn"
    MIXER_NOT_CONFIGURED = "mixer_not_configured"
    NOT_PUBLISHING = "not_publishing"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class ControlError:
    code: ErrorCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"
