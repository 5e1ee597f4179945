"""Which transports each worker runs: every worker installs the same set at start."""

from __future__ import annotations

from collections.abc import Callable

from .worker import WorkerRuntime

Installer = Callable[[WorkerRuntime], None]


def worker_transports() -> list[Installer]:
    """Installers of the transports compiled into this build, in order."""
    installers: list[Installer] = []
    try:
        from trackmesh.runtime.webrtc_worker import install as install_webrtc
    except ImportError:
        pass
    else:
        installers.append(install_webrtc)
    try:
        from trackmesh.runtime.sdk_worker import install as install_sdk
    except ImportError:
        pass
    else:
        installers.append(install_sdk)  # after WHIP/WHEP: it chains to their datagram handler
    return installers


def install_all(runtime: WorkerRuntime) -> None:
    for install in worker_transports():
        install(runtime)
