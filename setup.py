"""Compiles the per-packet modules with mypyc when a wheel is built (``pip install .``).

Everything else about the package lives in pyproject.toml. The compiled modules are the same
Python source, type-checked by mypy already (docs/benchmarks.md has what it saves per packet).

- An editable install (``pip install -e .``, what scripts/test.sh makes) stays pure Python, so an
  edited module never hides behind a stale compiled one; tests/test_compiled.py builds the compiled
  modules and runs the hot-path tests against them.
- Beside them, a small C extension (``trackmesh.runtime._sendmmsg``, Linux only) sends a worker's
  outbox with one ``sendmmsg(2)`` per batch; without it the worker sends each datagram with
  ``socket.sendto`` (runtime/udp_send.py). It is optional on its own: if it fails to compile, the
  mypyc modules are still installed.
- ``TRACKMESH_PURE_PYTHON=1`` skips compiling. So does a machine without a C compiler, or a mypyc
  that refuses a module: the install then warns once and gives the pure-Python package, which
  works the same, only slower per packet.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: The modules every forwarded packet goes through, compiled together (one shared library, so
#: calls between them are native). Classes they subclass must be compiled too (mypyc).
HOT_MODULES = [
    "src/trackmesh/rtp/packet.py",
    "src/trackmesh/rtp/rewrite.py",
    "src/trackmesh/rtp/nack.py",
    "src/trackmesh/rtp/twcc.py",
    "src/trackmesh/rtp/srtp.py",
    "src/trackmesh/rtp/streams/inbound.py",
    "src/trackmesh/rtp/streams/outbound.py",
    "src/trackmesh/codecs/payload.py",
    "src/trackmesh/codecs/layers.py",
    "src/trackmesh/codecs/vp8.py",
    "src/trackmesh/codecs/vp9.py",
    "src/trackmesh/codecs/h264.py",
    "src/trackmesh/codecs/hevc.py",
    "src/trackmesh/codecs/av1.py",
    "src/trackmesh/codecs/opus.py",
    "src/trackmesh/codecs/g711.py",
    "src/trackmesh/core/tracks.py",
    "src/trackmesh/cluster/local.py",
    "src/trackmesh/transports/webrtc/media_in.py",
    "src/trackmesh/transports/webrtc/media_out.py",
    # The receive path's entry (issue 19, lever 4): the peer's datagram handling, the port's
    # demultiplexer and the ICE agent's per-packet liveness note, so a received packet stays in
    # native code from the port to the viewers' sinks.
    "src/trackmesh/transports/webrtc/peer.py",
    "src/trackmesh/transports/webrtc/demux.py",
    "src/trackmesh/transports/webrtc/ice/agent.py",
]

#: The native send helper (runtime/_sendmmsg.c): plain C against the CPython API, Linux's sendmmsg.
SENDMMSG = Extension("trackmesh.runtime._sendmmsg", ["src/trackmesh/runtime/_sendmmsg.c"])


def _warn(message: str) -> None:
    fallback = "installing the pure-Python modules (same behaviour, slower per packet)"
    print(f"trackmesh: {message}; {fallback}", file=sys.stderr)


class _OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python when compiling fails (no compiler, no headers)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # distutils' CompileError/PlatformError, a missing gcc (OSError)
            _warn(f"compiling the hot modules failed ({exc})")
            self.extensions = []

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            if ext.name == SENDMMSG.name:  # optional alone: the worker falls back to sendto per datagram
                print(f"trackmesh: compiling {ext.name} failed ({exc}); sending with sendto", file=sys.stderr)
                return
            _warn(f"compiling {ext.name} failed ({exc})")
            raise


def _editable() -> bool:
    return any(arg in ("editable_wheel", "develop") for arg in sys.argv)


def _ext_modules() -> list[Any]:
    if os.environ.get("TRACKMESH_PURE_PYTHON") == "1" or _editable():
        return []
    native = [SENDMMSG] if sys.platform.startswith("linux") else []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not available")
        return native
    try:
        return [*mypycify(["--ignore-missing-imports", *HOT_MODULES], opt_level="3"), *native]
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error it cannot compile
        _warn(f"mypyc refused the hot modules ({exc})")
        return native


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": _OptionalBuildExt})
