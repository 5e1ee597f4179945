"""The draft-20 control codec (ALPN ``moqt-20``; draft-21 and -22 are wire-identical to it).

What changed from draft-16 (:mod:`.codec16`), as far as this codec is concerned:

- Every integer is a vi64 (s1.4.1); framing stays ``Type (i), Length (16), Payload``.
- SETUP (0x2F00) is symmetric, opens each side's unidirectional control stream, and carries
  count-less delta-typed Setup Options to its Length (s10.3).
- Every request has its own bidi stream, so replies (SUBSCRIBE_OK, REQUEST_OK, REQUEST_ERROR,
  PUBLISH_DONE, FETCH_OK) carry no Request ID: :func:`decode_message` takes the one of the stream.
  PUBLISH is answered with REQUEST_OK (PUBLISH_OK is gone); cancellations are stream resets.
- Message parameters are still counted and delta-typed, but each value is encoded by the
  parameter's definition (s10.2): a varint, one byte (FORWARD, SUBSCRIBER_PRIORITY, GROUP_ORDER),
  a Location (two varints), or a length-prefixed value; an unknown parameter cannot be skipped.
- SUBSCRIBE_NAMESPACE is 0x50 and reports namespaces only; SUBSCRIBE_TRACKS (0x51) asks for
  the tracks of a namespace, each offered by a PUBLISH.
- PUBLISH_DONE swaps the codes of EXPIRED (0x6 here) and TOO_FAR_BEHIND (0x5 here).

Draft-22 differs in one field we read: its LOCATION_FILTER leads with a Location Filter Type
(Table 6) instead of a Length (``typed=True``, the ``moqt-22`` ALPN), as aiomoqt's draft-22 client
sends it; moq-dev calls -22 wire-identical to -20, so the untyped form stays for ``moqt-21``.

Parameters are held in the draft-16 shapes so the session and relay see one form: a Location as
two RFC 9000 varints, a subscription filter as draft-16 SUBSCRIPTION_FILTER bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.varint import Reader, encode_varint, encode_vi64

__all__ = ["T_SETUP", "decode_message", "encode_message", "fill_location", "split_message"]

MAX_MESSAGE = 0xFFFF
MAX_NAMESPACE_FIELDS = 32
MAX_VALUE = 0xFFFF

T_REQUEST_UPDATE = 0x02
T_SUBSCRIBE = 0x03
T_SUBSCRIBE_OK = 0x04
T_REQUEST_ERROR = 0x05
T_PUBLISH_NAMESPACE = 0x06
T_REQUEST_OK = 0x07
T_NAMESPACE = 0x08
T_PUBLISH_DONE = 0x0B
T_TRACK_STATUS = 0x0D
T_NAMESPACE_DONE = 0x0E
T_GOAWAY = 0x10
T_FETCH = 0x16
T_FETCH_OK = 0x18
T_PUBLISH = 0x1D
T_SUBSCRIBE_NAMESPACE = 0x50
T_SUBSCRIBE_TRACKS = 0x51
T_SETUP = 0x2F00

REDIRECT = 0x34
_DONE_SWAP = {0x5: 0x6, 0x6: 0x5}  # PUBLISH_DONE EXPIRED <-> TOO_FAR_BEHIND (draft-18 on)

# How each message parameter's value is encoded (draft-20 s10.2, s15.7).
_VARINT, _UINT8, _BYTES, _LOCATION, _FILTER, _LENGTH = range(6)
KINDS: dict[int, int] = {
    0x02: _VARINT,  # OBJECT_DELIVERY_TIMEOUT
    0x03: _BYTES,  # AUTHORIZATION_TOKEN
    0x04: _VARINT,  # RENDEZVOUS_TIMEOUT
    0x06: _VARINT,  # SUBGROUP_DELIVERY_TIMEOUT
    0x08: _VARINT,  # EXPIRES
    0x09: _LOCATION,  # LARGEST_OBJECT
    0x0A: _VARINT,  # FILL_TIMEOUT
    0x10: _UINT8,  # FORWARD
    0x20: _UINT8,  # SUBSCRIBER_PRIORITY
    0x21: _FILTER,  # LOCATION_FILTER
    0x22: _UINT8,  # GROUP_ORDER
    0x23: _LENGTH,  # FILL_PARAMETERS
    0x25: _LENGTH,  # SUBGROUP_FILTER
    0x26: _LENGTH,  # OBJECTID_FILTER
    0x27: _LENGTH,  # PRIORITY_FILTER
    0x28: _LENGTH,  # OBJECT_PROPERTY_FILTER
    0x29: _LENGTH,  # TRACK_PROPERTY_FILTER
    0x32: _VARINT,  # NEW_GROUP_REQUEST
    0x34: _LENGTH,  # TRACK_NAMESPACE_PREFIX
    0x35: _UINT8,  # INCLUDE_PROPERTIES
}

v = encode_vi64


def _blob(value: bytes) -> bytes:
    return v(len(value)) + value


def _tuple(fields: m.TrackNamespace) -> bytes:
    return v(len(fields)) + b"".join(_blob(f) for f in fields)


def _kvps(params: m.Params) -> bytes:
    """Delta-typed Key-Value-Pairs by parity (Setup Options, properties)."""
    out = bytearray()
    previous = 0
    for key in sorted(params):
        value = params[key]
        out += v(key - previous)
        previous = key
        if key & 1:
            if not isinstance(value, bytes | bytearray):
                raise TypeError(f"option 0x{key:x} (odd) needs bytes")
            out += _blob(bytes(value))
        else:
            if not isinstance(value, int):
                raise TypeError(f"option 0x{key:x} (even) needs an int")
            out += v(value)
    return bytes(out)


# Draft-22 Location Filter Types (Table 6) and how many fields follow each.
_TYPED_FIELDS = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0}


def _filter_to_wire(raw: bytes, typed: bool) -> bytes:
    """A draft-16 SUBSCRIPTION_FILTER as a draft-20 LOCATION_FILTER value (s5.1.2: by field count)."""
    r = Reader(raw)
    kind = r.varint()
    if kind == m.FILTER_NEXT_GROUP_START:
        fields = [0]
    elif kind == m.FILTER_LATEST_OBJECT:
        fields = [0, 0]
    elif kind == m.FILTER_ABSOLUTE_START:
        fields = [r.varint(), r.varint()]
        if fields == [0, 0]:
            fields = []  # from {0, 0} is the unfiltered filter (two zeros would mean Next Object)
    else:
        start_group, start_object, end_group = r.varint(), r.varint(), r.varint()
        fields = [start_group, start_object, end_group - start_group]
    if typed:
        kind = 5 if fields == [0, 0] else len(fields)  # Table 6: the type is the field count but NEXT_OBJECT
        return v(kind) + b"".join(v(f) for f in ([] if kind == 5 else fields))
    inner = b"".join(v(f) for f in fields)
    return v(len(inner)) + inner


def _filter_fields(r: Reader) -> list[int]:
    if r.typed_filter:
        kind = r.varint()
        if kind not in _TYPED_FIELDS:
            raise MoqDecodeError(f"unknown Location Filter Type 0x{kind:x}")
        fields = [r.varint() for _ in range(_TYPED_FIELDS[kind])]
        return [0, 0] if kind == 5 else fields
    size = r.varint()
    end = r.pos + size
    if end > r.end:
        raise MoqDecodeError("LOCATION_FILTER runs past its message")
    inner = Reader(r.data, r.pos, end, vi64=True)
    fields = []
    while inner.remaining():
        if len(fields) == 4:
            raise MoqDecodeError("LOCATION_FILTER has more than four fields")
        fields.append(inner.varint())
    r.pos = end
    return fields


def _filter_from_wire(r: Reader) -> bytes | None:
    fields = _filter_fields(r)
    e = encode_varint
    if not fields:
        return None  # no filter
    if fields == [0, 0]:
        return e(m.FILTER_LATEST_OBJECT)
    if len(fields) == 1:
        # Relative start: N groups before the next one; 0 is the next group, 1 the current one.
        return e(m.FILTER_NEXT_GROUP_START) if fields[0] == 0 else e(m.FILTER_LATEST_OBJECT)
    if len(fields) == 2:
        return e(m.FILTER_ABSOLUTE_START) + e(fields[0]) + e(fields[1])
    return e(m.FILTER_ABSOLUTE_RANGE) + e(fields[0]) + e(fields[1]) + e(fields[0] + fields[2])


def _value(key: int, value: int | bytes, typed: bool) -> bytes:
    """One parameter's value, encoded by its definition."""
    kind = KINDS.get(key)
    if kind is None:
        raise ValueError(f"parameter 0x{key:x} is not a draft-20 message parameter")
    if kind == _VARINT:
        assert isinstance(value, int)
        return v(value)
    if kind == _UINT8:
        assert isinstance(value, int)
        return bytes((value,))
    assert isinstance(value, bytes)
    if kind == _LOCATION:
        r = Reader(value)
        return v(r.varint()) + v(r.varint())
    if kind == _FILTER:
        return _filter_to_wire(value, typed)
    return _blob(value)


