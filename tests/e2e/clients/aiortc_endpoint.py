"""A tiny reference WHIP/WHEP endpoint built on aiortc, for testing the clients themselves.

It is NOT trackmesh and does no forwarding: a WHIP session only decodes and counts what it
receives, a WHEP session sends its own synthetic 640x480 video + 440 Hz audio. It exists so the
client harness (Chromium helpers, gst_webrtc_client.py, aiortc_client.py) can be proven over real
HTTP signalling before the trackmesh server exists, and as a known-good baseline later.

    with ReferenceEndpoint(token="secret") as ep:
        url = ep.url("/whip/room1")     # POST -> 201 + answer, Location: /resource/<id>
        ...
        ep.sessions[...]                # per-session counters (frames, width, height, audio_buffers)

Routes: POST /whip/<anything>, POST /whep/<anything>, DELETE /resource/<id>. Serves on 127.0.0.1
(ephemeral port) from its own asyncio loop in a daemon thread. Run it inside the private netns.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from .aiortc_client import Counters, TestAudioTrack, TestVideoTrack, filter_candidates, new_pc

REASONS = {201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 415: "Unsupported Media Type", 500: "Internal Server Error"}  # fmt: skip


@dataclass
class Session:
    id: str
    kind: str  # "whip" or "whep"
    pc: RTCPeerConnection
    counters: Counters | None = None
    video: TestVideoTrack | None = None
    audio: TestAudioTrack | None = None
    deleted: bool = False
    offer: str = ""
    answer: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "deleted": self.deleted,
                               "connection_state": self.pc.connectionState}  # fmt: skip
        if self.counters is not None:
            out.update(self.counters.summary())
        if self.video is not None and self.audio is not None:
            out.update(video_sent=self.video.sent, audio_sent=self.audio.sent)
        return out


class ReferenceEndpoint:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.sessions: dict[str, Session] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="ref-endpoint", daemon=True)
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> ReferenceEndpoint:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.is_running():
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for s in self.sessions.values():
                if s.counters is not None:
                    await s.counters.close()
                await s.pc.close()

        self._call(shutdown(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any, timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def summaries(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [s.summary() for s in list(self.sessions.values()) if kind is None or s.kind == kind]

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            headers = {}
            for ln in lines[1:]:
                if ":" in ln:
                    k, v = ln.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            status, extra, out = await self._route(method, path, headers, body.decode())
        except Exception as exc:  # a broken request must not kill the endpoint
            status, extra, out = 500, {"Content-Type": "text/plain"}, f"{type(exc).__name__}: {exc}"
            method, path = locals().get("method", "?"), locals().get("path", "?")
        self.requests.append((method, path, status))
        data = out.encode()
        hdrs = {"Content-Length": str(len(data)), "Connection": "close",
                "Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Location", **extra}  # fmt: skip
        writer.write(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n".encode())
        writer.write("".join(f"{k}: {v}\r\n" for k, v in hdrs.items()).encode() + b"\r\n" + data)
        try:
            await writer.drain()
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], body: str
    ) -> tuple[int, dict[str, str], str]:
        if method == "OPTIONS":
            return 204, {"Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
                         "Access-Control-Allow-Headers": "Content-Type, Authorization"}, ""  # fmt: skip
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"WWW-Authenticate": "Bearer"}, "missing or wrong bearer token"
        if method == "DELETE" and path.startswith("/resource/"):
            s = self.sessions.get(path.rsplit("/", 1)[1])
            if s is None or s.deleted:
                return 404, {}, ""
            s.deleted = True
            if s.counters is not None:
                await s.counters.close()
            await s.pc.close()
            return 204, {}, ""
        if method != "POST":
            return 405, {}, ""
        if not headers.get("content-type", "").startswith("application/sdp"):
            return 415, {}, "expected application/sdp"
        if path.startswith("/whip/"):
            kind = "whip"
        elif path.startswith("/whep/"):
            kind = "whep"
        else:
            return 404, {}, ""
        sid = str(next(self._ids))
        pc = new_pc()
        s = Session(id=sid, kind=kind, pc=pc, offer=body)
        if kind == "whip":
            s.counters = Counters()
            s.counters.attach(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="offer"))
        if kind == "whep":
            s.video, s.audio = TestVideoTrack(), TestAudioTrack()
            pc.addTrack(s.video)
            pc.addTrack(s.audio)
        answer = await pc.createAnswer()
        # Answer a=setup:passive (we are the DTLS server). aiortc's DTLS only offers ECDHE-ECDSA cipher
        # suites, while GStreamer 1.22's webrtcbin uses an RSA certificate: with aiortc as DTLS client
        # and webrtcbin as server the handshake dies with "no shared cipher".
        answer = RTCSessionDescription(sdp=answer.sdp.replace("a=setup:active", "a=setup:passive"), type="answer")
        await pc.setLocalDescription(answer)
        s.answer = filter_candidates(pc.localDescription.sdp)
        self.sessions[sid] = s
        return 201, {"Content-Type": "application/sdp", "Location": f"/resource/{sid}"}, s.answer
