"""The native send helper (runtime/_sendmmsg.c) and the worker's send path, on real loopback sockets.

The suite runs on the editable install, which does not compile the helper: the fixture builds it
from the source into a temporary directory (a C compiler is required, as for tests/test_compiled.py,
which also runs this module against the helper ``setup.py`` builds). Every socket is bound to
127.0.0.1 (or ::1) and every datagram goes to those.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import select
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from trackmesh.config import resolve
from trackmesh.runtime import udp_send
from trackmesh.runtime.worker import WorkerRuntime

SOURCE = Path(udp_send.__file__).with_name("_sendmmsg.c")
Datagram = tuple[bytes, tuple[str, int]]


def build_helper(out: Path) -> ModuleType:
    """Compile _sendmmsg.c as setup.py does and load it (not registered in sys.modules)."""
    from setuptools import Distribution, Extension

    dist = Distribution({"ext_modules": [Extension("_sendmmsg", [str(SOURCE)])]})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out)
    cmd.build_temp = str(out / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    path = cmd.get_ext_fullpath("_sendmmsg")
    spec = importlib.util.spec_from_file_location("_sendmmsg", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    try:  # the compiled build (tests/test_compiled.py puts it on PYTHONPATH)
        return importlib.import_module("trackmesh.runtime._sendmmsg")
    except ImportError:
        return build_helper(tmp_path_factory.mktemp("sendmmsg"))


def open_udp(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def sockets() -> Iterator[Callable[..., socket.socket]]:
    opened: list[socket.socket] = []

    def make(host: str = "127.0.0.1") -> socket.socket:
        sock = open_udp(host)
        opened.append(sock)
        return sock

    yield make
    for sock in opened:
        sock.close()


def receive(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """The next ``count`` datagrams on ``sock`` (waits for them with a deadline), then checks no more came."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(got)} of {count} datagrams arrived"
        select.select([sock], [], [], left)
        while len(got) < count:
            try:
                got.append(sock.recv(70000))
            except BlockingIOError:
                break
    with pytest.raises(BlockingIOError):
        sock.recv(70000)
    return got


