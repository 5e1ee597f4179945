"""Interop of our sans-IO data channels (SCTP over DTLS, RFC 8261; DCEP, RFC 8832) with Chromium.

The Python side is our own stack: ICE-lite, DTLS and a bare :class:`WebRtcPeer` (no room joined), with a
:class:`DataChannelManager` fed from the peer's ``ApplicationData`` events as ``transports.sdk.session`` is, driven by
a small asyncio UDP driver on 127.0.0.1 in a thread of its own (Playwright's sync API owns the test thread).
The page uses a plain ``RTCPeerConnection`` with a data-channel-only offer; offer and answer are exchanged
through ``page.evaluate``. Our side echoes every message on the channel it came from. Runs only inside the
private network namespace (scripts/in-netns.sh).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import pytest

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.worker import MediaWorker
from trackmesh.errors import LocalProtocolError
from trackmesh.transports.webrtc.answer import AnswerPolicy, LocalParams, answer_offer
from trackmesh.transports.webrtc.demux import PacketKind, classify
from trackmesh.transports.webrtc.dtls.certificate import DtlsCertificate
from trackmesh.transports.webrtc.events import ApplicationData, Connected, Disconnected, Outbox
from trackmesh.transports.webrtc.ice.agent import IceLiteAgent, generate_credentials
from trackmesh.transports.webrtc.peer import WebRtcPeer
from trackmesh.transports.webrtc.sctp.association import AssociationClosed, SctpAssociation
from trackmesh.transports.webrtc.sctp.datachannel import ChannelClosed, ChannelOpened, DataChannelManager, Message
from trackmesh.transports.webrtc.sctp.packet import DataChunk, build_packet, parse_packet
from trackmesh.transports.whip_whep.session import default_remote_names

T = TypeVar("T")

# --- the Python peer -------------------------------------------------------------------------------------------


class ChunkCutter:
    """Removes the DATA chunks of every ``every``-th message (by first fragment) of ``stream_id`` from SCTP
    packets, in every (re)transmission, and re-checksums what is left: a deterministic loss that forces the
    sender to abandon those messages (RFC 3758) instead of repairing them."""

    def __init__(self, stream_id: int, every: int) -> None:
        self.stream_id = stream_id
        self.every = every
        self.doomed: set[int] = set()  # TSNs
        self.seen: set[int] = set()
        self.messages_seen = 0
        self.cut: list[int] = []  # indices of the messages cut
        self.chunks_cut = 0
        self._cutting = False  # the message being cut (continuation fragments follow its first one)

    def filter(self, data: bytes) -> bytes:
        pkt = parse_packet(data)
        keep: list[Any] = []
        for c in pkt.chunks:
            if isinstance(c, DataChunk) and c.stream_id == self.stream_id:
                if c.tsn not in self.seen:
                    self.seen.add(c.tsn)
                    if c.beginning:
                        self.messages_seen += 1
                        self._cutting = self.messages_seen % self.every == 0
                        if self._cutting:  # our test messages start with their index: "17:xxxx"
                            self.cut.append(int(c.user_data.split(b":", 1)[0]))
                    if self._cutting:
                        self.doomed.add(c.tsn)
                if c.tsn in self.doomed:
                    self.chunks_cut += 1
                    continue
            keep.append(c)
        if len(keep) == len(pkt.chunks):
            return data
        if not keep:
            return b""
        return build_packet(pkt.source_port, pkt.destination_port, pkt.verification_tag, tuple(keep))


class PyPeer(asyncio.DatagramProtocol):
    """Our side of one connection: WebRtcPeer + DataChannelManager behind a UDP socket on 127.0.0.1.

    All state is touched only on the driver's event loop thread; the test thread uses :meth:`call`.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        # As runtime/worker.py does: kernel buffers that absorb Chrome's bursts while Python is busy.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        self.port: int = self.sock.getsockname()[1]
        self.cert = DtlsCertificate.generate(datetime.now(UTC) - timedelta(days=1))
        self.creds = generate_credentials()
        self.outbox: Outbox = deque()
        self.peer: WebRtcPeer | None = None
        self.dc: DataChannelManager | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.echo = True
        self.log: list[Any] = []  # every DataChannelManager / peer event, in order
        self.opened: dict[int, ChannelOpened] = {}
        self.closed: list[int] = []
        self.received: dict[int, list[tuple[int, bool]]] = {}  # channel -> [(size, is_binary)]
        self.texts: dict[int, list[str]] = {}  # channel -> the string messages
        self.errors: list[str] = []
        #: Deterministic loss on SCTP packets from / to Chrome (see ChunkCutter); None = none.
        self.cut_in: ChunkCutter | None = None
        self.cut_out: ChunkCutter | None = None
        self._thread = threading.Thread(target=self._run, name="dc-driver", daemon=True)
        self._stopping = False
        self._thread.start()

    @property
    def mgr(self) -> DataChannelManager:
        assert self.dc is not None
        return self.dc

    def send(self, channel_id: int, data: bytes | str) -> None:
        """Send on one of our channels at the driver's clock; on the loop thread (inside :meth:`call`)."""
        self.mgr.send(time.monotonic(), channel_id, data)

    # -- test-thread API ---------------------------------------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the test thread
                fut.set_exception(exc)
            self._flush()

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def answer(self, offer: str) -> str:
        def make() -> str:
            params = LocalParams(
                self.creds.ufrag, self.creds.pwd, self.cert.fingerprint_sha256(), "127.0.0.1", self.port
            )
            answer = answer_offer(offer, params, AnswerPolicy.sdk())
            worker = MediaWorker(1, 0, "secret", LocalRegistry(), LocalChannelHub())
            now = time.monotonic()
            self.peer = WebRtcPeer(
                now, worker.create_endpoint(), answer, IceLiteAgent(local=self.creds), self.cert, self.outbox,
                wallclock=time.time(), remote_names=default_remote_names,
            )  # fmt: skip
            data = next(m for m in answer.media if m.kind == "application")
            assoc = SctpAssociation(cookie_key=os.urandom(32), remote_port=data.remote_sctp_port or 5000)
            # DTLS server: we answer a=setup:passive. Chrome's a=max-message-size bounds what we send.
            self.dc = DataChannelManager(assoc, dtls_role="server", max_message_size=data.remote_max_message_size)
            return answer.sdp

        return self.call(make)

    def wait(self, predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what or predicate}; log tail: {self.log[-10:]}")

    def stop(self) -> None:
        def close() -> None:
            self._stopping = True
            if self.peer is not None:
                self.peer.close(time.monotonic(), "test over")

        try:
            self.call(close)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def _sctp_in(self, now: float, data: bytes) -> None:
        assert self.dc is not None
        if self.cut_in is not None:
            data = self.cut_in.filter(data)
        if data:
            self.dc.handle_data(now, data)

    # -- driver (event loop thread) ----------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.loop.create_datagram_endpoint(lambda: self, sock=self.sock))
        timers = self.loop.create_task(self._timers())
        self.loop.run_forever()
        timers.cancel()
        if self.transport is not None:
            self.transport.close()
        self.loop.run_until_complete(asyncio.gather(timers, return_exceptions=True))
        self.loop.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.peer is None:
            return
        self.peer.handle_datagram(time.monotonic(), data, addr, classify(data[0]) if data else PacketKind.UNKNOWN)
        self._flush()

    async def _timers(self) -> None:
        while True:
            now = time.monotonic()
            deadlines = []
            if self.peer is not None:
                deadlines.append(self.peer.next_deadline())
            if self.dc is not None:
                deadlines.append(self.dc.next_deadline())
            due = min((d for d in deadlines if d is not None), default=now + 0.05)
            if due <= now:
                if self.peer is not None:
                    self.peer.handle_timeout(now)
                if self.dc is not None and (d := self.dc.next_deadline()) is not None and d <= now:
                    self.dc.handle_timeout(now)
                self._flush()
            await asyncio.sleep(max(0.0, min(due - now, 0.05)))

    def _flush(self) -> None:
        """Act on events and send everything pending, until nothing changes."""
        peer, dc = self.peer, self.dc
        if peer is None or dc is None:
            return
        now = time.monotonic()
        for _ in range(1000):
            progressed = False
            while (pev := peer.poll_event()) is not None:
                progressed = True
                self.log.append(pev)
                if isinstance(pev, ApplicationData):
                    self._sctp_in(now, pev.data)
                elif isinstance(pev, Connected):
                    dc.connect(now)  # as the SDK session does: we INIT too (a collision Chrome resolves with us)
                elif isinstance(pev, Disconnected) and not self._stopping:
                    self.errors.append(f"peer disconnected: {pev.reason}")
            while (ev := dc.poll_event()) is not None:
                progressed = True
                self._on_event(now, ev)
            while (pkt := dc.poll_transmit(now)) is not None:
                progressed = True
                if self.cut_out is not None:
                    pkt = self.cut_out.filter(pkt)
                if pkt:
                    peer.send_application_data(pkt)
            while self.outbox:
                progressed = True
                data, addr = self.outbox.popleft()
                assert self.transport is not None
                self.transport.sendto(data, addr)
            if not progressed:
                return

    def _on_event(self, now: float, ev: Any) -> None:
        assert self.dc is not None
        if isinstance(ev, Message):
            self.log.append(("message", ev.channel_id, len(ev.data), ev.is_binary))
            self.received.setdefault(ev.channel_id, []).append((len(ev.data), ev.is_binary))
            if not ev.is_binary:
                self.texts.setdefault(ev.channel_id, []).append(ev.text)
            if self.echo and ev.channel_id in self.dc.channels:
                self.dc.send(now, ev.channel_id, ev.data if ev.is_binary else ev.text)
            return
        self.log.append(ev)
        if isinstance(ev, ChannelOpened):
            self.opened[ev.channel_id] = ev
        elif isinstance(ev, ChannelClosed):
            self.closed.append(ev.channel_id)
        elif isinstance(ev, AssociationClosed):
            self.errors.append(f"association closed: {ev.reason}")