def _encoded_params(values: dict[int, bytes]) -> bytes:
    out = bytearray(v(len(values)))
    previous = 0
    for key in sorted(values):
        out += v(key - previous) + values[key]
        previous = key
    return bytes(out)


def _params(params: m.Params, typed: bool = False) -> bytes:
    return _encoded_params({key: _value(key, value, typed) for key, value in params.items()})


def _fetch_params(msg: m.Fetch, typed: bool) -> bytes:
    """A FETCH's parameters with its range as LOCATION_FILTER (the inverse of :func:`_d_fetch`)."""
    if msg.relative_groups is not None:
        fields = [msg.relative_groups]
    elif msg.start_group == m.FETCH_OPEN_END:
        fields = [0, 0]
    else:
        fields = [msg.start_group, msg.start_object]
        if msg.end_group != m.FETCH_OPEN_END:
            fields.append(msg.end_group - msg.start_group)
            if msg.end_object:
                fields.append(msg.end_object - 1)
    if typed:
        kind = 5 if fields == [0, 0] else len(fields)
        location = v(kind) + b"".join(v(f) for f in fields[: _TYPED_FIELDS[kind]])
    else:
        location = _blob(b"".join(v(f) for f in fields))
    values = {k: _value(k, x, typed) for k, x in msg.params.items() if k != 0x21}
    values[0x21] = location
    return _encoded_params(values)


