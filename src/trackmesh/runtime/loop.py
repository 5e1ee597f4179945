"""Event loop set-up: uvloop when importable (anchors A3.2: same drain cost, cheaper wakeups)."""

from __future__ import annotations

import asyncio
import contextlib


def new_event_loop() -> asyncio.AbstractEventLoop:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