# --- the page ----------------------------------------------------------------------------------------------------

PAGE_JS = r"""
(() => {
  const t = { chans: {}, remote: [], log: [] };
  t.track = (name, dc) => {
    const st = { dc, msgs: [], opened: dc.readyState === "open", closed: false, errors: [] };
    dc.binaryType = "arraybuffer";
    dc.onopen = () => { st.opened = true; };
    dc.onclose = () => { st.closed = true; };
    dc.onerror = (e) => { st.errors.push(String(e.error ? e.error.message : e)); };
    dc.onmessage = (e) => { st.msgs.push(e.data); };
    t.chans[name] = st;
    return st;
  };
  t.filterSdp = (sdp) => sdp.split(/\r?\n/).filter((l) =>
    !l.startsWith("a=candidate:") || l.split(" ")[4] === "127.0.0.1").join("\r\n");
  t.until = (cond, ms, what) => new Promise((resolve, reject) => {
    const start = performance.now();
    const tick = () => {
      if (cond()) return resolve(performance.now() - start);
      if (performance.now() - start > ms) return reject(new Error("timeout: " + what));
      setTimeout(tick, 5);
    };
    tick();
  });
  // Deterministic payloads: the page checks every echoed byte.
  t.bytes = (n, seed) => {
    const b = new Uint8Array(n); for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 255; return b; };
  t.text = (n, seed) => { let s = ""; const a = "abcdefghijklmnopqrstuvwxyz0123456789"; let i = 0;
    while (s.length < n) { s += a[(i * 7 + seed) % a.length]; i++; } return s; };
  t.sameBytes = (buf, n, seed) => {
    if (!(buf instanceof ArrayBuffer) || buf.byteLength !== n) return false;
    const b = new Uint8Array(buf); for (let i = 0; i < n; i++) if (b[i] !== ((i * 31 + seed) & 255)) return false;
    return true;
  };
  t.info = (name) => { const st = t.chans[name]; const dc = st.dc;
    return { label: dc.label, protocol: dc.protocol, id: dc.id, ordered: dc.ordered, negotiated: dc.negotiated,
             maxRetransmits: dc.maxRetransmits, maxPacketLifeTime: dc.maxPacketLifeTime, readyState: dc.readyState,
             opened: st.opened, closed: st.closed, errors: st.errors, received: st.msgs.length }; };
  window.T = t;
})();
"""