def fill_location(value: bytes) -> list[int]:
    """The LOCATION_FILTER fields inside a FILL_PARAMETERS value (draft-20 s5.1.6: a counted
    parameter block); [] when it has none. Raises MoqDecodeError on a malformed block."""
    fields: list[int] = []
    try:
        _read_params(Reader(value, vi64=True), fields)
    except Truncated:
        raise MoqDecodeError("FILL_PARAMETERS shorter than its parameters") from None
    return fields


def _read_tuple(r: Reader) -> m.TrackNamespace:
    count = r.varint()
    if count > MAX_NAMESPACE_FIELDS:
        raise MoqDecodeError(f"namespace of {count} fields (at most {MAX_NAMESPACE_FIELDS})")
    return tuple(r.blob() for _ in range(count))


def _read_params(r: Reader, filter_fields: list[int] | None = None) -> m.Params:
    """``filter_fields``: take LOCATION_FILTER's fields as they are (FETCH) instead of mapping it."""
    count = r.varint()
    if count > r.remaining():
        raise MoqDecodeError(f"{count} parameters in {r.remaining()} bytes")
    out: m.Params = {}
    key = 0
    for _ in range(count):
        key += r.varint()
        kind = KINDS.get(key)
        if kind is None:
            raise MoqDecodeError(f"unknown message parameter 0x{key:x} (draft-20 s10.2: cannot be skipped)")
        if kind == _VARINT:
            out[key] = r.varint()
        elif kind == _UINT8:
            out[key] = r.uint8()
        elif kind == _LOCATION:
            out[key] = encode_varint(r.varint()) + encode_varint(r.varint())
        elif kind == _FILTER and filter_fields is not None:
            filter_fields[:] = _filter_fields(r)
        elif kind == _FILTER:
            value = _filter_from_wire(r)
            if value is not None:
                out[key] = value
        else:
            out[key] = r.blob(MAX_VALUE)
    return out


def _read_kvps(r: Reader) -> m.Params:
    out: m.Params = {}
    key = 0
    while r.remaining() > 0:
        key += r.varint()
        out[key] = r.blob(MAX_VALUE) if key & 1 else r.varint()
    return out


# -- encoding --------------------------------------------------------------------------------


