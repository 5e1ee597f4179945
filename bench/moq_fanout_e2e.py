"""MoQ fan-out end to end: one 1 Mbps LOC-like video track to N subscribers over real QUIC.

Run it only inside the private network namespace (loopback only)::

    scripts/in-netns.sh .venv/bin/python bench/moq_fanout_e2e.py 10 50 100 200 \
        --relays trackmesh,aiomoqt,moqrs --seconds 20 [--clients moqrs]

For each relay and each N it starts the relay pinned to core 1 (``taskset -c 1``):

- ``trackmesh``: ``trackmesh standalone --moq-anonymous``;
- ``aiomoqt``: aiomoqt 0.13.3's ``moq-interop-relay --quic --draft 16`` (from ``.venv-moq``);
- ``moqrs``: moq-rs 0.5.1's ``moq.Server`` with one shared origin (``.venv-moq``), which makes it a
  relay: what one session publishes, the others may subscribe to.

The clients run on core 0 (``taskset -c 0``): one publisher process, written here on aioquic and our
own draft-16 codecs (PUBLISH_NAMESPACE, answers the relay's SUBSCRIBEs, one subgroup stream per
group), and one process holding all N subscriber sessions, chosen by ``--clients``:

- ``aioquic`` (default): this file's draft-16 sessions on aioquic (pure Python), ALPN ``moqt-16``;
- ``moqrs``: bench/moq_rs_subscribers.py in ``.venv-moq``, each subscriber a moq-rs ``moq.Client``
  (moq-ffi 0.4.18: Rust, quinn, tokio) on ``moqt://``, subscribing to broadcast ``bench/fanout``,
  track ``video``. Far cheaper per packet, so that N = 100 and 200 measure the relays, not the
  subscribers. moq-ffi offers every version it knows (moq-lite's and IETF drafts up to moqt-22)
  and has no setting to narrow them, so the relay picks: aiomoqt's ``moqt-16`` (the only one it offers
  with ``--draft 16``); moq-rs's relay ``moq-lite-06`` (its own protocol: the publisher still speaks
  draft-16 to it); trackmesh would pick ``moqt-20``, so with ``--clients moqrs`` the bench holds
  the node's raw-QUIC ALPNs to ``moqt-16`` (its ``--moq-alpns``, from ``MOQ_BENCH_NODE_ALPNS``; empty: all
  of them). The result's ``clients_versions`` counts the sessions per version (moq-ffi's log).
  Datagram and ACK counts are quinn's packet counters; the largest datagram is not known (null).

Each object's payload starts with its sequence number and its send time (``time.monotonic()``, one
clock for every process of the machine). Over a window of ``--seconds`` after every subscriber has
its SUBSCRIBE_OK (moq-rs: its first frame; the API does not show the SUBSCRIBE_OK), the subscribers
count the objects sent in the window that reached them, and how many of those took
more than 200 ms; an object that never arrives (by the end of the window plus 2 s) counts as late.
The relay's CPU (utime + stime of its process tree, from /proc), its run-queue wait (schedstat:
runnable but not running, the share other processes on its core took), its RSS and the
namespace's UDP receive-buffer drops are read at the window's edges. Results: docs/benchmarks.md.

The track: 30 frames/s, a group per key frame every 2 s, key frames of 40 KB, deltas of 3.5 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived

from trackmesh.transports.moq import codec16
from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.objects import SubgroupHeader, SubgroupStreamParser, encode_object, encode_subgroup_header
from trackmesh.transports.moq.varint import Reader

ROOT = Path(__file__).parents[1]
MOQ_PYTHON = ROOT / ".venv-moq" / "bin" / "python"
MOQRS_SUBSCRIBERS = Path(__file__).with_name("moq_rs_subscribers.py")
NS = (b"bench", b"fanout")
TRACK = b"video"
FPS = 30
GOP = 60  # a key frame (a new group) every 2 s
KEY_SIZE, DELTA_SIZE = 40_000, 3_500
STAMP = struct.Struct(">Qd")  # sequence number, send time
LATE = 0.200
ALPN = ["moqt-16"]

MOQRS_RELAY = """
import asyncio, sys, moq
async def main():
    async with moq.Server(sys.argv[1], tls_generate=["localhost"]) as server:
        print("listening", server.local_addr, flush=True)
        await server.serve()
