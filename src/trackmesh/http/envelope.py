"""The JSON envelope of atm0s 0.2's APIs: ``{status, data?, error?}``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def ok(data: Any) -> dict[str, Any]:
    return {"status": True, "data": data}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": False, "error": message}, status_code=status, headers=headers)
