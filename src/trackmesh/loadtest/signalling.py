"""Signalling for the load generator: a tiny HTTP/1.1 client and trackmesh WHIP/WHEP.

Each server gets the same three operations (the Janus VideoRoom twin is
``bench/janus/videoroom.py`` in the repository): ``publish(transport)`` (send an offer, get the
answer), ``subscribe(transport)`` (get media flowing to a new receive-only transport) and
``close()``. SDP is written here by hand; nothing is copied from any other project.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from trackmesh.loadtest.client import Transport, check_loopback
from trackmesh.loadtest.media import AUDIO_PT, EXT_MID, VIDEO_PT

__all__ = ["HttpError", "ServerUrl", "TrackmeshWhipWhep", "http_request", "publish_offer", "view_offer"]

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


class HttpError(RuntimeError):
    pass


async def http_request(
    host: str, port: int, method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 40.0, *, tls: bool = False,
    loopback_only: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (``Connection: close``); handles chunked bodies.

    ``loopback_only=False`` only for a deployment the user named with ``trackmesh-bench --url``."""
    if loopback_only:
        check_loopback(host)

    async def run() -> tuple[int, dict[str, str], bytes]:
        context = ssl.create_default_context() if tls else None
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
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


@dataclass(frozen=True)
class ServerUrl:
    """Where signalling goes: a server this command started (``local``) or a deployment named by ``--url``."""

    host: str
    port: int
    tls: bool = False
    #: A prefix the deployment serves the API under ("" or "/path", no trailing slash).
    base_path: str = ""
    #: True for a server this command started: every request is checked to stay inside 127.0.0.0/8.
    loopback_only: bool = True

    @classmethod
    def local(cls, port: int) -> ServerUrl:
        return cls("127.0.0.1", port)

    @classmethod
    def parse(cls, url: str) -> ServerUrl:
        """``http://host:port[/prefix]`` or ``https://...``; a clear ValueError for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url {url!r}: expected http://host:port or https://host[:port]")
        if parts.query or parts.fragment or parts.username:
            raise ValueError(f"--url {url!r}: no query, fragment or user info, the base URL of the node or gateway")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"--url {url!r}: {exc}") from None
        return cls(parts.hostname, port, parts.scheme == "https", parts.path.rstrip("/"), loopback_only=False)

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}{self.base_path}"

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
        timeout: float = 40.0,
    ) -> tuple[int, dict[str, str], bytes]:
        return await http_request(self.host, self.port, method, self.base_path + path, body, headers, timeout,
                                  tls=self.tls, loopback_only=self.loopback_only)


def session_head() -> list[str]:
    return ["v=0", f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]


def publish_offer(tr: Transport, ssrcs: tuple[int, int], *, audio_only: bool = False) -> str:
    """sendonly Opus (mid 0) + VP8 (mid 1), BUNDLE, one host candidate, exactly our PTs."""
    mids = ["0"] if audio_only else ["0", "1"]
    out = [*session_head(), f"a=group:BUNDLE {' '.join(mids)}", "a=msid-semantic: WMS bench"]
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
    text = "\r\n".join([*session_head(), f"a=group:BUNDLE {' '.join(mids)}"]) + "\r\n"
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


class TrackmeshWhipWhep:
    """trackmesh: tokens from POST /token/whip|whep, then WHIP/WHEP offers (RFC 9725)."""

    name = "trackmesh"
    controlling = True  # trackmesh is ICE-lite

    def __init__(self, server: ServerUrl, secret: str, room: str) -> None:
        self.server = server
        self.secret = secret
        self.room = room
        self._peers = itertools.count(1)
        self.locations: list[tuple[str, str]] = []

    async def _token(self, kind: str, peer: str | None) -> str:
        body: dict[str, Any] = {"room": self.room, "ttl": 7200}
        if peer is not None:
            body["peer"] = peer
        status, _, raw = await self.server.request(
            "POST", f"/token/{kind}", json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.secret}"},
        )
        if status != 200:
            raise HttpError(f"token {kind}: {status} {raw[:200]!r}")
        return str(json.loads(raw)["data"]["token"])

    async def _post(self, kind: str, token: str, offer: str) -> str:
        status, hdrs, raw = await self.server.request(
            "POST", f"/{kind}/endpoint", offer.encode(),
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