asyncio.run(main())
"""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CONNECTED = re.compile(r"moq_tokio::client: connected version=(\S+)")


def negotiated_versions(log: str) -> dict[str, int]:
    """How many moq-rs sessions connected with each version, from moq-ffi's log (info level)."""
    versions: dict[str, int] = {}
    for found in _CONNECTED.finditer(_ANSI.sub("", log)):
        versions[found.group(1)] = versions.get(found.group(1), 0) + 1
    return versions


class Session(QuicConnectionProtocol):
    """A draft-16 MoQ session over raw QUIC: the control stream, and subgroup streams received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.control = bytearray()
        self.messages: list[m.ControlMessage] = []
        self.streams: dict[int, SubgroupStreamParser | bytearray | None] = {}  # None: undecodable, ignored
        self.changed = asyncio.Event()
        self.window = (0.0, 0.0)
        self.received = 0  # objects sent in the window that arrived
        self.late = 0  # of them, more than LATE after their send time
        self.seen: set[int] = set()
        self.latencies: list[float] = []
        self.decode_errors = 0
        self.datagrams_in = 0  # QUIC datagrams from the relay (all of them: counted at the window's edges)
        self.bytes_in = 0
        self.largest_datagram = 0

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.datagrams_in += 1
        self.bytes_in += len(data)
        if len(data) > self.largest_datagram:
            self.largest_datagram = len(data)
        super().datagram_received(data, addr)

    def packets_out(self) -> int:
        """QUIC packets this subscriber sent (mostly ACKs): aioquic's next packet number."""
        return int(self._quic._packet_number)

    def send(self, msg: m.ControlMessage) -> None:
        self._quic.send_stream_data(0, codec16.encode_message(msg))
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        if event.stream_id == 0:
            self.control += event.data
            while (split := codec16.split_message(self.control)) is not None:
                kind, payload, used = split
                self.messages.append(codec16.decode_message(kind, payload))
                del self.control[:used]
            self.changed.set()
            return
        now = time.monotonic()
        parser = self.streams.get(event.stream_id, b"")
        if parser is None:
            return
        data: bytes = event.data
        if not isinstance(parser, SubgroupStreamParser):
            buf = bytearray(parser) + data
            try:
                r = Reader(bytes(buf))
                parser = SubgroupStreamParser(r.varint())
            except Exception:  # the type varint is not complete yet
                self.streams[event.stream_id] = buf
                return
            self.streams[event.stream_id] = parser
            data = bytes(buf[r.pos :])
        start, end = self.window
        try:
            objects = parser.feed(data)
        except Exception as exc:
            if os.environ.get("MOQ_BENCH_DEBUG"):
                print("decode error", exc, parser.kind, parser.header, bytes(data[:40]).hex(), file=sys.stderr)
            self.decode_errors += 1
            self.streams[event.stream_id] = None  # ignore the rest of this stream
            return
        for obj in objects:
            seq, sent = STAMP.unpack_from(obj.payload)
            if start <= sent < end:
                self.received += 1
                self.seen.add(seq)
                if now - sent > LATE:
                    self.late += 1
                if len(self.latencies) < 20_000:
                    self.latencies.append(now - sent)
        if event.end_stream:
            del self.streams[event.stream_id]

    async def wait_for(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True

    def reply(self, request_id: int) -> m.ControlMessage | None:
        for msg in self.messages:
            if getattr(msg, "request_id", None) == request_id and not isinstance(msg, m.Subscribe):
                return msg
        return None


def client_config() -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=ALPN, verify_mode=ssl.CERT_NONE, server_name="localhost")


def frame_payload(seq: int, size: int) -> bytes:
    return STAMP.pack(seq, time.monotonic()) + bytes(size - STAMP.size)


