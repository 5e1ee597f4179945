"""Janus 1.1.2 VideoRoom over its plain HTTP API: the Janus side of S1 (one room, one session).

Not installed: the Janus comparison is a repository tool built on the shipped load generator
(``trackmesh.loadtest``), see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from typing import Any

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.signalling import MID_URI, HttpError, http_request, publish_offer, session_head
from trackmesh.sdp import model as sdplib

__all__ = ["JanusVideoRoom", "answer_remote_offer"]


def answer_remote_offer(tr: Transport, offer: str) -> str:
    """recvonly answer to a server's offer (Janus subscriber): Opus and VP8 only, DTLS client."""
    sd = sdplib.parse(offer)
    mids = [m.mid for m in sd.media if m.mid is not None]
    text = "\r\n".join([*session_head(), f"a=group:BUNDLE {' '.join(mids)}"]) + "\r\n"
    first = True
    for m in sd.media:
        if m.kind not in ("audio", "video"):
            text += f"m={m.kind} 0 {m.proto} {' '.join(m.formats)}\r\nc=IN IP4 0.0.0.0\r\na=mid:{m.mid}\r\n"
            continue
        want = "opus" if m.kind == "audio" else "vp8"
        pt = next((r.payload_type for r in m.rtpmaps if r.encoding.lower() == want), None)
        if pt is None or m.effective_direction not in ("sendonly", "sendrecv"):
            text += f"m={m.kind} 0 {m.proto} {m.formats[0]}\r\nc=IN IP4 0.0.0.0\r\na=mid:{m.mid}\r\na=inactive\r\n"
            continue
        rtpmap = m.rtpmap(pt)
        assert rtpmap is not None
        enc = f"{rtpmap.encoding}/{rtpmap.clock_rate}" + (f"/{rtpmap.channels}" if rtpmap.channels else "")
        text += (
            f"m={m.kind} 9 {m.proto} {pt}\r\nc=IN IP4 0.0.0.0\r\n"
            + tr.transport_lines("active", candidate=first)
            + f"a=mid:{m.mid}\r\na=recvonly\r\na=rtpmap:{pt} {enc}\r\n"
        )
        for ext in m.extmaps:
            if ext.uri == MID_URI:
                text += f"a=extmap:{ext.id} {MID_URI}\r\n"
        if m.kind == "video":
            text += f"a=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n"
        first = False
    return text


class JanusVideoRoom:
    """Janus 1.1.2 VideoRoom over its plain HTTP API (127.0.0.1:8088/janus), one session."""

    name = "janus"
    controlling = False

    def __init__(self, port: int = 8088, room: int | None = None) -> None:
        self.port = port
        self.room = room or secrets.randbelow(1 << 30) + 1000
        self.session: int | None = None
        self._tx = itertools.count(1)
        self._waiters: dict[int, asyncio.Queue[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.feeds: list[int] = []
        self.errors: list[str] = []

    async def _post(self, path: str, msg: dict[str, Any]) -> dict[str, Any]:
        msg.setdefault("transaction", f"t{next(self._tx)}")
        status, _, raw = await http_request(
            "127.0.0.1", self.port, "POST", path, json.dumps(msg).encode(), {"Content-Type": "application/json"}
        )
        if status != 200:
            raise HttpError(f"janus {path}: HTTP {status} {raw[:200]!r}")
        reply: dict[str, Any] = json.loads(raw)
        if reply.get("janus") == "error":
            raise HttpError(f"janus {path}: {reply.get('error')}")
        return reply

    async def _poll(self) -> None:
        while True:
            try:
                status, _, raw = await http_request(
                    "127.0.0.1", self.port, "GET", f"/janus/{self.session}?maxev=50", timeout=45
                )
            except (TimeoutError, OSError) as exc:
                self.errors.append(f"poll: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            if status != 200:
                await asyncio.sleep(0.1)
                continue
            data = json.loads(raw)
            for ev in data if isinstance(data, list) else [data]:
                sender = ev.get("sender")
                if sender in self._waiters:
                    self._waiters[sender].put_nowait(ev)

    async def setup(self) -> None:
        reply = await self._post("/janus", {"janus": "create"})
        self.session = int(reply["data"]["id"])
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        handle = await self._attach()
        create = {
            "request": "create", "room": self.room, "publishers": 16, "bitrate": 0, "fir_freq": 0,
            "audiocodec": "opus", "videocodec": "vp8", "notify_joining": False, "permanent": False,
        }
        reply = await self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": create})
        data = reply.get("plugindata", {}).get("data", {})
        if data.get("videoroom") != "created":
            raise HttpError(f"janus create room: {reply}")

    async def _attach(self) -> int:
        reply = await self._post(f"/janus/{self.session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = int(reply["data"]["id"])
        self._waiters[handle] = asyncio.Queue()
        return handle

    async def _wait_jsep(self, handle: int, timeout: float = 20.0) -> dict[str, Any]:
        q = self._waiters[handle]
        async with asyncio.timeout(timeout):
            while True:
                ev = await q.get()
                if ev.get("janus") == "event":
                    data = ev.get("plugindata", {}).get("data", {})
                    if "error" in data:
                        raise HttpError(f"janus: {data['error']}")
                    if "jsep" in ev:
                        return ev

    async def publish(self, tr: Transport, ssrcs: tuple[int, int], *, audio_only: bool = False) -> None:
        handle = await self._attach()
        body = {"request": "joinandconfigure", "room": self.room, "ptype": "publisher", "display": "bench",
                "audio": True, "video": not audio_only, "bitrate": 0}
        jsep = {"type": "offer", "sdp": publish_offer(tr, ssrcs, audio_only=audio_only), "trickle": False}
        await self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": body, "jsep": jsep})
        ev = await self._wait_jsep(handle)
        self.feeds.append(int(ev["plugindata"]["data"]["id"]))
        # We made the offer: we are the controlling agent; Janus (full ICE) also checks us.
        tr.start(ev["jsep"]["sdp"], controlling=True)

    async def prepare_subscriber_token(self) -> None:
        return None

    async def subscribe(self, tr: Transport, *, audio_only: bool = False, token: Any = None) -> None:
        handle = await self._attach()
        body = {"request": "join", "room": self.room, "ptype": "subscriber",
                "streams": [{"feed": f} for f in self.feeds]}
        await self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": body})
        ev = await self._wait_jsep(handle)
        offer = ev["jsep"]["sdp"]
        answer = answer_remote_offer(tr, offer)
        # Janus offered: it is controlling and nominates; we answer its checks.
        tr.start(offer, controlling=False)
        jsep = {"type": "answer", "sdp": answer, "trickle": False}
        await self._post(f"/janus/{self.session}/{handle}",
                         {"janus": "message", "body": {"request": "start"}, "jsep": jsep})

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self.session is not None:
            with contextlib.suppress(TimeoutError, OSError, HttpError):
                await self._post(f"/janus/{self.session}", {"janus": "destroy"})
