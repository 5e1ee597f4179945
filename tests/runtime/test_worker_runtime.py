"""WorkerRuntime's datagram path with a scripted socket (no network): when copies go out."""

from __future__ import annotations

from typing import Any

from trackmesh.config import resolve
from trackmesh.runtime.worker import WorkerRuntime


class ScriptedSocket:
    """Hands out queued datagrams, then would block; records every send with what was received by then."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.inbox = list(datagrams)
        self.received = 0
        self.sent: list[tuple[bytes, int]] = []  # (data, datagrams received when it was sent)

    def recvfrom_into(self, buf: bytearray) -> tuple[int, tuple[str, int]]:
        if not self.inbox:
            raise BlockingIOError
        data = self.inbox.pop(0)
        buf[: len(data)] = data
        self.received += 1
        return len(data), ("127.0.0.1", 5000)

    def sendto(self, data: bytes, addr: Any) -> int:
        self.sent.append((data, self.received))
        return len(data)


def test_each_datagrams_copies_leave_before_the_next_datagram_is_handled() -> None:
    """A batch of 3 datagrams, each fanned out to 4 viewers: the 4 copies of datagram k are sent before datagram
    k+1 is read, so a viewer never waits for the fan-out of packets queued behind its own."""
    runtime = WorkerRuntime(resolve("standalone", {"secret": "test-secret-12345"}, {}), 0)
    sock = ScriptedSocket([b"a", b"b", b"c"])
    runtime._sock = sock  # type: ignore[assignment]

    def fan_out(now: float, data: bytes, addr: tuple[str, int]) -> None:
        for viewer in range(4):
            runtime.outbox.append((data + bytes([viewer]), ("127.0.0.1", 6000 + viewer)))

    runtime.datagram_handler = fan_out
    runtime._on_readable()
    assert [d for d, _ in sock.sent] == [x + bytes([v]) for x in (b"a", b"b", b"c") for v in range(4)]
    assert [when for _, when in sock.sent] == [1] * 4 + [2] * 4 + [3] * 4
    assert runtime.counters["udp_rx"] == 3 and runtime.counters["udp_tx"] == 12
    assert not runtime.outbox