def _js(page: Any, body: str, arg: Any = None) -> Any:
    return page.evaluate(f"async (arg) => {{ const t = window.T; {body} }}", arg)


def connect(page: Any, py: PyPeer) -> dict[str, Any]:
    """Offer from the page (channels created before the offer), answer from ``py``; wait for all to open."""
    offer = _js(
        page,
        """
        const pc = new RTCPeerConnection();
        t.pc = pc;
        pc.ondatachannel = (e) => { t.remote.push({ label: e.channel.label, protocol: e.channel.protocol,
            id: e.channel.id, ordered: e.channel.ordered, readyState: e.channel.readyState });
            t.track("remote:" + e.channel.label, e.channel); };
        t.track("rel", pc.createDataChannel("rel", { protocol: "proto-rel" }));
        t.track("unord", pc.createDataChannel("unord", { ordered: false, protocol: "proto-unord" }));
        t.track("rexmit0", pc.createDataChannel("rexmit0", { ordered: false, maxRetransmits: 0 }));
        t.track("life", pc.createDataChannel("life", { maxPacketLifeTime: 500 }));
        t.track("neg", pc.createDataChannel("neg", { negotiated: true, id: 10 }));
        t.track("utf", pc.createDataChannel("données-🔑", { protocol: "χ-proto" }));
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise((r) => { if (pc.iceGatheringState === "complete") r();
          pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
          setTimeout(r, 3000); });
        return t.filterSdp(pc.localDescription.sdp);
        """,
    )
    assert "a=candidate:" in offer and "webrtc-datachannel" in offer, offer
    answer = py.answer(offer)
    py.call(lambda: py.mgr.open("neg-py", negotiated_id=10))
    return {
        "offer": offer,
        "answer": answer,
        **_js(
            page,
            """
            await t.pc.setRemoteDescription({ type: "answer", sdp: arg });
            const ms = await t.until(() => ["rel", "unord", "rexmit0", "life", "neg", "utf"].every(
                (n) => t.chans[n].opened), 15000, "channels open");
            return { openMs: ms, maxMessageSize: t.pc.sctp ? t.pc.sctp.maxMessageSize : null };
            """,
            answer,
        ),
    }