async def publish(port: int, sent_path: str) -> None:
    """Announce NS, answer every SUBSCRIBE for TRACK, write the track to every upstream subscription."""
    sent: list[float] = []
    stopped = 0  # group streams the relay stopped (STOP_SENDING) before we ended them
    try:
        async with connect("127.0.0.1", port, configuration=client_config(), create_protocol=Session) as c:
            pub: Session = c  # type: ignore[assignment]
            pub.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 1000}))
            await pub.wait_for(lambda: pub.messages, 10)
            pub.send(m.PublishNamespace(0, NS))
            print("announced", flush=True)
            aliases: dict[int, int] = {}  # upstream SUBSCRIBE request id -> our track alias
            streams: dict[int, int] = {}  # alias -> open subgroup stream
            seq, t0 = 0, time.monotonic()
            while True:
                for msg in pub.messages:
                    if isinstance(msg, m.Subscribe) and msg.request_id not in aliases:
                        alias = aliases[msg.request_id] = len(aliases) + 1
                        ok = m.SubscribeOk(msg.request_id, alias, {m.PARAM_EXPIRES: 0})
                        if msg.name != TRACK:
                            pub.send(m.RequestError(msg.request_id, 0x4, reason=b"no such track"))
                        else:
                            pub.send(ok)
                            print(f"upstream subscribe {msg.request_id} -> alias {alias}", flush=True)
                pub.messages = [x for x in pub.messages if not isinstance(x, m.Subscribe)]
                group, object_id = divmod(seq, GOP)
                payload = frame_payload(seq, KEY_SIZE if object_id == 0 else DELTA_SIZE)
                written = False  # a new subscription starts at the next group: not sent before
                for alias in aliases.values():
                    try:
                        if object_id == 0:
                            if alias in streams:
                                with suppress(ValueError, RuntimeError):  # already stopped by the relay
                                    pub._quic.send_stream_data(streams[alias], b"", end_stream=True)
                            stream = pub._quic.get_next_available_stream_id(is_unidirectional=True)
                            streams[alias] = stream
                            head = encode_subgroup_header(SubgroupHeader(alias, group, 0, 128))
                            pub._quic.send_stream_data(stream, head + encode_object(0, None, payload))
                            written = True
                        elif alias in streams:
                            data = encode_object(object_id, object_id - 1, payload)
                            pub._quic.send_stream_data(streams[alias], data)
                            written = True
                    except (ValueError, RuntimeError):  # the relay stopped the group's stream: wait for the next
                        streams.pop(alias, None)
                        stopped += 1
                if written:
                    sent.append(STAMP.unpack_from(payload)[1])
                pub.transmit()
                seq += 1
                if seq % 15 == 0:  # kept current: closing an aioquic connection can outlast the stop signal
                    Path(sent_path).write_text(json.dumps({"sent": sent, "stopped": stopped}))
                await asyncio.sleep(max(0.0, t0 + seq / FPS - time.monotonic()))
    finally:
        Path(sent_path).write_text(json.dumps({"sent": sent, "stopped": stopped}))


