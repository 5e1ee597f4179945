"""The relay's QUIC send path, in one process, on a virtual clock: CPU per delivered object.

    .venv/bin/python bench/moq_sendpath.py 50 --datagram-size 1200 --seconds 10

``bench/moq_fanout_e2e.py`` measures the relay as users run it, but on a shared 2-core box its
figures move with the load: a starved relay batches more and costs less per object. This bench
takes the noise out to compare changes to the send path:

- The relay is the node's own :class:`~trackmesh.runtime.moq_listener.MoqListener` with its
  :class:`~trackmesh.runtime.moq_listener.MoqConnection` sessions and aioquic's ``QuicServer``; the
  publisher and the N subscribers are the e2e bench's draft-16 sessions on aioquic.
- No sockets: datagrams cross an in-memory wire with a fixed one-way delay (``--delay-ms``).
- The event loop's clock is virtual: when nothing is ready it jumps to the next timer. So every
  run makes the same packets, ACKs and timers whatever else the machine does, as on an idle
  machine with an infinitely fast CPU.
- The relay's CPU is the thread CPU time spent in its entry points (datagrams in, flushes,
  QUIC timers, the listener's tick), per object delivered to a subscriber. Syscalls are not in
  it (there are none), so it is below the e2e figure by their cost (about 5 us per packet).

The track is the e2e bench's: 30 frames/s, a group every 2 s, 40 KB key frames, 3.5 KB deltas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import selectors
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection

sys.path.insert(0, str(Path(__file__).parent))
from moq_fanout_e2e import (
    DELTA_SIZE,
    FPS,
    GOP,
    KEY_SIZE,
    NS,
    STAMP,
    TRACK,
    Session,
    client_config,
)
from trackmesh.runtime import moq_listener
from trackmesh.runtime.moq_listener import MoqConnection, MoqListener
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.objects import SubgroupHeader, encode_object, encode_subgroup_header

SERVER = ("127.0.0.1", 4443)


class VirtualSelector(selectors.BaseSelector):
    """A selector with nothing to wait for: ``select(timeout)`` moves the virtual clock instead."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self._map: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            self.clock[0] += timeout
        return []

    def get_map(self) -> Any:
        return self._map


class Meter:
    """Thread CPU time of the relay's entry points (nested calls counted once), and how often
    each was called while on."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.depth = 0
        self.on = False
        self.calls: dict[str, int] = {}
        self.count_functions = False  # --count-calls: count the relay's function calls (slow, deterministic)
        self.functions = 0

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.functions += 1

    def wrap(self, fn: Callable[..., Any], name: str = "") -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.on and name:
                self.calls[name] = self.calls.get(name, 0) + 1
            if not self.on or self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            if self.count_functions:
                sys.setprofile(self._profile)
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu += time.thread_time() - t0
                if self.count_functions:
                    sys.setprofile(None)
                self.depth -= 1

        return timed


class Wire:
    """Datagrams between endpoints, each delivered ``delay`` after it was sent, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, meter: Meter) -> None:
        self.loop, self.delay, self.meter = loop, delay, meter
        self.endpoints: dict[Any, asyncio.DatagramProtocol] = {}
        self.to_relay = self.from_relay = 0

    def transport(self, addr: Any) -> Any:
        wire = self

        class Transport(asyncio.DatagramTransport):
            def sendto(self, data: Any, dst: Any = None) -> None:
                wire.send(addr, bytes(data), dst)

            def get_extra_info(self, name: str, default: Any = None) -> Any:
                return addr if name == "sockname" else default

            def close(self) -> None:
                pass

        return Transport()

    def send(self, src: Any, data: bytes, dst: Any) -> None:
        if dst == SERVER:
            self.to_relay += 1
        else:
            self.from_relay += 1
        self.loop.call_later(self.delay, self._deliver, src, data, dst)

    def _deliver(self, src: Any, data: bytes, dst: Any) -> None:
        endpoint = self.endpoints.get(dst)
        if endpoint is None:
            return
        if dst == SERVER:
            self.meter.wrap(endpoint.datagram_received, "datagrams_in")(data, src)
        else:
            endpoint.datagram_received(data, src)


async def client(wire: Wire, port: int) -> Session:
    addr = ("127.0.0.1", port)
    session = Session(QuicConnection(configuration=client_config()))
    session.connection_made(wire.transport(addr))
    wire.endpoints[addr] = session
    session.connect(SERVER)
    await session.wait_connected()
    return session


