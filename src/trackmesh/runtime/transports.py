"""Which transports each worker runs: every worker installs the same set at start.

Both WebRTC transports share the worker's one UDP port through ``WebRtcPort`` (the first to
install creates it); each attaches its own connections to it, so their order does not matter for
routing. The order is kept (WHIP/WHEP, then SDK) because shutdown hooks run in install order.
A transport that fails to import is a broken build, not an optional one: the error surfaces.
"""

from __future__ import annotations

from collections.abc import Callable

from .sdk_worker import install as install_sdk
from .sip_media import install as install_sip
from .webrtc_worker import install as install_webrtc
from .worker import WorkerRuntime

Installer = Callable[[WorkerRuntime], None]


def worker_transports() -> list[Installer]:
    """Installers of the transports every worker runs, in order."""
    return [install_webrtc, install_sdk, install_sip]


def install_all(runtime: WorkerRuntime) -> None:
    for install in worker_transports():
        install(runtime)