def _payload(msg: m.ControlMessage, typed: bool) -> tuple[int, bytes]:
    match msg:
        case m.ServerSetup(params=params) | m.ClientSetup(params=params):
            return T_SETUP, _kvps(params)
        case m.GoAway():
            return T_GOAWAY, _blob(msg.new_session_uri) + v(msg.timeout)
        case m.Subscribe():
            return T_SUBSCRIBE, v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + _params(msg.params, typed)
        case m.SubscribeOk():
            return T_SUBSCRIBE_OK, v(msg.track_alias) + _params(msg.params, typed) + _kvps(msg.extensions)
        case m.RequestError():
            return T_REQUEST_ERROR, v(msg.error_code) + v(msg.retry_interval) + _blob(msg.reason)
        case m.RequestOk(params=params) | m.PublishOk(params=params):
            return T_REQUEST_OK, _params(params, typed)
        case m.RequestUpdate():
            return T_REQUEST_UPDATE, v(msg.request_id) + _params(msg.params, typed)
        case m.PublishDone():
            code = _DONE_SWAP.get(msg.status_code, msg.status_code)
            return T_PUBLISH_DONE, v(code) + v(msg.stream_count) + _blob(msg.reason)
        case m.PublishNamespace():
            return T_PUBLISH_NAMESPACE, v(msg.request_id) + _tuple(msg.namespace) + _params(msg.params, typed)
        case m.Namespace(suffix=suffix):
            return T_NAMESPACE, _tuple(suffix)
        case m.NamespaceDone(suffix=suffix):
            return T_NAMESPACE_DONE, _tuple(suffix)
        case m.SubscribeNamespace():
            return T_SUBSCRIBE_NAMESPACE, v(msg.request_id) + _tuple(msg.prefix) + _params(msg.params, typed)
        case m.SubscribeTracks():
            return T_SUBSCRIBE_TRACKS, v(msg.request_id) + _tuple(msg.prefix) + _params(msg.params, typed)
        case m.Publish():
            body = v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + v(msg.track_alias)
            return T_PUBLISH, body + _params(msg.params, typed) + _kvps(msg.extensions)
        case m.TrackStatus():
            return T_TRACK_STATUS, v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + _params(
                msg.params, typed
            )
        case m.Fetch():
            if msg.fetch_type != m.FETCH_STANDALONE:
                raise ValueError("draft-20 has no joining FETCH")
            return T_FETCH, v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + _fetch_params(msg, typed)
        case m.FetchOk():
            # End Location is inclusive (s10.13); no parameter is defined for FETCH_OK: count 0.
            body = bytes((msg.end_of_track,)) + v(msg.end_group) + v(msg.end_object) + v(0)
            return T_FETCH_OK, body + _kvps(msg.extensions)
    raise TypeError(f"not a draft-20 control message: {type(msg).__name__}")


def encode_message(msg: m.ControlMessage, typed: bool = False) -> bytes:
    """``typed``: draft-22's Location Filter Type (we send no filter today; kept symmetric)."""
    kind, payload = _payload(msg, typed)
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"control message of {len(payload)} bytes (at most {MAX_MESSAGE})")
    return encode_vi64(kind) + len(payload).to_bytes(2, "big") + payload


# -- decoding --------------------------------------------------------------------------------


def _d_request_error(r: Reader, rid: int) -> m.RequestError:
    code, retry, reason = r.varint(), r.varint(), r.blob()
    if code == REDIRECT:
        r.pos = r.end  # the Redirect (URI, namespace, name): we never follow one
    return m.RequestError(rid, code, retry, reason)


def _d_publish_done(r: Reader, rid: int) -> m.PublishDone:
    code = r.varint()
    return m.PublishDone(rid, _DONE_SWAP.get(code, code), r.varint(), r.blob())


def _d_publish(r: Reader, _: int) -> m.Publish:
    rid, ns, name, alias = r.varint(), _read_tuple(r), r.blob(), r.varint()
    return m.Publish(rid, ns, name, alias, _read_params(r), _read_kvps(r))


def _d_fetch(r: Reader, _: int) -> m.Fetch:
    """Draft-20 FETCH: the range is its LOCATION_FILTER (s5.1.2, End inclusive), held in the
    draft-16 fields (End Object 0: the whole End Group; else one past the last object)."""
    rid, ns, name = r.varint(), _read_tuple(r), r.blob()
    fields: list[int] = []
    params = _read_params(r, fields)
    fetch = m.Fetch(rid, m.FETCH_STANDALONE, ns, name, params=params, end_group=m.FETCH_OPEN_END)
    if len(fields) == 1:
        fetch.relative_groups = fields[0]
    elif fields == [0, 0]:
        fetch.start_group = m.FETCH_OPEN_END  # Next Object: nothing that exists yet
    elif len(fields) >= 2:
        fetch.start_group, fetch.start_object = fields[0], fields[1]
        if len(fields) >= 3:
            fetch.end_group = fields[0] + fields[2]
        if len(fields) == 4:
            fetch.end_object = fields[3] + 1
    return fetch


