"""S2's "all streams joined", the server's part, in memory on a virtual clock (no sockets, no load).

    python bench/s2_join_inmemory.py                 # both builds, 300 rooms each
    python bench/s2_join_inmemory.py --rooms 1000 --handshake-ms 30 --media-ms 20

The load generator's S2 room (loadtest/multi.py) replayed against the media core (core.MediaWorker with
the in-process hub): participants 1-5 join at 20/s, each publishing a video track (Publish at its connect
request, as the SDK does; its media starts ``--media-ms`` later, when DTLS is up, with a key frame) and
subscribing to the tracks already there ``--handshake-ms`` after its connect (the SDK's receiver.attach
after ICE, DTLS and the data channel); the others subscribe to its track ``--announce-ms`` after its
connect (track_started, then attach). Participant 6 connects when participant 5's media started (the
generator waits for that) and subscribes to the five tracks ``--handshake-ms`` later. Each publisher is an
encoder at 30 fps with a 2 s GOP at a random phase that answers a PLI at its next frame with a key frame,
at most once per 300 ms (libwebrtc; loadtest/keyframes.py). A viewer starts at its first key-frame
packet after it subscribed, live or replayed (transports/webrtc/media_out.py).

Printed per build (``before``: no key-frame cache, the merge as in main 9a15b9c; ``after``: the cache of
core/tracks.py): participant 6's wait from its subscriptions to the last of its five first key frames (the
server's part of "all streams"), the same from its connect, and key-frame requests sent to publishers
per second. Deterministic for a ``--seed``.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from trackmesh.cluster.local import LocalChannelHub, LocalRegistry
from trackmesh.core.controls import CreateLocalTrack, Join, Publish, Subscribe
from trackmesh.core.endpoint import Endpoint
from trackmesh.core.events import KeyframeRequested
from trackmesh.core.model import MediaCodec, MediaPacket, TrackKind, TrackSource
from trackmesh.core.worker import MediaWorker

FRAME = 1 / 30
GOP_FRAMES = 60
MIN_INTERVAL = 0.3  # the encoder's limit (libwebrtc EncoderRtcpFeedback)
V = TrackKind.VIDEO


@dataclass
class Encoder:
    """One participant's video: frames at ``phase + n * FRAME``, key frames every GOP and on request."""

    ep: Endpoint
    name: str
    phase: float
    started: bool = False
    frame: int = 0
    seq: int = 0
    key_next: bool = True  # an encoder's first frame is a key frame
    last_honoured: float = -1e9
    requests: int = 0

    def request(self, now: float) -> None:
        self.requests += 1
        if now - self.last_honoured >= MIN_INTERVAL:
            self.last_honoured = now
            self.key_next = True

    def send_frame(self, now: float) -> None:
        key = self.key_next or self.frame % GOP_FRAMES == 0
        self.key_next = False
        track = self.ep.remote_track("video")
        n = 20 if key else 4
        for i in range(n):
            self.seq += 1
            pkt = MediaPacket(MediaCodec.VP8, 96, self.seq, 3000 * self.frame, i == n - 1, key and i == 0,
                              b"x", arrival=now)  # fmt: skip
            if track is not None:
                track.on_packet(pkt)
        self.frame += 1