@pytest.fixture
def py() -> Any:
    peer = PyPeer()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def dc_page(page: Any) -> Any:
    page.evaluate(PAGE_JS)
    return page


ECHO_JS = r"""
t.expected = (kind, n, seed) => kind === "b" ? null : t.text(n, seed);
t.echo = async (name, msgs, reliable, ms) => {
  // msgs: [[kind "s"|"b", size, seed], ...]; returns what came back and whether it matches.
  const st = t.chans[name]; const before = st.msgs.length;
  const want = msgs.map(([k, n, s]) => ({ k, n, s, text: k === "s" ? t.text(n, s) : null }));
  const t0 = performance.now();
  for (const w of want) st.dc.send(w.k === "b" ? t.bytes(w.n, w.s) : w.text);
  let timedOut = false;
  try { await t.until(() => st.msgs.length - before >= msgs.length, ms, name + " echoes"); }
  catch (e) { timedOut = true; if (reliable) throw e; }
  const elapsed = performance.now() - t0;
  const got = st.msgs.slice(before);
  const match = (d, w) => w.k === "b" ? t.sameBytes(d, w.n, w.s) : d === w.text;
  const inOrder = got.length === want.length && got.every((d, i) => match(d, want[i]));
  const used = new Array(want.length).fill(false);
  let allKnown = true;
  for (const d of got) {
    const i = want.findIndex((w, j) => !used[j] && match(d, w));
    if (i < 0) allKnown = false; else used[i] = true;
  }
  return { sent: want.length, got: got.length, inOrder, allKnown, ms: elapsed, timedOut,
           bytes: want.reduce((a, w) => a + w.n, 0) };
};
"""


def mixed(count: int, seed: int = 1) -> list[list[Any]]:
    """``count`` small messages, alternating string/binary, 1..1100 bytes."""
    return [["s" if i % 2 else "b", 1 + (i * 37) % 1100, seed + i] for i in range(count)]


def echo(page: Any, name: str, msgs: list[list[Any]], *, reliable: bool = True, ms: int = 20000) -> dict[str, Any]:
    out: dict[str, Any] = _js(page, "return await t.echo(arg[0], arg[1], arg[2], arg[3]);", [name, msgs, reliable, ms])
    return out


def py_text(n: int, seed: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[(i * 7 + seed) % len(alphabet)] for i in range(n))


def py_bytes(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 255 for i in range(n))


def channel_id(py: PyPeer, label: str) -> int:
    return int(py.call(lambda: next(cid for cid, ev in py.opened.items() if ev.label == label)))


def announce(page: Any, py: PyPeer, label: str, protocol: str = "") -> int:
    cid = py.call(lambda: py.mgr.open(label, protocol=protocol))
    _js(page, 'await t.until(() => t.chans["remote:" + arg] && t.chans["remote:" + arg].opened, 10000, arg);', label)
    py.wait(lambda: cid in py.opened, what=f"DCEP ACK for {label}")
    return cid


@pytest.fixture
def ready(dc_page: Any, py: PyPeer) -> tuple[Any, PyPeer, dict[str, Any]]:
    info = connect(dc_page, py)
    dc_page.evaluate(f"() => {{ const t = window.T; {ECHO_JS} }}")
    return dc_page, py, info


