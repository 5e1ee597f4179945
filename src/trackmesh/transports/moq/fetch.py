"""FETCH, answered from the relay's cache of recent groups: at draft-16 (s9.16) standalone, and
relative or absolute joining; at draft-20 the range of its LOCATION_FILTER (a joining FETCH is a
Relative Start there). Draft-16 objects are written with every field; draft-20 ones as deltas."""

from __future__ import annotations

from typing import Protocol

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.auth import Authorizer
from trackmesh.transports.moq.errors import RequestErrorCode
from trackmesh.transports.moq.objects import ObjectRecord, SubgroupHeader
from trackmesh.transports.moq.relay import Peer, Relay, Subscription, Track

__all__ = ["answer_fetch"]


class FetchingSession(Peer, Protocol):
    """What FETCH needs of the session (:class:`~.session.ServerSession`)."""

    relay: Relay
    authorizer: Authorizer

    def subscription(self, request_id: int) -> Subscription | None: ...


def answer_fetch(session: FetchingSession, msg: m.Fetch) -> None:
    """FETCH_OK and a FETCH_HEADER stream from the relay's cache, or the REQUEST_ERROR saying why not."""
    refuse = _refusal(session, msg)
    if refuse is not None:
        session.reply(msg.request_id, refuse, final=True)
        return
    track, objects = _range(session, msg)
    if objects:
        end_group, end_object = objects[-1][0], objects[-1][3].object_id
    elif track.largest is not None:
        end_group, end_object = track.largest
    else:
        end_group, end_object = 0, 0
    session.reply(msg.request_id, m.FetchOk(msg.request_id, 0, end_group, end_object))
    session.relay.serve_fetch(session, msg.request_id, track, objects)


def _refusal(session: FetchingSession, msg: m.Fetch) -> m.RequestError | None:
    rid = msg.request_id
    if msg.fetch_type == m.FETCH_STANDALONE:
        if not session.authorizer.may_subscribe(msg.namespace):
            return m.RequestError(rid, RequestErrorCode.UNAUTHORIZED, 0, b"unauthorized")
        if (msg.namespace, msg.name) not in session.relay.tracks:
            return m.RequestError(rid, RequestErrorCode.DOES_NOT_EXIST, 0, b"no such track")
        end = (msg.end_group, msg.end_object - 1) if msg.end_object else (msg.end_group, (1 << 62) - 1)
        if msg.relative_groups is None and end < (msg.start_group, msg.start_object):
            return m.RequestError(rid, RequestErrorCode.INVALID_RANGE, 0, b"end before start")
        return None
    sub = session.subscription(msg.joining_request_id)
    if sub is None or session.relay.track_of(sub) is None:
        return m.RequestError(rid, RequestErrorCode.INVALID_JOINING_REQUEST_ID, 0, b"no such subscription")
    return None


def _range(session: FetchingSession, msg: m.Fetch) -> tuple[Track, list[tuple[int, int, SubgroupHeader, ObjectRecord]]]:
    if msg.fetch_type == m.FETCH_STANDALONE:
        track = session.relay.tracks[(msg.namespace, msg.name)]
        # End Object 0 asks for the whole End Group (draft-16 s9.16).
        end = (msg.end_group, msg.end_object - 1) if msg.end_object else (msg.end_group, (1 << 62) - 1)
        start = (msg.start_group, msg.start_object)
        if msg.relative_groups is not None:  # draft-20: N groups before the next one
            next_group = track.largest[0] + 1 if track.largest is not None else 0
            start = (max(0, next_group - msg.relative_groups), 0)
        return track, session.relay.fetch_objects(track, start, end)
    sub = session.subscription(msg.joining_request_id)
    joined = session.relay.track_of(sub) if sub is not None else None
    assert sub is not None and joined is not None  # checked by _refusal
    track = joined
    if msg.fetch_type == m.FETCH_RELATIVE_JOINING:
        start_group = max(0, sub.start_group - msg.joining_start)
    else:
        start_group = msg.joining_start
    return track, session.relay.fetch_objects(track, (start_group, 0), (sub.start_group, -1))