async def run(count: int, seconds: float, datagram_size: int, delay: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    meter = METER
    listener = MoqListener(SERVER[0], SERVER[1], anonymous=True, loopback_datagram_size=datagram_size)
    server = QuicServer(
        configuration=listener._configuration(),
        create_protocol=lambda *a, **kw: MoqConnection(*a, listener=listener, **kw),
    )
    wire = Wire(loop, delay, meter)
    server.connection_made(wire.transport(SERVER))
    wire.endpoints[SERVER] = server
    # The listener's tick re-arms itself through its own attribute: meter it there.
    listener._tick = meter.wrap(listener._tick, "ticks")  # type: ignore[method-assign]
    loop.call_later(moq_listener.TIMER_INTERVAL, listener._tick)

    pub = await client(wire, 5000)
    pub.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 1000}))
    await pub.wait_for(lambda: pub.messages, 10)
    pub.send(m.PublishNamespace(0, NS))
    subs = [await client(wire, 6000 + i) for i in range(count)]
    for sub in subs:
        sub.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 100}))
    await asyncio.gather(*(s.wait_for(lambda s=s: s.messages, 10) for s in subs))
    for sub in subs:
        sub.send(m.Subscribe(0, NS, TRACK, {m.PARAM_FORWARD: 1}))

    aliases: dict[int, int] = {}
    streams: dict[int, int] = {}
    start = loop.time() + 3.0  # the first group after every SUBSCRIBE is answered
    end = start + seconds
    for sub in subs:
        sub.window = (start, end)
    seq, t0 = 0, loop.time()
    cpu0 = packets0 = cpu = packets = functions0 = functions = 0.0
    while loop.time() < end + 1.0:
        if not meter.on and start <= loop.time() < end:
            meter.on = True
            cpu0, packets0, functions0 = meter.cpu, wire.from_relay, meter.functions
        for msg in pub.messages:
            if isinstance(msg, m.Subscribe) and msg.request_id not in aliases:
                alias = aliases[msg.request_id] = len(aliases) + 1
                pub.send(m.SubscribeOk(msg.request_id, alias, {m.PARAM_EXPIRES: 0}))
        pub.messages = [x for x in pub.messages if not isinstance(x, m.Subscribe)]
        group, object_id = divmod(seq, GOP)
        payload = STAMP.pack(seq, loop.time()) + bytes((KEY_SIZE if object_id == 0 else DELTA_SIZE) - STAMP.size)
        for alias in aliases.values():
            if object_id == 0:
                if alias in streams:
                    pub._quic.send_stream_data(streams[alias], b"", end_stream=True)
                stream = streams[alias] = pub._quic.get_next_available_stream_id(is_unidirectional=True)
                head = encode_subgroup_header(SubgroupHeader(alias, group, 0, 128))
                pub._quic.send_stream_data(stream, head + encode_object(0, None, payload))
            elif alias in streams:
                pub._quic.send_stream_data(streams[alias], encode_object(object_id, object_id - 1, payload))
        pub.transmit()
        seq += 1
        if loop.time() >= end and meter.on:
            meter.on = False
            cpu, packets = meter.cpu - cpu0, wire.from_relay - packets0
            functions = meter.functions - functions0
        await asyncio.sleep(max(0.0, t0 + seq / FPS - loop.time()))
    delivered = sum(s.received for s in subs)
    sent = sum(start <= (seq_ / FPS + t0) < end for seq_ in range(seq))
    stats = listener.stats
    return {
        "subscribers": count,
        "datagram_size": datagram_size,
        "objects_sent": sent,
        "delivered": delivered,
        "expected": sent * count,
        "relay_cpu_us_per_object": round(1e6 * cpu / delivered, 1) if delivered else None,
        "relay_cpu_share": round(cpu / seconds, 3),
        "relay_datagrams_per_object": round(packets / delivered, 2) if delivered else None,
        "relay_datagrams_out": packets,
        **({"relay_function_calls_per_object": round(functions / delivered)} if meter.count_functions else {}),
        "relay_calls": dict(sorted(meter.calls.items())),
        "acks_without_transmit": getattr(stats, "acks_without_transmit", None),
    }


METER = Meter()
MoqConnection.flush = METER.wrap(MoqConnection.flush, "flushes")  # type: ignore[method-assign]
MoqConnection._handle_timer = METER.wrap(QuicConnectionProtocol._handle_timer, "quic_timers")  # type: ignore[method-assign]
MoqConnection.transmit = METER.wrap(QuicConnectionProtocol.transmit, "transmits")  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subscribers", type=int, nargs="+")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--datagram-size", type=int, default=1200, help="the relay's packets to its loopback peers")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="one-way delay of the in-memory wire")
    parser.add_argument(
        "--count-calls",
        action="store_true",
        help="count the relay's Python and C function calls per object (deterministic; CPU figures then meaningless)",
    )
    args = parser.parse_args()
    METER.count_functions = args.count_calls
    for count in args.subscribers:
        METER.cpu, METER.on, METER.calls, METER.functions = 0.0, False, {}, 0
        clock = [0.0]
        loop = asyncio.SelectorEventLoop(VirtualSelector(clock))

        def virtual_time(clock: list[float] = clock) -> float:
            return clock[0]

        loop.time = virtual_time  # type: ignore[method-assign]
        try:
            result = loop.run_until_complete(run(count, args.seconds, args.datagram_size, args.delay_ms / 1000))
        finally:
            loop.close()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