def test_announced_and_negotiated_channels_echo_with_each_reliability(ready: Any) -> None:
    page, py, info = ready
    assert "a=max-message-size:262144" in info["answer"]
    assert info["maxMessageSize"] == 262144, info  # Chrome takes our a=max-message-size
    # DCEP OPEN from the page (RFC 8832 s5.1): label, protocol and reliability seen on our side.
    py.wait(lambda: {ev.label for ev in py.opened.values()} >= {"rel", "unord", "rexmit0", "life", "neg-py"})
    # UTF-8 label and protocol (RFC 8832 s5.1) come through unchanged.
    assert ("données-🔑", "χ-proto") in py.call(lambda: [(e.label, e.protocol) for e in py.opened.values()])
    chans = py.call(lambda: {ch.label: ch for ch in py.mgr.channels.values()})
    assert (chans["rel"].protocol, chans["rel"].ordered, chans["rel"].negotiated) == ("proto-rel", True, False)
    assert (chans["unord"].protocol, chans["unord"].ordered) == ("proto-unord", False)
    assert (chans["rexmit0"].ordered, chans["rexmit0"].max_retransmits) == (False, 0)
    assert (chans["life"].ordered, chans["life"].max_packet_life_time, chans["life"].max_retransmits) == (
        True, 500, None,
    )  # fmt: skip
    # RFC 8832 s6: the DTLS client (Chrome) uses even stream ids, we (DTLS server) odd ones.
    assert all(cid % 2 == 0 for cid, ch in py.mgr.channels.items() if not ch.negotiated)
    assert chans["neg-py"].channel_id == 10 and chans["neg-py"].negotiated

    # A channel we announce reaches the page's ondatachannel with its label and protocol.
    cid = announce(page, py, "from-py", "p2")
    assert cid % 2 == 1
    utf = announce(page, py, "ответ-✓", "ω")
    remote = _js(page, "return t.remote;")
    assert [(r["label"], r["protocol"], r["id"]) for r in remote] == [("from-py", "p2", cid), ("ответ-✓", "ω", utf)]

    results = {
        "rel": echo(page, "rel", mixed(200)),
        "neg": echo(page, "neg", mixed(200, 7)),
        "remote:from-py": echo(page, "remote:from-py", mixed(100, 9)),
        "unord": echo(page, "unord", mixed(200, 3)),
        "life": echo(page, "life", mixed(200, 5), reliable=False, ms=5000),
        "rexmit0": echo(page, "rexmit0", mixed(200, 11), reliable=False, ms=5000),
    }
    print("echo results:", results)
    for name in ("rel", "neg", "remote:from-py"):  # reliable ordered: every message, in order
        assert results[name]["inOrder"], (name, results[name])
    assert results["unord"]["got"] == 200 and results["unord"]["allKnown"], results["unord"]
    for name in ("life", "rexmit0"):  # partially reliable: whatever arrives is intact and was sent once
        assert results[name]["allKnown"] and 0 < results[name]["got"] <= 200, (name, results[name])
    assert not py.errors

    # Empty messages (RFC 8831 s6.6): Chrome sends PPID 56/57; we deliver b"" and echo with 56/57 too.
    empty = _js(
        page,
        """
        const st = t.chans.rel; const before = st.msgs.length;
        st.dc.send(""); st.dc.send(new ArrayBuffer(0)); st.dc.send("after");
        await t.until(() => st.msgs.length - before >= 3, 5000, "empty echoes");
        return st.msgs.slice(before).map((d) => typeof d === "string" ? ["s", d] : ["b", d.byteLength]);
        """,
    )
    assert empty == [["s", ""], ["b", 0], ["s", "after"]]
    rel = channel_id(py, "rel")
    assert py.call(lambda: py.received[rel][-3:]) == [(0, False), (0, True), (5, False)]

    # 50 more channels at once (one DCEP OPEN each, an empty and a 1000-byte label among them), one message each.
    before = py.call(lambda: len(py.opened))
    ok = _js(
        page,
        """const names = [];
        for (let i = 0; i < 50; i++) {
          const n = "many" + i; names.push(n);
          t.track(n, t.pc.createDataChannel(i === 0 ? "" : i === 1 ? "L".repeat(1000) : n));
        }
        await t.until(() => names.every((n) => t.chans[n].opened), 10000, "50 channels open");
        for (const n of names) t.chans[n].dc.send("hello " + n);
        await t.until(() => names.every((n) => t.chans[n].msgs.length >= 1), 10000, "50 echoes");
        return names.every((n) => t.chans[n].msgs[0] === "hello " + n);""",
    )
    assert ok
    labels = py.call(lambda: [e.label for e in py.opened.values()])
    assert len(labels) == before + 50 and "" in labels and "L" * 1000 in labels