async def subscribe(port: int, count: int, seconds: float) -> None:
    def progress(what: str) -> None:
        print(f"  subscribers: {what} at +{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    async with AsyncExitStack() as stack:
        subs: list[Session] = []
        for _ in range(count):
            opening = stack.enter_async_context(
                connect("127.0.0.1", port, configuration=client_config(), create_protocol=Session)
            )
            try:
                sub = await asyncio.wait_for(opening, 10)
            except TimeoutError:
                continue
            assert isinstance(sub, Session)  # create_protocol=Session (aioquic types connect() with the base)
            sub.send(m.ClientSetup({m.SETUP_MAX_REQUEST_ID: 100}))
            subs.append(sub)
        progress(f"{len(subs)} of {count} connected")
        await asyncio.gather(*(s.wait_for(lambda s=s: s.messages, 10) for s in subs))
        progress(f"{sum(bool(s.messages) for s in subs)} set up")
        for sub in subs:
            sub.send(m.Subscribe(0, NS, TRACK, {m.PARAM_FORWARD: 1}))
        await asyncio.gather(*(s.wait_for(lambda s=s: s.reply(0) is not None, 15) for s in subs))
        replies = [s.reply(0) for s in subs]
        progress(f"{sum(r is not None for r in replies)} answered")
        ok = sum(isinstance(r, m.SubscribeOk) for r in replies)
        errors = {repr(r) for r in replies if not isinstance(r, m.SubscribeOk)}
        start = time.monotonic() + 1.0
        end = start + seconds
        for sub in subs:
            sub.window = (start, end)
        print(json.dumps({"window": [start, end]}), flush=True)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        counts0 = [(s.datagrams_in, s.bytes_in, s.packets_out()) for s in subs]
        await asyncio.sleep(end - time.monotonic())
        counts = [(s.datagrams_in, s.bytes_in, s.packets_out()) for s in subs]
        cpu = time.process_time() - cpu0
        packets = [sum(c[i] - c0[i] for c, c0 in zip(counts, counts0, strict=True)) for i in range(3)]
        await asyncio.sleep(2.0)  # the stragglers
        latencies = sorted(x for s in subs for x in s.latencies)
        pct = {p: latencies[int(p / 100 * (len(latencies) - 1))] if latencies else None for p in (50, 99)}
        result = {
            "subscribed": ok,
            "errors": sorted(errors)[:3],
            "window": [start, end],
            "received": sum(s.received for s in subs),
            "late": sum(s.late for s in subs),
            "seqs": sorted(set().union(*(s.seen for s in subs))) if subs else [],
            "p50_ms": None if pct[50] is None else round(pct[50] * 1000, 1),
            "p99_ms": None if pct[99] is None else round(pct[99] * 1000, 1),
            "client_cpu_share": round(cpu / seconds, 3),
            "decode_errors": sum(s.decode_errors for s in subs),
            "datagrams_in": packets[0],
            "bytes_in": packets[1],
            "packets_out": packets[2],
            "largest_datagram": max((s.largest_datagram for s in subs), default=0),
        }
        # Report before closing: aioquic's close waits for the peer, which a backlogged relay may not
        # answer for long. The process ends here, its sessions with it.
        print(json.dumps(result), flush=True)
        os._exit(0)


def ratio(a: int | None, b: int | None, digits: int) -> float | None:
    """a / b rounded; None when either is unknown (moq-rs subscribers: quinn's counters) or b is 0."""
    return round(a / b, digits) if a is not None and b else None


def per_object(cpu: float, objects: int) -> float | None:
    """CPU microseconds per delivered object."""
    return round(1e6 * cpu / objects, 1) if objects else None


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[int]:
    """pid and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run_delay(pid: int) -> float:
    """Seconds the process tree's threads waited on a run queue, runnable but not running (schedstat)."""
    total = 0
    for p in tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[1])
        except OSError:
            pass
    return total / 1e9