def addr_of(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return (host, port)


def test_a_batch_reaches_every_destination_in_order(native: ModuleType, sockets: Callable[..., socket.socket]) -> None:
    sender = sockets()
    receivers = [sockets() for _ in range(3)]
    # 100 datagrams round-robin over 3 sockets: more than one batch, so two calls.
    datagrams = deque((f"{i}".encode() * 3, addr_of(receivers[i % 3])) for i in range(100))
    assert native.BATCH == udp_send.BATCH == 64
    assert native.sendmmsg(sender.fileno(), datagrams) == 64
    assert native.sendmmsg(sender.fileno(), datagrams, 64) == 36
    assert native.sendmmsg(sender.fileno(), datagrams, 100) == 0
    for k, receiver in enumerate(receivers):
        expected = [f"{i}".encode() * 3 for i in range(k, 100, 3)]
        assert receive(receiver, len(expected)) == expected


def test_payloads_may_be_any_bytes_like(native: ModuleType, sockets: Callable[..., socket.socket]) -> None:
    sender, receiver = sockets(), sockets()
    to = addr_of(receiver)
    payloads: list[bytes | bytearray | memoryview] = [b"bytes", bytearray(b"bytearray"), memoryview(b"xxview")[2:], b""]
    assert native.sendmmsg(sender.fileno(), [(p, to) for p in payloads]) == 4
    assert receive(receiver, 4) == [b"bytes", b"bytearray", b"view", b""]


@pytest.mark.parametrize("bad_at", [0, 5])
def test_it_stops_before_a_datagram_the_kernel_refuses(
    native: ModuleType, sockets: Callable[..., socket.socket], bad_at: int
) -> None:
    """A datagram over the UDP limit (EMSGSIZE) in the middle: the ones before it went, the rest did not."""
    sender, receiver = sockets(), sockets()
    to = addr_of(receiver)
    datagrams: list[Datagram] = [(bytes([i]), to) for i in range(10)]
    datagrams[bad_at] = (b"x" * 70000, to)
    assert native.sendmmsg(sender.fileno(), datagrams) == bad_at
    assert receive(receiver, bad_at) == [bytes([i]) for i in range(bad_at)]


@pytest.mark.parametrize(
    "bad",
    [
        ("localhost", 9),  # a name: socket.sendto resolves it, the helper does not
        ("127.0.0.1", 70000),  # port out of range
        ("127.0.0.1", -1),
        ("127.0.0.1",),  # not an address
        ("127.0.0.1", 9, 0, 0),  # IPv4 takes no flowinfo/scope
        "127.0.0.1:9",
        (b"127.0.0.1", 9),
    ],
)
def test_it_stops_before_what_it_cannot_encode(
    native: ModuleType, sockets: Callable[..., socket.socket], bad: object
) -> None:
    sender, receiver = sockets(), sockets()
    to = addr_of(receiver)
    datagrams: list[object] = [(b"a", to), (b"b", to), (b"c", bad), (b"d", to)]
    assert native.sendmmsg(sender.fileno(), datagrams) == 2
    assert receive(receiver, 2) == [b"a", b"b"]
    # What is not a (payload, address) pair at all stops it too.
    for item in [b"x", (b"x",), (12, to), (b"x", to, 1)]:
        assert native.sendmmsg(sender.fileno(), [item, (b"y", to)]) == 0
    assert native.sendmmsg(sender.fileno(), [(b"e", to)], 0) == 1
    assert receive(receiver, 1) == [b"e"]


def test_bad_arguments_raise(native: ModuleType, sockets: Callable[..., socket.socket]) -> None:
    sender = sockets()
    with pytest.raises(ValueError):
        native.sendmmsg(-1, [])
    with pytest.raises(ValueError):
        native.sendmmsg(sender.fileno(), [], -1)
    with pytest.raises(TypeError):
        native.sendmmsg(sender.fileno(), 5)
    with pytest.raises(TypeError):
        native.sendmmsg(sender.fileno())
    assert native.sendmmsg(sender.fileno(), []) == 0


def test_an_ipv6_address_on_an_ipv4_socket_is_refused(
    native: ModuleType, sockets: Callable[..., socket.socket]
) -> None:
    sender, receiver = sockets(), sockets()
    to = addr_of(receiver)
    assert native.sendmmsg(sender.fileno(), [(b"a", to), (b"b", ("::1", 9)), (b"c", to)]) == 1
    assert receive(receiver, 1) == [b"a"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) in this network namespace")
def test_ipv6(native: ModuleType, sockets: Callable[..., socket.socket]) -> None:
    sender = sockets("::1")
    receivers = [sockets("::1") for _ in range(2)]
    host, port = addr_of(receivers[1])
    datagrams = [(b"two-tuple", addr_of(receivers[0])), (b"four-tuple", (host, port, 0, 0))]
    assert native.sendmmsg(sender.fileno(), datagrams) == 2
    assert receive(receivers[0], 1) == [b"two-tuple"]
    assert receive(receivers[1], 1) == [b"four-tuple"]


# ---- the worker's send path ----------------------------------------------------------------


class FanOut:
    """The worker's datagram handler: every datagram received goes to each viewer, tagged with the viewer."""

    def __init__(self, runtime: WorkerRuntime, viewers: Sequence[tuple[str, int]], oversize_at: int = -1) -> None:
        self.runtime = runtime
        self.viewers = viewers
        self.oversize_at = oversize_at  # this input's copy to viewer 1 is over the UDP limit (refused)

    def __call__(self, now: float, data: bytes, addr: tuple[str, int]) -> None:
        for v, viewer in enumerate(self.viewers):
            copy = data + bytes([v])
            if int(data) == self.oversize_at and v == 1:
                copy = b"x" * 70000
            self.runtime.outbox.append((copy, viewer))


def run_worker(
    runtime: WorkerRuntime, sockets: Callable[..., socket.socket], inputs: int, viewers: int
) -> list[socket.socket]:
    """A worker on a real loopback socket fans ``inputs`` datagrams out to ``viewers`` sockets."""
    port = sockets()
    runtime._sock = port
    if runtime._send_batch is not None:
        runtime._tx_fd = port.fileno()
    publisher = sockets()
    receivers = [sockets() for _ in range(viewers)]
    if runtime.datagram_handler is None:
        runtime.datagram_handler = FanOut(runtime, [addr_of(r) for r in receivers])
    else:
        assert isinstance(runtime.datagram_handler, FanOut)
        runtime.datagram_handler.viewers = [addr_of(r) for r in receivers]
    for i in range(inputs):
        publisher.sendto(b"%d" % i, addr_of(port))
    deadline = time.monotonic() + 10
    while runtime.counters["udp_rx"] < inputs:
        assert time.monotonic() < deadline, f"{runtime.counters['udp_rx']} of {inputs} inputs arrived"
        select.select([port], [], [], 1.0)
        runtime._on_readable()
    return receivers


def new_runtime(send_batch: udp_send.SendBatch | None) -> WorkerRuntime:
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    runtime._send_batch = send_batch
    return runtime


@pytest.mark.parametrize("path", ["sendmmsg", "sendto"])
def test_the_worker_delivers_every_copy_in_order(
    native: ModuleType, sockets: Callable[..., socket.socket], path: str
) -> None:
    runtime = new_runtime(native.sendmmsg if path == "sendmmsg" else None)
    # 70 viewers: each input's fan-out is more than one batch.
    receivers = run_worker(runtime, sockets, inputs=20, viewers=70)
    for v, receiver in enumerate(receivers):
        assert receive(receiver, 20) == [b"%d" % i + bytes([v]) for i in range(20)]
    counters = runtime.counters
    assert counters["udp_tx"] == 20 * 70 and counters["udp_tx_errors"] == 0
    assert counters["udp_tx_fallbacks"] == 0
    if path == "sendmmsg":
        assert counters["udp_tx_sendmmsg"] == 20 * 70
        assert counters["udp_tx_sendmmsg_batches"] == 20 * 2  # 64 + 6 per input
    else:
        assert counters["udp_tx_sendmmsg"] == counters["udp_tx_sendmmsg_batches"] == 0


def test_what_the_kernel_refuses_falls_back_to_sendto_in_order(
    native: ModuleType, sockets: Callable[..., socket.socket]
) -> None:
    """Input 3's copy to viewer 1 is refused (EMSGSIZE): sendmmsg took viewer 0's; sendto reports the refused
    one (counted, dropped) and sends viewers 2-4's after it; the next input is batched again."""
    runtime = new_runtime(native.sendmmsg)
    runtime.datagram_handler = FanOut(runtime, [], oversize_at=3)
    receivers = run_worker(runtime, sockets, inputs=6, viewers=5)
    for v, receiver in enumerate(receivers):
        inputs = [i for i in range(6) if (i, v) != (3, 1)]
        assert receive(receiver, len(inputs)) == [b"%d" % i + bytes([v]) for i in inputs]
    counters = runtime.counters
    assert counters["udp_tx_errors"] == 1 and counters["udp_tx"] == 6 * 5 - 1
    assert counters["udp_tx_sendmmsg"] == 5 * 5 + 1
    assert counters["udp_tx_fallbacks"] == 4  # the refused copy and the 3 after it
    assert counters["udp_tx_sendmmsg_batches"] == 6
    assert not runtime.outbox


def test_a_started_worker_sends_with_the_helper_when_it_is_built() -> None:
    """start() picks udp_send.sendmmsg: the native helper in a compiled install, None (sendto) otherwise."""
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    loop = asyncio.new_event_loop()
    try:
        runtime.start(loop)
        assert runtime._send_batch is udp_send.sendmmsg
        assert runtime._sock is not None and runtime._tx_fd == runtime._sock.fileno()
        runtime.shutdown("test")
        assert runtime._send_batch is None and runtime._tx_fd == -1
    finally:
        loop.close()