def _d_fetch_ok(r: Reader, rid: int) -> m.FetchOk:
    end_of_track = r.uint8()
    if end_of_track > 1:
        raise MoqDecodeError(f"FETCH_OK End Of Track {end_of_track}")
    end_group, end_object = r.varint(), r.varint()
    return m.FetchOk(rid, end_of_track, end_group, end_object, _read_params(r), _read_kvps(r))


def _d_request_ok(r: Reader, rid: int) -> m.RequestOk:
    params = _read_params(r)
    _read_kvps(r)  # track properties (of a TRACK_STATUS answer): a relay asks none
    return m.RequestOk(rid, params)


_DECODERS: dict[int, Callable[[Reader, int], m.ControlMessage]] = {
    T_SETUP: lambda r, _: m.ClientSetup(_read_kvps(r)),
    T_GOAWAY: lambda r, _: m.GoAway(r.blob(8192), r.varint()),
    T_SUBSCRIBE: lambda r, _: m.Subscribe(r.varint(), _read_tuple(r), r.blob(), _read_params(r)),
    T_SUBSCRIBE_OK: lambda r, rid: m.SubscribeOk(rid, r.varint(), _read_params(r), _read_kvps(r)),
    T_REQUEST_ERROR: _d_request_error,
    T_REQUEST_OK: _d_request_ok,
    T_REQUEST_UPDATE: lambda r, _: m.RequestUpdate(r.varint(), 0, _read_params(r)),
    T_PUBLISH_DONE: _d_publish_done,
    T_PUBLISH_NAMESPACE: lambda r, _: m.PublishNamespace(r.varint(), _read_tuple(r), _read_params(r)),
    T_NAMESPACE: lambda r, _: m.Namespace(_read_tuple(r)),
    T_NAMESPACE_DONE: lambda r, _: m.NamespaceDone(_read_tuple(r)),
    T_SUBSCRIBE_NAMESPACE: lambda r, _: m.SubscribeNamespace(
        r.varint(), _read_tuple(r), m.NAMESPACE_OPTION_NAMESPACE, _read_params(r)
    ),
    T_SUBSCRIBE_TRACKS: lambda r, _: m.SubscribeTracks(r.varint(), _read_tuple(r), _read_params(r)),
    T_PUBLISH: _d_publish,
    T_TRACK_STATUS: lambda r, _: m.TrackStatus(r.varint(), _read_tuple(r), r.blob(), _read_params(r)),
    T_FETCH: _d_fetch,
    T_FETCH_OK: _d_fetch_ok,
}

MESSAGE_TYPES = frozenset(_DECODERS)


def split_message(buf: bytes | bytearray | memoryview) -> tuple[int, bytes, int] | None:
    """The first whole message of a stream buffer: (type, payload, bytes used), or None."""
    r = Reader(buf, vi64=True)
    try:
        kind = r.varint()
        size = r.uint16()
        payload = r.raw(size)
    except Truncated:
        return None
    end = r.pos
    r.data.release()
    return kind, payload, end


def decode_message(
    kind: int, payload: bytes | bytearray | memoryview, request_id: int = 0, typed: bool = False
) -> m.ControlMessage:
    """One message; ``request_id`` is the Request ID of the stream a reply arrived on, ``typed``
    selects draft-22's LOCATION_FILTER."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise MoqDecodeError(f"unknown control message type 0x{kind:x}")
    r = Reader(payload, vi64=True)
    r.typed_filter = typed
    try:
        msg = decoder(r, request_id)
    except Truncated as exc:
        raise MoqDecodeError(f"control message 0x{kind:x} shorter than its fields ({exc})") from None
    except (AssertionError, ValueError) as exc:
        raise MoqDecodeError(f"control message 0x{kind:x}: {exc}") from None
    if r.remaining():
        raise MoqDecodeError(f"control message 0x{kind:x} has {r.remaining()} bytes after its fields")
    return msg