@dataclass
class Room:
    cache: bool
    rng: random.Random
    handshake: float
    media: float
    announce: float
    now: float = 100.0
    actions: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.worker = MediaWorker(1, 0, "secret", LocalRegistry(), LocalChannelHub())
        self.encoders: list[Encoder] = []
        self.firsts: dict[str, float] = {}  # participant 6's first key frame per publisher
        self.subscribed_at = 0.0

    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.actions, (t, next(self.order), fn))

    def run_until(self, end: float) -> None:
        while True:
            t_act = self.actions[0][0] if self.actions else None
            t_core = self.worker.next_deadline()
            t = min(x for x in (t_act, t_core, end) if x is not None)
            if t >= end and (t_act is None or t_act > end):
                self.now = end
                return
            self.now = max(self.now, t)
            if t_core is not None and t_core <= self.now:
                self.worker.handle_timeout(self.now)
            elif self.actions and self.actions[0][0] <= self.now:
                heapq.heappop(self.actions)[2]()
            self.pump()

    def pump(self) -> None:
        """The publishers' transports: a key-frame request reaches the encoder at once (loopback)."""
        for enc in self.encoders:
            while (ev := enc.ep.poll_event()) is not None:
                if isinstance(ev, KeyframeRequested):
                    enc.request(self.now)

    def frames(self, enc: Encoder) -> None:
        def send() -> None:
            enc.send_frame(self.now)
            self.frames(enc)

        self.at(max(enc.phase + enc.frame * FRAME, self.now), send)

    def join(self, i: int, watcher: bool) -> None:
        ep = self.worker.create_endpoint()
        ep.control(self.now, Join("r", f"p{i}"))
        ep.control(self.now, Publish("video", V, cache_keyframes=self.cache))
        others = list(self.encoders)
        enc = Encoder(ep, f"p{i}", phase=self.now + self.media + self.rng.random() * FRAME)
        enc.frame = 0
        self.encoders.append(enc)
        # Its media starts when DTLS is up: the first frame (a key frame) then every FRAME.
        self.at(enc.phase, lambda: self.frames(enc))
        for other in others:
            # The others attach a receiver to its track once they hear of it.
            self.at(self.now + self.announce, self._subscriber(other.ep, f"p{i}"))
        names = [o.name for o in others]
        self.at(self.now + self.handshake, lambda: self.subscribe_all(ep, names, watcher))

    def _subscriber(self, ep: Endpoint, peer: str) -> Callable[[], None]:
        return lambda: self.subscribe(ep, f"from_{peer}", peer)

    def subscribe(self, ep: Endpoint, local: str, peer: str, record: bool = False) -> None:
        ep.control(self.now, CreateLocalTrack(local, V))
        lt = ep.local_track(local)
        assert lt is not None
        if record:
            start = self.now

            def sink(pkt: MediaPacket) -> None:
                if pkt.keyframe and peer not in self.firsts and self.now >= start:
                    self.firsts[peer] = self.now

            lt.sink = sink
        ep.control(self.now, Subscribe(local, TrackSource(peer, "video")))

    def subscribe_all(self, ep: Endpoint, peers: list[str], watcher: bool) -> None:
        if watcher:
            self.subscribed_at = self.now
        for p in peers:
            self.subscribe(ep, f"from_{p}", p, record=watcher)


def one_room(cache: bool, rng: random.Random, args: argparse.Namespace) -> tuple[float, float, int]:
    room = Room(cache, rng, args.handshake_ms / 1000, args.media_ms / 1000, args.announce_ms / 1000)
    start = room.now
    for i in range(5):
        room.at(start + i / args.storm_rate, functools.partial(room.join, i, False))
    # Participant 6 connects once participant 5's media started (multi.py waits for its join).
    t6 = start + 4 / args.storm_rate + args.media_ms / 1000
    room.at(t6, functools.partial(room.join, 5, True))
    room.run_until(t6 + 3.0)
    assert len(room.firsts) == 5, room.firsts
    last = max(room.firsts.values())
    asked = sum(e.requests for e in room.encoders)
    return last - room.subscribed_at, last - t6, asked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rooms", type=int, default=300)
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--storm-rate", type=float, default=20.0)
    p.add_argument("--handshake-ms", type=float, default=30.0, help="connect request -> receivers attached")
    p.add_argument("--media-ms", type=float, default=20.0, help="connect request -> the publisher's first frame")
    p.add_argument("--announce-ms", type=float, default=5.0, help="a track published -> the others attached")
    args = p.parse_args(argv)

    def pct(v: list[float], q: float) -> float:
        s = sorted(v)
        return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]

    print(f"{args.rooms} rooms, handshake {args.handshake_ms:g} ms, media {args.media_ms:g} ms, "
          f"announce {args.announce_ms:g} ms, storm {args.storm_rate:g}/s, seed {args.seed}")
    print("| build | subscribed -> last first key frame, p50 / p99 / max ms | connect -> all streams, p50 / p99 ms "
          "| key-frame requests per room (6 publishers, ~3.3 s) |")
    print("|---|---|---|---|")
    for label, cache in (("before (no cache)", False), ("after (key-frame cache)", True)):
        rng = random.Random(args.seed)
        waits, alls, asked = [], [], []
        for _ in range(args.rooms):
            w, a, n = one_room(cache, rng, args)
            waits.append(w * 1000)
            alls.append(a * 1000)
            asked.append(n)
        print(f"| {label} | {pct(waits, 50):.0f} / {pct(waits, 99):.0f} / {max(waits):.0f} | "
              f"{pct(alls, 50):.0f} / {pct(alls, 99):.0f} | {sum(asked) / len(asked):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
