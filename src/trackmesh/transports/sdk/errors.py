"""The SDK session's internal failure: a request answered with an error response (shared by the session, its
media slots and its renegotiation module), and the mapping of core control errors onto it."""

from __future__ import annotations

from trackmesh.core.errors import ControlError
from trackmesh.core.errors import ErrorCode as CoreCode
from trackmesh.transports.sdk.protocol import ErrorCode

__all__ = ["RpcFailure", "check_core"]


class RpcFailure(Exception):
    """Internal: a request answered with an error response."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Core errors -> protocol error codes (the SDK hands both the code and our message to the application).
_CORE_ERRORS = {
    CoreCode.TRACK_NOT_FOUND: ErrorCode.RPC_TRACK_NAME_NOT_FOUND,
    CoreCode.LOCAL_TRACK_NOT_FOUND: ErrorCode.RPC_TRACK_NAME_NOT_FOUND,
    CoreCode.LOCAL_TRACK_NOT_ATTACHED: ErrorCode.RPC_TRACK_NOT_ATTACHED,
    CoreCode.NOT_SUBSCRIBED: ErrorCode.RPC_INVALID_REQUEST,
    CoreCode.TRACK_ALREADY_PUBLISHED: ErrorCode.RPC_TRACK_ALREADY_ATTACHED,
    CoreCode.ALREADY_SUBSCRIBED: ErrorCode.RPC_TRACK_ALREADY_ATTACHED,
    CoreCode.ENDPOINT_CLOSED: ErrorCode.RPC_ALREADY_DISCONNECTED,
    CoreCode.UNKNOWN_CONN: ErrorCode.RPC_ENDPOINT_NOT_FOUND,
}


def check_core(err: ControlError | None) -> None:
    """Raise the RpcFailure of a core control error (nothing for None)."""
    if err is not None:
        raise RpcFailure(_CORE_ERRORS.get(err.code, ErrorCode.RPC_INVALID_REQUEST), str(err))