def test_messages_larger_than_one_packet_both_directions(ready: Any) -> None:
    page, py, _ = ready
    timings: dict[str, float] = {}
    for size in (16 * 1024, 64 * 1024, 256 * 1024):
        for kind in ("s", "b"):
            r = echo(page, "rel", [[kind, size, size % 251]], ms=60000)
            assert r["inOrder"], (kind, size, r)
            timings[f"echo {kind} {size // 1024} KB"] = round(r["ms"])
    # Chrome holds the page to our a=max-message-size:262144 (RFC 8841 s6.1): one byte more is refused locally.
    refused = _js(
        page, "try { t.chans.rel.dc.send(new Uint8Array(262145)); return null; } catch (e) { return e.name; }"
    )
    assert refused == "TypeError"
    # ... and we hold ourselves to Chrome's a=max-message-size:262144.
    assert py.mgr.max_message_size == 262144
    rel = channel_id(py, "rel")
    with pytest.raises(LocalProtocolError, match="max-message-size"):
        py.call(lambda: py.send(rel, bytes(262145)))
    # Unordered reliable large messages are reassembled too (RFC 4960 s6.9, U bit on every fragment).
    r = echo(page, "unord", [["b", 64 * 1024, 3], ["s", 64 * 1024, 4]], ms=60000)
    assert r["got"] == 2 and r["allKnown"], r

    # Our side sends 256 KB messages the page did not ask for, on a channel we announced.
    cid = announce(page, py, "bulk")
    py.echo = False
    t0 = time.monotonic()
    py.call(lambda: py.send(cid, py_bytes(256 * 1024, 5)))
    py.call(lambda: py.send(cid, py_text(256 * 1024, 6)))
    ok = _js(
        page,
        """
        const st = t.chans["remote:bulk"];
        await t.until(() => st.msgs.length >= 2, 60000, "bulk from python");
        return [t.sameBytes(st.msgs[0], 262144, 5), st.msgs[1] === t.text(262144, 6)];
        """,
    )
    timings["python -> page 2 x 256 KB"] = round((time.monotonic() - t0) * 1000)
    assert ok == [True, True]
    stats = py.call(lambda: py.mgr.association.stats)
    print("large message timings (ms):", timings, "sctp stats:", stats)
    assert not py.errors


def test_clean_close_from_either_side_and_stream_reuse(ready: Any) -> None:
    page, py, _ = ready
    ours = announce(page, py, "from-py")
    rel = channel_id(py, "rel")

    # The page closes an announced channel: we see the incoming reset, answer with ours (RFC 8831 s6.7).
    _js(page, 't.chans.rel.dc.close(); await t.until(() => t.chans.rel.closed, 10000, "rel onclose");')
    py.wait(lambda: rel in py.closed, what="ChannelClosed for rel")
    assert py.call(lambda: rel not in py.mgr.channels)
    # A new announced channel from the page; Chrome picks the lowest free even id, i.e. the one just freed.
    _js(
        page,
        't.track("rel2", t.pc.createDataChannel("rel2")); await t.until(() => t.chans.rel2.opened, 10000, "rel2");',
    )
    py.wait(lambda: any(ev.label == "rel2" for ev in py.opened.values()))
    rel2 = channel_id(py, "rel2")
    reused = rel2 == rel
    assert echo(page, "rel2", mixed(50, 21))["inOrder"]

    # Negotiated channel: the page closes id 10, both sides then open id 10 again.
    _js(page, 't.chans.neg.dc.close(); await t.until(() => t.chans.neg.closed, 10000, "neg onclose");')
    py.wait(lambda: 10 in py.closed, what="ChannelClosed for 10")
    py.call(lambda: py.mgr.open("neg-again", negotiated_id=10))
    _js(
        page,
        """t.track("neg2", t.pc.createDataChannel("neg2", { negotiated: true, id: 10 }));
        await t.until(() => t.chans.neg2.opened, 10000, "neg2");""",
    )
    assert echo(page, "neg2", mixed(50, 23))["inOrder"]

    # We close our announced channel: the page's onclose fires, our side sees ChannelClosed.
    py.call(lambda: py.mgr.close(ours))
    _js(page, 'await t.until(() => t.chans["remote:from-py"].closed, 10000, "from-py onclose");')
    py.wait(lambda: ours in py.closed, what="ChannelClosed for our channel")
    # ... and an id we freed can be announced again.
    again = announce(page, py, "from-py-2")
    assert again == ours

    # The other channels keep working.
    for name in ("unord", "rel2", "neg2", "remote:from-py-2"):
        r = echo(page, name, mixed(40, 31))
        assert r["got"] == 40 and r["allKnown"], (name, r)
    print("announced stream id reused by Chrome after close:", reused, rel, rel2)
    states = _js(page, 'return ["rel", "neg", "remote:from-py"].map((n) => t.info(n).readyState);')
    assert states == ["closed", "closed", "closed"]
    assert not py.errors