def rss_kib(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def udp_drops() -> int:
    """UDP datagrams this network namespace dropped for a full socket receive buffer (RcvbufErrors)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def relay_socket_drops(port: int) -> int:
    """Datagrams dropped at the relay's own UDP socket (the drops column of /proc/net/udp)."""
    needle = f":{port:04X}"
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            for line in f:
                fields = line.split()
                if len(fields) > 12 and fields[1].endswith(needle):
                    total += int(fields[-1])
    return total


def udp_listening(port: int) -> bool:
    needle = f":{port:04X} "
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        with open(name) as f:
            if any(needle in line.split("\n")[0][:40] for line in f):
                return True
    return False


def start_relay(kind: str, port: int, workdir: str, alpns: str = "") -> subprocess.Popen[bytes]:
    """The relay on core 1. ``alpns``: trackmesh answers raw QUIC with these only ("": all it speaks)."""
    pin = ["taskset", "-c", "1"]
    log = open(f"{workdir}/{kind}.log", "wb")  # noqa: SIM115 - closed with the process
    if kind == "trackmesh":
        env = dict(os.environ, TRACKMESH_CONNECTOR_DB=f"sqlite:///{workdir}/c.db")
        if os.environ.get("MOQ_BENCH_NODE_PYTHONPATH"):  # the relay alone on another build (e.g. a compiled aioquic)
            paths = (os.environ["MOQ_BENCH_NODE_PYTHONPATH"], env.get("PYTHONPATH"))
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        cmd = [*pin, sys.executable, "-m", "trackmesh.cli.main", "standalone", "--http-port"]
        cmd += [str(free_port(socket.SOCK_STREAM)), "--moq-port", str(port), "--moq-anonymous"]
        cmd += ["--moq-alpns", alpns] if alpns else []
        cmd += ["--log-level", "warning", *os.environ.get("MOQ_BENCH_NODE_ARGS", "").split()]
        if os.environ.get("MOQ_BENCH_PYSPY"):  # a flame graph of the node: py-spy samples it (its own CPU counts too)
            spy = str(Path(sys.executable).parent / "py-spy")
            out = f"{os.environ['MOQ_BENCH_PYSPY']}-{port}.txt"
            cmd = [*pin, spy, "record", "-r", "50", "-f", "raw", "-o", out, "--", *cmd[len(pin) :]]
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if kind == "aiomoqt":
        cert, key = f"{workdir}/cert.pem", f"{workdir}/key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
                *("-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost"),
            ],
            check=True,
            capture_output=True,
        )
        relay = str(MOQ_PYTHON.parent / "moq-interop-relay")
        cmd = [*pin, relay, "--bind", "127.0.0.1", "--port", str(port), "--quic", "--draft", "16"]
        return subprocess.Popen([*cmd, "--cert", cert, "--key", key], stdout=log, stderr=subprocess.STDOUT)
    if kind == "moqrs":
        cmd = [*pin, str(MOQ_PYTHON), "-c", MOQRS_RELAY, f"127.0.0.1:{port}"]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    raise ValueError(kind)


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def subscribers_command(clients: str, port: int, count: int, seconds: float) -> list[str]:
    """The subscribers' process, pinned to core 0: this file's aioquic ones, or moq-rs's."""
    pin = ["taskset", "-c", "0"]
    if clients == "aioquic":
        return [*pin, sys.executable, __file__, "_subs", str(port), str(count), str(seconds)]
    if clients == "moqrs":
        url = f"moqt://127.0.0.1:{port}"
        return [*pin, str(MOQ_PYTHON), str(MOQRS_SUBSCRIBERS), url, str(count), str(seconds)]
    raise ValueError(clients)


def window_line(line: str) -> tuple[float, float]:
    """The subscribers' first line: their window, or why they have none (RuntimeError)."""
    if not line:
        raise RuntimeError("the subscribers' process ended before its window")
    first = json.loads(line)
    if "error" in first:
        raise RuntimeError(first["error"])
    start, end = first["window"]
    return float(start), float(end)


