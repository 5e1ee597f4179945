"""Where one join's time goes, seen from the load generator (S2's participant 6, S3's listeners).

A join is timed from the first signalling request to a packet of every expected stream
(``multi.py``). :func:`join_phases` splits that into the steps a client goes through, each as
milliseconds since the join started (the *last* of a per-stream step, e.g. the fifth publisher's
first key frame, since the join waits for the slowest):

- ``token``, ``answer``: the token and the connect (SDP answer) responses (trackmesh's SDK);
- ``ice``: our connectivity check answered; ``dtls``: the handshake done (SRTP keys);
- ``dc_open``: the data channel open (the server starts SCTP after DTLS);
- ``announced``: the last remote track announced (``room.track_started``);
- ``attached``: the last ``receiver.attach`` answered (the server has subscribed the receiver);
- ``pli``: per publisher of a video stream this member expects, the first PLI/FIR the server sent it
  once this member could subscribe (after its data channel opened; Janus: after its DTLS). The
  publishers log every request with the time it arrived (``keyframes.KeyframeResponder.log``;
  loopback, so within a fraction of a millisecond of the server's send time); ``pli_honoured``: the
  first one its "encoder" acted on;
- ``first_audio``, ``first_video``: the first packet of each stream (the last stream's);
- ``first_key``: the first packet of a key frame of each video stream; ``key_sent``: when the
  publisher had sent it (before ``attached``: a key frame the server kept, replayed for this member);
- ``all``: every stream (the join sample itself).

A phase the client did not go through (a Janus subscriber has no data channel) is None. Clocks: the
transports and the SDK client stamp ``time.monotonic()``, the sinks the kernel's arrival time
(``time.time()``); ``offset`` (wall - monotonic) brings them together.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from trackmesh.loadtest.client import Transport
from trackmesh.loadtest.keyframes import KeyframeResponder
from trackmesh.loadtest.runner import _pct
from trackmesh.loadtest.sdk_client import SdkClient
from trackmesh.loadtest.streams import MultiSink, kind_of

__all__ = ["PHASES", "join_phases", "summarize"]

PHASES = (
    "token", "answer", "ice", "dtls", "dc_open", "announced", "attached", "pli", "pli_honoured",
    "first_audio", "first_video", "first_key", "key_sent", "all",
)  # fmt: skip


def _ms(t: float | None, started: float) -> float | None:
    return None if t is None else round((t - started) * 1000, 1)


def _last(values: Iterable[float | None]) -> float | None:
    """The latest of per-stream times; None when any is missing (the step never finished for it)."""
    vals = list(values)
    if not vals or any(v is None for v in vals):
        return None
    return max(v for v in vals if v is not None)


def join_phases(
    started: float,
    sink: MultiSink,
    transport: Transport | None,
    sdk: SdkClient | None,
    publishers: Sequence[KeyframeResponder],
    offset: float | None = None,
) -> dict[str, float | None]:
    """One join's phases in ms since ``started`` (wall clock). ``publishers``: the key-frame responders
    of the video streams this member expects."""
    off = time.time() - time.monotonic() if offset is None else offset

    def wall(mono: float | None) -> float | None:
        return None if mono is None else mono + off

    expected = sorted(sink.expected)
    audio = [s for s in expected if kind_of(s) == 0]
    video = [s for s in expected if kind_of(s) == 1]
    out: dict[str, float | None] = dict.fromkeys(PHASES)
    if sdk is not None:
        out["token"] = _ms(wall(sdk.token_at), started)
        out["answer"] = _ms(wall(sdk.answer_at), started)
        opened = sdk.opened.result() if sdk.opened.done() and not sdk.opened.cancelled() else None
        out["dc_open"] = _ms(wall(opened), started)
        out["announced"] = _ms(wall(_last(sdk.announced_at.values()) if sdk.announced_at else None), started)
        out["attached"] = _ms(wall(_last(sdk.attached_at.values()) if sdk.attached_at else None), started)
    if transport is not None:
        out["ice"] = _ms(wall(transport.ice_at), started)
        done = transport.connected
        dtls = done.result() if done.done() and not done.cancelled() and done.exception() is None else None
        out["dtls"] = _ms(wall(dtls), started)
    if publishers:
        # Requests before this member could subscribe were for someone else: from its data channel's
        # opening (the SDK attaches its receivers after it), else from its DTLS (Janus), else its start.
        since = next((started + v / 1000 for k in ("dc_open", "dtls") if (v := out[k]) is not None), started)
        out["pli"] = _ms(_last(_first_after(kf, since, off, False) for kf in publishers), started)
        out["pli_honoured"] = _ms(_last(_first_after(kf, since, off, True) for kf in publishers), started)
    out["first_audio"] = _ms(_last(sink.first_at.get(s) for s in audio) if audio else None, started)
    out["first_video"] = _ms(_last(sink.first_at.get(s) for s in video) if video else None, started)
    out["first_key"] = _ms(_last(sink.first_key_at.get(s) for s in video) if video else None, started)
    out["key_sent"] = _ms(_last(sink.first_key_sent.get(s) for s in video) if video else None, started)
    out["all"] = _ms(sink.all_streams_at(), started)
    return out


def _first_after(kf: KeyframeResponder, started: float, offset: float, honoured: bool) -> float | None:
    """When the first request (``honoured``: the first one acted on) reached ``kf`` after ``started``."""
    for t, ok in kf.log:
        if t + offset >= started and (ok or not honoured):
            return t + offset
    return None


def summarize(samples: list[dict[str, float | None]]) -> dict[str, Any]:
    """p50, p99 and max of each phase over joins (a phase some joins lack: over those that have it)."""
    out: dict[str, Any] = {"n": len(samples)}
    for phase in PHASES:
        vals = sorted(v for s in samples if (v := s.get(phase)) is not None)
        if vals:
            out[phase] = {"p50": _pct(vals, 50), "p99": _pct(vals, 99), "max": vals[-1]}
    return out