def indexed(n: int, longest: int) -> list[str]:
    """``n`` strings "i:xxx..." of 0..longest-1 padding (some span several packets)."""
    return [f"{i}:" + "x" * ((i * 97) % longest) for i in range(n)]


def test_partial_reliability_under_loss_uses_forward_tsn_both_ways(ready: Any) -> None:
    """Every 5th message of a partially reliable channel is cut out of every transmission: the sender must
    abandon it and move the receiver on with FORWARD TSN (RFC 3758 s3.5); ordered channels then deliver the
    rest in order (the FORWARD TSN carries the stream's skipped SSN, s3.2)."""
    page, py, _ = ready
    life, rexmit0 = channel_id(py, "life"), channel_id(py, "rexmit0")
    py.echo = False
    n, longest = 60, 3000
    got: dict[str, Any] = {}

    # Chrome -> us: Chrome abandons (0 retransmissions / 500 ms lifetime) and sends FORWARD TSN. On "life" Chrome
    # abandons a message only when its retransmission timer fires after the lifetime, and (no RTT sample while
    # the cumulative TSN is stuck) that timer backs off: 1, 2.6, 5, 7.5 s... So "life" gets 10 messages, 2 cut;
    # Chrome also drops messages still unsent when their lifetime ends, so more at once would not all be sent.
    for name, cid, count in (("rexmit0", rexmit0, n), ("life", life, 10)):
        cutter = ChunkCutter(cid, 5)
        py.call(lambda c=cutter: setattr(py, "cut_in", c))
        t0 = time.monotonic()
        _js(page, "const st = t.chans[arg[0]]; for (const m of arg[1]) st.dc.send(m);", [name, indexed(count, longest)])
        want = count - count // 5
        py.wait(lambda c=cid, w=want: len(py.texts.get(c, [])) >= w, timeout=20, what=f"{name} from Chrome")
        got[f"chrome->us {name}"] = {"ms": round((time.monotonic() - t0) * 1000), "cut": cutter.cut}
        indices = [int(m.split(":")[0]) for m in py.call(lambda c=cid: list(py.texts[c]))]
        assert cutter.cut == list(range(4, count, 5))
        kept = [i for i in range(count) if i not in cutter.cut]
        assert (indices if name == "life" else sorted(indices)) == kept, (name, indices)
    py.call(lambda: setattr(py, "cut_in", None))

    # us -> Chrome: we abandon and send FORWARD TSN (the same 10-message limit on "life": our own sender, too,
    # drops messages whose lifetime ends before the congestion window lets them out, RFC 3758 s3.5 A1).
    before = py.call(lambda: py.mgr.association.stats.messages_abandoned)
    cut_total = 0
    for name, cid, count in (("rexmit0", rexmit0, n), ("life", life, 10)):
        cutter = ChunkCutter(cid, 5)
        py.call(lambda c=cutter: setattr(py, "cut_out", c))
        t0 = time.monotonic()
        for m in indexed(count, longest):
            py.call(lambda m=m, c=cid: py.send(c, m))
        kept = [i for i in range(count) if (i + 1) % 5]
        indices = _js(
            page,
            """const st = t.chans[arg[0]];
            await t.until(() => st.msgs.length >= arg[1], 20000, arg[0] + " from python");
            return st.msgs.map((m) => parseInt(m.split(":")[0]));""",
            [name, len(kept)],
        )
        got[f"us->chrome {name}"] = {"ms": round((time.monotonic() - t0) * 1000), "cut": cutter.cut}
        assert cutter.cut == list(range(4, count, 5))
        cut_total += len(cutter.cut)
        assert (indices if name == "life" else sorted(indices)) == kept, (name, indices)
    abandoned = py.call(lambda: py.mgr.association.stats.messages_abandoned) - before
    assert abandoned == cut_total
    py.call(lambda: setattr(py, "cut_out", None))

    # Both cumulative TSNs moved past the holes: reliable channels still work.
    py.echo = True
    assert echo(page, "rel", mixed(50, 41))["inOrder"]
    print("PR-SCTP under loss:", got)
    assert not py.errors


