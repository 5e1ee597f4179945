"""Signalling for the load generator: a tiny HTTP/1.1 client, trackmesh WHIP/WHEP, Janus VideoRoom.

Each server gets the same three operations: ``publish(transport)`` (send an offer, get the
answer), ``subscribe(transport)`` (get media flowing to a new receive-only transport) and
``close()``. SDP is written here by hand; nothing is copied from any other project.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
from typing import Any

from trackmesh.bench.client import Transport, check_loopback
from trackmesh.bench.media import AUDIO_PT, EXT_MID, VIDEO_PT
from trackmesh.sdp import model as sdplib

__all__ = ["HttpError", "JanusVideoRoom", "TrackmeshWhipWhep", "http_request", "publish_offer", "view_offer"]

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class HttpError(RuntimeError):
    pass


async def http_request(
    host: str, port: int, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 40.0,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (``Connection: close``); handles chunked bodies."""
    check_loopback(host)

    async def run() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            for k, v in (headers or {}).items():
                head.append(f"{k}: {v}")
            if body is not None:
                head.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header_blob, _, payload = raw.partition(b"\r\n\r\n")
        lines = header_blob.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            out, rest = bytearray(), payload
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                out += rest[:size]
                rest = rest[size + 2 :]
            payload = bytes(out)
        return status, hdrs, payload

    return await asyncio.wait_for(run(), timeout)


def _session_head() -> list[str]:
    return ["v=0", f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]


def publish_offer(tr: Transport, ssrcs: tuple[int, int], *, audio_only: bool = False) -> str:
    """sendonly Opus (mid 0) + VP8 (mid 1), BUNDLE, one host candidate, exactly our PTs."""
    mids = ["0"] if audio_only else ["0", "1"]
    out = [*_session_head(), f"a=group:BUNDLE {' '.join(mids)}", "a=msid-semantic: WMS bench"]
    text = "\r\n".join(out) + "\r\n"
    text += (
        f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
        + tr.transport_lines("actpass", candidate=True)
        + f"a=mid:0\r\na=sendonly\r\na=extmap:{EXT_MID} {MID_URI}\r\n"
        f"a=rtpmap:{AUDIO_PT} opus/48000/2\r\na=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1\r\n"
        f"a=msid:bench audio0\r\na=ssrc:{ssrcs[0]} cname:bench\r\na=ssrc:{ssrcs[0]} msid:bench audio0\r\n"
    )
    if not audio_only:
        text += (
            f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
            + tr.transport_lines("actpass", candidate=True)
            + f"a=mid:1\r\na=sendonly\r\na=extmap:{EXT_MID} {MID_URI}\r\n"
            f"a=rtpmap:{VIDEO_PT} VP8/90000\r\n"
            f"a=rtcp-fb:{VIDEO_PT} nack\r\na=rtcp-fb:{VIDEO_PT} nack pli\r\na=rtcp-fb:{VIDEO_PT} ccm fir\r\n"
            f"a=msid:bench video0\r\na=ssrc:{ssrcs[1]} cname:bench\r\na=ssrc:{ssrcs[1]} msid:bench video0\r\n"
        )
    return text


def view_offer(tr: Transport, *, audio_only: bool = False) -> str:
    """recvonly Opus (mid 0) + VP8 (mid 1) offer for WHEP."""
    mids = ["0"] if audio_only else ["0", "1"]
    text = "\r\n".join([*_session_head(), f"a=group:BUNDLE {' '.join(mids)}"]) + "\r\n"
    text += (
        f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
        + tr.transport_lines("actpass", candidate=True)
        + f"a=mid:0\r\na=recvonly\r\na=extmap:{EXT_MID} {MID_URI}\r\na=rtpmap:{AUDIO_PT} opus/48000/2\r\n"
    )
    if not audio_only:
        text += (
            f"m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\nc=IN IP4 0.0.0.0\r\n"
            + tr.transport_lines("actpass", candidate=True)
            + f"a=mid:1\r\na=recvonly\r\na=extmap:{EXT_MID} {MID_URI}\r\na=rtpmap:{VIDEO_PT} VP8/90000\r\n"
            f"a=rtcp-fb:{VIDEO_PT} nack\r\na=rtcp-fb:{VIDEO_PT} nack pli\r\n"
        )
    return text


def answer_remote_offer(tr: Transport, offer: str) -> str:
    """recvonly answer to a server's offer (Janus subscriber): Opus and VP8 only, DTLS client."""
    sd = sdplib.parse(offer)
    mids = [m.mid for m in sd.media if m.mid is not None]
    text = "\r\n".join([*_session_head(), f"a=group:BUNDLE {' '.join(mids)}"]) + "\r\n"
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


class TrackmeshWhipWhep:
    """trackmesh: tokens from POST /token/whip|whep, then WHIP/WHEP offers (RFC 9725)."""

    name = "trackmesh"
    controlling = True  # trackmesh is ICE-lite

    def __init__(self, port: int, secret: str, room: str) -> None:
        self.port = port
        self.secret = secret
        self.room = room
        self._peers = itertools.count(1)
        self.locations: list[tuple[str, str]] = []

    async def _token(self, kind: str, peer: str | None) -> str:
        body: dict[str, Any] = {"room": self.room, "ttl": 7200}
        if peer is not None:
            body["peer"] = peer
        status, _, raw = await http_request(
            "127.0.0.1", self.port, "POST", f"/token/{kind}", json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.secret}"},
        )
        if status != 200:
            raise HttpError(f"token {kind}: {status} {raw[:200]!r}")
        return str(json.loads(raw)["data"]["token"])

    async def _post(self, kind: str, token: str, offer: str) -> str:
        status, hdrs, raw = await http_request(
            "127.0.0.1", self.port, "POST", f"/{kind}/endpoint", offer.encode(),
            {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
        )
        if status != 201:
            raise HttpError(f"{kind} POST: {status} {raw[:300]!r}")
        self.locations.append((hdrs.get("location", ""), token))
        return raw.decode()

    async def setup(self) -> None:
        pass

    async def publish(self, tr: Transport, ssrcs: tuple[int, int], *, audio_only: bool = False) -> None:
        token = await self._token("whip", f"pub{next(self._peers)}")
        answer = await self._post("whip", token, publish_offer(tr, ssrcs, audio_only=audio_only))
        tr.start(answer, controlling=True)

    async def prepare_subscriber_token(self) -> str:
        return await self._token("whep", None)

    async def subscribe(self, tr: Transport, *, audio_only: bool = False, token: str | None = None) -> None:
        token = token or await self._token("whep", None)
        answer = await self._post("whep", token, view_offer(tr, audio_only=audio_only))
        tr.start(answer, controlling=True)

    async def close(self) -> None:
        pass


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