def run_one(kind: str, count: int, seconds: float, workdir: str, clients: str = "aioquic") -> dict[str, Any]:
    port = free_port(socket.SOCK_DGRAM)
    # moq-rs offers every draft and takes the relay's pick: trackmesh is held to the publisher's draft-16
    # (MOQ_BENCH_NODE_ALPNS: other raw-QUIC ALPNs, comma-separated; empty: all the node speaks).
    alpns = os.environ.get("MOQ_BENCH_NODE_ALPNS", "moqt-16") if clients == "moqrs" else ""
    relay = start_relay(kind, port, workdir, alpns)
    me = [*("taskset", "-c", "0"), sys.executable, __file__]
    subs_log = f"{workdir}/subscribers-{clients}-{kind}-{count}.log"
    sent_path = f"{workdir}/sent-{kind}-{count}.json"
    pub = subs = None
    try:
        deadline = time.monotonic() + 30
        while not udp_listening(port):
            if time.monotonic() > deadline or relay.poll() is not None:
                raise RuntimeError(f"{kind} relay did not listen: see {workdir}/{kind}.log")
            time.sleep(0.2)
        time.sleep(1.0)
        rss_idle = rss_kib(relay.pid)
        pub = subprocess.Popen([*me, "_pub", str(port), sent_path], stdout=subprocess.PIPE, text=True)
        assert pub.stdout is not None
        print(f"  publisher: {pub.stdout.readline().strip()}", flush=True)
        time.sleep(1.0)
        cmd = subscribers_command(clients, port, count, seconds)
        if clients == "moqrs":  # moq-rs's log (each session's version, parsed below) and progress: to a file
            with open(subs_log, "wb") as log:
                subs = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        else:
            subs = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert subs.stdout is not None
        try:
            start, end = window_line(subs.stdout.readline())
        except RuntimeError as exc:
            if clients == "moqrs":
                found = negotiated_versions(Path(subs_log).read_text(errors="replace"))
                raise RuntimeError(f"{exc} (versions negotiated: {found or 'none'}; log {subs_log})") from None
            raise
        time.sleep(max(0.0, start - time.monotonic()))
        cpu0, drops0 = cpu_seconds(relay.pid), udp_drops()
        waits0 = run_delay(relay.pid), run_delay(subs.pid)
        time.sleep(max(0.0, end - time.monotonic()))
        cpu, drops = cpu_seconds(relay.pid) - cpu0, udp_drops() - drops0
        waits = run_delay(relay.pid) - waits0[0], run_delay(subs.pid) - waits0[1]
        rss = rss_kib(relay.pid)
        load = os.getloadavg()
        result = json.loads(subs.stdout.read())
        subs.wait(30)
        stop(pub)
        published = json.loads(Path(sent_path).read_text())
        sent = sum(start <= t < end for t in published["sent"])
        expected = sent * count
        seqs = result.pop("seqs")
        versions = negotiated_versions(Path(subs_log).read_text(errors="replace")) if clients == "moqrs" else None
        late = result["late"] + (expected - result["received"])
        return {
            "relay": kind,
            "clients": clients,
            "clients_versions": versions,  # moq-rs: per version, the sessions that connected with it
            "subscribers": count,
            "subscribed": result["subscribed"],
            "errors": result["errors"],
            "sent": sent,
            "seqs_seen": len(seqs),
            "seq_range": [seqs[0], seqs[-1]] if seqs else None,
            "seq_gaps": [[a + 1, b - 1] for a, b in itertools.pairwise(seqs) if b > a + 1][:5],
            "streams_stopped_upstream": published["stopped"],
            "decode_errors": result["decode_errors"],
            "expected": expected,
            "delivered": result["received"],
            "late_pct": round(100 * late / expected, 2) if expected else None,
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "relay_cpu_share": round(cpu / seconds, 3),
            "relay_runqueue_wait_share": round(waits[0] / seconds, 3),
            "relay_cpu_us_per_object": per_object(cpu, result["received"]),
            # What the subscribers' side of the wire saw in the window: the relay's datagrams to them
            # (and their mean size), and the packets they sent back (ACKs, nearly all).
            "datagrams_per_object": ratio(result["datagrams_in"], result["received"], 2),
            "datagram_mean_bytes": ratio(result["bytes_in"], result["datagrams_in"], 0),
            "acks_per_object": ratio(result["packets_out"], result["received"], 2),
            "datagram_max_bytes": result["largest_datagram"],
            "relay_rss_kib": rss,
            "relay_rss_idle_kib": rss_idle,
            "client_cpu_share": result["client_cpu_share"],
            "client_cpu_us_per_object": per_object(result["client_cpu_share"] * seconds, result["received"]),
            "client_threads_cpu_share": result.get("client_threads_cpu_share"),  # moq-rs: by thread name
            "client_runqueue_wait_share": round(waits[1] / seconds, 3),
            "udp_rcvbuf_drops": drops,
            "udp_drops_at_relay_socket": relay_socket_drops(port),
            "loadavg_1m": round(load[0], 2),
        }
    finally:
        for proc in (subs, pub):
            if proc is not None:
                stop(proc)
        stop(relay)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_pub":
        with suppress(KeyboardInterrupt):
            asyncio.run(publish(int(sys.argv[2]), sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_subs":
        asyncio.run(subscribe(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("subscribers", type=int, nargs="+")
    parser.add_argument("--relays", default="trackmesh,aiomoqt,moqrs")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--clients",
        choices=["aioquic", "moqrs"],
        default="aioquic",
        help="the subscribers: this file's aioquic sessions, or moq-rs sessions (bench/moq_rs_subscribers.py)",
    )
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="moq-fanout-e2e-")
    print(f"logs in {workdir}", flush=True)
    for kind in args.relays.split(","):
        for count in args.subscribers:
            print(f"{kind}, {count} {args.clients} subscribers", flush=True)
            try:
                print(json.dumps(run_one(kind, count, args.seconds, workdir, args.clients)), flush=True)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                print(json.dumps({"relay": kind, "clients": args.clients, "subscribers": count, "error": error}))


if __name__ == "__main__":
    main()
