"""The SDK session's internal failure: a request answered with an error response (shared by the session and its
renegotiation module)."""

from __future__ import annotations

from trackmesh.transports.sdk.protocol import ErrorCode

__all__ = ["RpcFailure"]


class RpcFailure(Exception):
    """Internal: a request answered with an error response."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
