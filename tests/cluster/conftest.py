"""Fixtures for the zenoh cluster tests.

Every test here opens zenoh sessions, so it runs only inside a private network namespace whose
sole interface is ``lo`` (scripts/in-netns.sh); the autouse guard skips them otherwise (pure
modules that open no session set ``OPENS_SESSIONS = False`` and run anywhere).
Sessions never scout and only use explicit tcp/127.0.0.1 endpoints.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

SECRET = "cluster-test-secret"


def only_loopback() -> tuple[bool, str]:
    try:
        sys_view = sorted(os.listdir("/sys/class/net"))
    except OSError:
        sys_view = []
    proc_view = []
    try:
        with open("/proc/net/dev") as f:
            proc_view = sorted(line.split(":", 1)[0].strip() for line in f.readlines()[2:])
    except OSError:
        pass
    return sys_view == ["lo"] and proc_view == ["lo"], f"/sys/class/net={sys_view} /proc/net/dev={proc_view}"


@pytest.fixture(autouse=True)
def netns_guard(request: pytest.FixtureRequest) -> None:
    """Skip outside a lo-only netns, unless the module says ``OPENS_SESSIONS = False``."""
    if not getattr(request.module, "OPENS_SESSIONS", True):
        return
    ok, seen = only_loopback()
    if not ok:
        pytest.skip(
            "zenoh cluster tests run only in a private network namespace with nothing but `lo` "
            f"(run them via scripts/in-netns.sh); found {seen}"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def endpoint(port: int) -> str:
    return f"tcp/127.0.0.1:{port}"


class Pump:
    """The tests' stand-in for loop.call_soon_threadsafe: a queue drained on the test thread."""

    def __init__(self) -> None:
        self.q: queue.Queue[Callable[[], None]] = queue.Queue()

    def __call__(self, fn: Callable[[], None]) -> None:
        self.q.put(fn)

    def drain(self, seconds: float = 0.0) -> None:
        end = time.monotonic() + seconds
        while True:
            try:
                self.q.get(timeout=max(0.0, end - time.monotonic()) if seconds else 0)()
            except queue.Empty:
                if time.monotonic() >= end:
                    return

    def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> float:
        """Run posted callbacks until ``cond()`` holds; returns the time it took."""
        start = time.monotonic()
        while not cond():
            left = start + timeout - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met within {timeout} s")
            with contextlib.suppress(queue.Empty):
                self.q.get(timeout=min(left, 0.05))()
        return time.monotonic() - start


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def nodes() -> Iterator[Callable[..., object]]:
    """Factory opening zenoh nodes on fresh loopback ports; all closed at teardown."""
    from trackmesh.cluster.zenoh_session import ClusterConfig, ZenohNode, open_node

    opened: list[ZenohNode] = []

    def make(seeds: list[str] | None = None, secret: str = SECRET, port: int | None = None) -> ZenohNode:
        listen = [endpoint(port or free_port())]
        node = open_node(ClusterConfig(secret, listen=listen, seeds=seeds or []))
        opened.append(node)
        return node

    yield make
    for node in reversed(opened):
        node.close()


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A dev cluster of real node processes (tests/cluster/test_roles.py's ``Cluster``), closed at
    teardown; a member that logged a problem fails the test."""
    from tests.cluster.test_roles import running_cluster

    with running_cluster() as c:
        yield c