def test_close_with_queued_data_simultaneous_and_batched_then_peer_connection_close(ready: Any) -> None:
    page, py, _ = ready
    py.echo = False
    rel, unord, neg = channel_id(py, "rel"), channel_id(py, "unord"), 10
    ours = announce(page, py, "ours")

    # The page sends 50 messages and closes at once: its reset request names a last TSN we may not have yet
    # (RFC 6525 s5.2.2, "in progress"); every message must come before ChannelClosed.
    _js(page, "const st = t.chans.rel; for (const m of arg) st.dc.send(m); st.dc.close();", indexed(50, 3000))
    py.wait(lambda: rel in py.closed, what="rel closed")
    log = py.call(lambda: list(py.log))
    closed_at = log.index(ChannelClosed(rel))
    rel_msgs = [e for e in log[:closed_at] if isinstance(e, tuple) and e[1] == rel]
    assert len(rel_msgs) == 50 and not [e for e in log[closed_at:] if isinstance(e, tuple) and e[1] == rel]
    assert [int(m.split(":")[0]) for m in py.call(lambda: list(py.texts[rel]))] == list(range(50))

    # We send 50 and close at once: the reset goes after the queued data (RFC 6525 s5.1.2), all arrive first.
    def send_and_close() -> None:
        for m in indexed(50, 3000):
            py.send(ours, m)
        py.mgr.close(ours)

    py.call(send_and_close)
    got = _js(
        page,
        """const st = t.chans["remote:ours"];
        await t.until(() => st.closed, 10000, "ours onclose");
        return st.msgs.map((m) => parseInt(m.split(":")[0]));""",
    )
    assert got == list(range(50))
    py.wait(lambda: ours in py.closed, what="ours closed")

    # Both sides close the same channel at the same time: two reset requests cross (RFC 6525 s5.1.1).
    py.call(lambda: py.mgr.close(unord))
    _js(page, 't.chans.unord.dc.close(); await t.until(() => t.chans.unord.closed, 10000, "unord onclose");')
    py.wait(lambda: unord in py.closed, what="unord closed")

    # The page closes several channels in one go (Chrome may batch them in one request).
    life, rexmit0 = channel_id(py, "life"), channel_id(py, "rexmit0")
    _js(
        page,
        """for (const n of ["life", "rexmit0", "neg"]) t.chans[n].dc.close();
        await t.until(() => ["life", "rexmit0", "neg"].every((n) => t.chans[n].closed), 10000, "batch onclose");""",
    )
    py.wait(lambda: {life, rexmit0, neg} <= set(py.closed), what="batch closed")
    remaining = py.call(lambda: sorted(py.mgr.channels))
    assert rel not in remaining and ours not in remaining and unord not in remaining

    # Opened and closed at once, before the DCEP ACK (RFC 8832 s6), from either side.
    _js(
        page,
        """t.track("quick", t.pc.createDataChannel("quick")); t.chans.quick.dc.close();
        await t.until(() => t.chans.quick.closed, 10000, "quick onclose");""",
    )
    py.wait(lambda: any(ev.label == "quick" and ev.channel_id in py.closed for ev in py.opened.values()))

    def open_close() -> int:
        cid: int = py.mgr.open("our-quick")
        py.mgr.close(cid)
        return cid

    quick = py.call(open_close)
    _js(page, 'await t.until(() => t.chans["remote:our-quick"] && t.chans["remote:our-quick"].closed, 10000, "oq");')
    py.wait(lambda: quick in py.closed, what="our quick channel closed")

    # A channel still open keeps working after all that.
    py.echo = True
    assert echo(page, "utf", mixed(30, 51))["inOrder"]

    # Closing the peer connection ends the association (Chrome sends ABORT, then DTLS close_notify).
    _js(page, "t.pc.close();")
    py.wait(
        lambda: any(isinstance(e, AssociationClosed) for e in py.log) or bool(py.errors),
        what="association closed after pc.close()",
    )
    ends = py.call(lambda: [e for e in py.log if isinstance(e, AssociationClosed | Disconnected)])
    print("after pc.close():", ends)
    assert isinstance(ends[0], AssociationClosed) and "aborted by peer" in (ends[0].reason or "")
