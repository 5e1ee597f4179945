"""Which transports each worker runs: every worker installs the same set at start.

Both WebRTC transports share the worker's one UDP port through ``WebRtcPort`` (the first to
install creates it); each attaches its own connections to it, so their order does not matter for
routing. The order is kept (WHIP/WHEP, then SDK, then RTMP ingest when ``--rtmp-port`` is not 0)
because shutdown hooks run in install order.
A transport that fails to import is a broken build, not an optional one: the error surfaces.
"""

from __future__ import annotations

from collections.abc import Callable

from .recording import install as install_recording
from .rtmp_worker import install as install_rtmp
from .rtpengine_media import install as install_rtpengine
from .sdk_worker import install as install_sdk
from .sip_media import install as install_sip
from .webrtc_worker import install as install_webrtc
from .worker import WorkerRuntime

Installer = Callable[[WorkerRuntime], None]


def worker_transports() -> list[Installer]:
    """Installers of the transports every worker runs, in order (RTMP ingest when --rtmp-port is not 0,
    SIP media: its calls and the RTPengine-style API's endpoints), then recording: its shutdown hook
    runs after theirs, so every session has closed (and its files ended) before the files are finalised."""
    return [install_webrtc, install_sdk, install_rtmp, install_sip, install_rtpengine, install_recording]


def install_all(runtime: WorkerRuntime) -> None:
    for install in worker_transports():
        install(runtime)
