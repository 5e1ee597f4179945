"""A session's incoming SUBGROUP_HEADER streams: parsed as bytes arrive and handed to the relay,
or held (bounded) while their Track Alias is not known yet, since a data stream can overtake the
SUBSCRIBE_OK or PUBLISH that names its alias (draft-16 s10.4.2, the same at draft-20)."""

from __future__ import annotations

from collections.abc import Callable

from trackmesh.transports.moq.errors import SessionError, SessionErrorCode, Truncated
from trackmesh.transports.moq.objects import SubgroupStreamParser, is_subgroup_type
from trackmesh.transports.moq.relay import Relay, Track
from trackmesh.transports.moq.varint import Reader

__all__ = ["MAX_HELD_BYTES", "MAX_HELD_STREAMS", "DataStreams"]

MAX_HELD_STREAMS = 64
MAX_HELD_BYTES = 1 << 20


class _InStream:
    __slots__ = ("held", "new", "parser", "track")

    def __init__(self, parser: SubgroupStreamParser) -> None:
        self.parser = parser
        self.track: Track | None = None
        self.held: list[tuple[bytes, bool]] = []  # bytes seen before the alias was known
        self.new = True


class DataStreams:
    def __init__(
        self, relay: Relay, vi64: bool, alias_track: Callable[[int], Track | None], refuse: Callable[[int], None]
    ) -> None:
        self.relay = relay
        self.vi64 = vi64
        self._alias_track = alias_track
        self._refuse = refuse  # STOP_SENDING a stream we will not read
        self._streams: dict[int, _InStream] = {}
        self.held_streams = 0
        self.refused_streams = 0

    def open(self, stream_id: int, kind: int, data: bytes, fin: bool) -> None:
        """A new stream whose type (``kind``) was read; ``data`` follows the type."""
        if not is_subgroup_type(kind, self.vi64):
            # FETCH_HEADER streams only flow toward a fetcher, and we fetch nothing upstream.
            raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, f"unknown data stream type 0x{kind:x}")
        if len(self._streams) >= MAX_HELD_STREAMS * 4:
            self.refused_streams += 1
            self._refuse(stream_id)
            return
        state = self._streams[stream_id] = _InStream(SubgroupStreamParser(kind, self.vi64))
        self._data(stream_id, state, data, fin)

    def has(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def data(self, stream_id: int, data: bytes, fin: bool) -> None:
        state = self._streams.get(stream_id)
        if state is not None:
            self._data(stream_id, state, data, fin)

    def reset(self, stream_id: int, code: int) -> None:
        state = self._streams.pop(stream_id, None)
        if state is not None and state.track is not None and state.parser.header is not None:
            self.relay.on_stream_end(state.track, state.parser.header, code)

    def _data(self, stream_id: int, state: _InStream, data: bytes, fin: bool) -> None:
        if state.track is None:
            state.held.append((data, fin))
            self._held_check(stream_id, state)
            return
        self._feed(stream_id, state, data, fin)

    def _feed(self, stream_id: int, state: _InStream, data: bytes, fin: bool) -> None:
        assert state.track is not None
        previous_id = state.parser.previous_id
        objects = state.parser.feed(data)
        header = state.parser.header
        if header is not None and (objects or state.new) and (header.subgroup_id is not None or objects):
            self.relay.on_objects(state.track, header, objects, state.new, previous_id)
            state.new = False
        if fin:
            self._streams.pop(stream_id, None)
            if state.parser.pending():
                raise SessionError(SessionErrorCode.PROTOCOL_VIOLATION, "data stream ended inside an object")
            if header is not None:
                self.relay.on_stream_end(state.track, header, None)

    def _peek_alias(self, state: _InStream) -> int | None:
        r = Reader(b"".join(d for d, _ in state.held), vi64=self.vi64)
        try:
            return r.varint()
        except Truncated:
            return None

    def _held_check(self, stream_id: int, state: _InStream) -> None:
        alias = self._peek_alias(state)
        if alias is None:
            return
        track = self._alias_track(alias)
        if track is not None:
            self._attach(stream_id, state, track)
            return
        if sum(len(d) for d, _ in state.held) > MAX_HELD_BYTES // MAX_HELD_STREAMS:
            self.refused_streams += 1
            self._streams.pop(stream_id, None)
            self._refuse(stream_id)
            return
        self.held_streams += 1

    def _attach(self, stream_id: int, state: _InStream, track: Track) -> None:
        state.track = track
        held, state.held = state.held, []
        self._feed(stream_id, state, b"".join(d for d, _ in held), any(f for _, f in held))

    def release(self, alias: int, track: Track) -> None:
        """The alias became known: feed the streams that waited for it."""
        for stream_id, state in list(self._streams.items()):
            if state.track is None and state.held and self._peek_alias(state) == alias:
                self._attach(stream_id, state, track)
