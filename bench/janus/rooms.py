"""Janus 1.1.2 VideoRoom for S2/S3: several rooms on one session, multistream subscribers.

- A room per meeting (S2) or one room for the speakers (S3), created with ``bitrate: 0`` (no REMB
  cap; the default 256 kbps would throttle a real encoder, and is applied to the publisher's REMB
  only), ``fir_freq: 0``, Opus/VP8 and ``publishers`` raised above the participants (the default is 3).
- Publishers: ``joinandconfigure`` with our offer (as in S1).
- Subscribers: one handle and one PeerConnection per subscriber, ``join`` with ``ptype: subscriber``
  and a ``streams`` list of every feed to receive (all of each feed's streams), answer Janus's offer,
  ``start``. Janus offers one m-line per stream, BUNDLEd on one transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.janus.videoroom import JanusVideoRoom, answer_remote_offer

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.signalling import HttpError, publish_offer

__all__ = ["JanusRooms"]


class JanusRooms(JanusVideoRoom):
    """One Janus session; rooms created on demand."""

    async def setup(self) -> None:
        reply = await self._post("/janus", {"janus": "create"})
        self.session = int(reply["data"]["id"])
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        self._admin = await self._attach()

    async def create_room(self, room: int, publishers: int) -> None:
        create = {
            "request": "create", "room": room, "publishers": publishers, "bitrate": 0, "fir_freq": 0,
            "audiocodec": "opus", "videocodec": "vp8", "notify_joining": False, "permanent": False,
        }
        reply = await self._post(f"/janus/{self.session}/{self._admin}", {"janus": "message", "body": create})
        data = reply.get("plugindata", {}).get("data", {})
        if data.get("videoroom") != "created":
            raise HttpError(f"janus create room: {reply}")

    async def publish_in(self, room: int, tr: Transport, ssrcs: tuple[int, int], *, audio_only: bool) -> int:
        """Publish into ``room``; returns the feed id once Janus answered (ICE/DTLS then run on ``tr``)."""
        handle = await self._attach()
        body = {"request": "joinandconfigure", "room": room, "ptype": "publisher", "display": "bench",
                "audio": True, "video": not audio_only, "bitrate": 0}
        jsep = {"type": "offer", "sdp": publish_offer(tr, ssrcs, audio_only=audio_only), "trickle": False}
        await self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": body, "jsep": jsep})
        ev = await self._wait_jsep(handle)
        tr.start(ev["jsep"]["sdp"], controlling=True)
        return int(ev["plugindata"]["data"]["id"])

    async def subscribe_in(self, room: int, tr: Transport, feeds: list[int]) -> dict[str, Any]:
        """Subscribe ``tr`` to every stream of ``feeds`` (one PeerConnection); returns Janus's stream list."""
        handle = await self._attach()
        body = {"request": "join", "room": room, "ptype": "subscriber", "streams": [{"feed": f} for f in feeds]}
        await self._post(f"/janus/{self.session}/{handle}", {"janus": "message", "body": body})
        ev = await self._wait_jsep(handle)
        offer = ev["jsep"]["sdp"]
        answer = answer_remote_offer(tr, offer)
        tr.start(offer, controlling=False)  # Janus offered: it is controlling and nominates
        jsep = {"type": "answer", "sdp": answer, "trickle": False}
        await self._post(f"/janus/{self.session}/{handle}",
                         {"janus": "message", "body": {"request": "start"}, "jsep": jsep})
        data: dict[str, Any] = ev.get("plugindata", {}).get("data", {})
        return data
