"""The draft-16 control codec (ALPN ``moqt-16``): message framing, parameters, every message.

Framing (draft-16 s9): ``Type (i), Length (16), Payload``. Parameters are a count and then
Key-Value-Pairs whose types are delta-encoded (s1.4.2): each type on the wire is the difference
from the previous one, so they are written in ascending order. An even type carries a varint, an
odd one a length and bytes. Track extensions run to the end of the message, with no count.
"""

from __future__ import annotations

from collections.abc import Callable

from trackmesh.transports.moq import messages as m
from trackmesh.transports.moq.errors import MoqDecodeError, Truncated
from trackmesh.transports.moq.varint import Reader, encode_varint

__all__ = ["MESSAGE_TYPES", "decode_message", "encode_message", "split_message"]

MAX_MESSAGE = 0xFFFF
MAX_NAMESPACE_FIELDS = 32
MAX_VALUE = 0xFFFF  # the largest Key-Value-Pair value (s1.4.2)

T_REQUEST_UPDATE = 0x02
T_SUBSCRIBE = 0x03
T_SUBSCRIBE_OK = 0x04
T_REQUEST_ERROR = 0x05
T_PUBLISH_NAMESPACE = 0x06
T_REQUEST_OK = 0x07
T_NAMESPACE = 0x08
T_PUBLISH_NAMESPACE_DONE = 0x09
T_UNSUBSCRIBE = 0x0A
T_PUBLISH_DONE = 0x0B
T_PUBLISH_NAMESPACE_CANCEL = 0x0C
T_TRACK_STATUS = 0x0D
T_NAMESPACE_DONE = 0x0E
T_GOAWAY = 0x10
T_SUBSCRIBE_NAMESPACE = 0x11
T_MAX_REQUEST_ID = 0x15
T_FETCH = 0x16
T_FETCH_CANCEL = 0x17
T_FETCH_OK = 0x18
T_REQUESTS_BLOCKED = 0x1A
T_PUBLISH = 0x1D
T_PUBLISH_OK = 0x1E
T_CLIENT_SETUP = 0x20
T_SERVER_SETUP = 0x21


# -- field helpers ---------------------------------------------------------------------------


def _blob(value: bytes) -> bytes:
    return encode_varint(len(value)) + value


def _tuple(fields: m.TrackNamespace) -> bytes:
    return encode_varint(len(fields)) + b"".join(_blob(f) for f in fields)


def _kvps(params: m.Params) -> bytes:
    out = bytearray()
    previous = 0
    for key in sorted(params):
        value = params[key]
        out += encode_varint(key - previous)
        previous = key
        if key & 1:
            if not isinstance(value, bytes | bytearray):
                raise TypeError(f"parameter 0x{key:x} (odd) needs bytes")
            out += _blob(bytes(value))
        else:
            if not isinstance(value, int):
                raise TypeError(f"parameter 0x{key:x} (even) needs an int")
            out += encode_varint(value)
    return bytes(out)


def _params(params: m.Params) -> bytes:
    return encode_varint(len(params)) + _kvps(params)


def _read_tuple(r: Reader) -> m.TrackNamespace:
    count = r.varint()
    if count > MAX_NAMESPACE_FIELDS:
        raise MoqDecodeError(f"namespace of {count} fields (at most {MAX_NAMESPACE_FIELDS})")
    return tuple(r.blob() for _ in range(count))


def _read_kvp(r: Reader, previous: int, out: m.Params) -> int:
    key = previous + r.varint()
    if key & 1:
        out[key] = r.blob(MAX_VALUE)
    else:
        out[key] = r.varint()
    return key


def _read_params(r: Reader) -> m.Params:
    count = r.varint()
    if count > r.remaining():  # each parameter takes at least two bytes
        raise MoqDecodeError(f"{count} parameters in {r.remaining()} bytes")
    out: m.Params = {}
    key = 0
    for _ in range(count):
        key = _read_kvp(r, key, out)
    return out


def _read_extensions(r: Reader) -> m.Params:
    out: m.Params = {}
    key = 0
    while r.remaining() > 0:
        key = _read_kvp(r, key, out)
    return out


# -- encoding --------------------------------------------------------------------------------


def _payload(msg: m.ControlMessage) -> tuple[int, bytes]:
    v = encode_varint
    match msg:
        case m.ClientSetup(params=params):
            return T_CLIENT_SETUP, _params(params)
        case m.ServerSetup(params=params):
            return T_SERVER_SETUP, _params(params)
        case m.GoAway(new_session_uri=uri):
            return T_GOAWAY, _blob(uri)
        case m.MaxRequestId(request_id=rid):
            return T_MAX_REQUEST_ID, v(rid)
        case m.RequestsBlocked(maximum_request_id=rid):
            return T_REQUESTS_BLOCKED, v(rid)
        case m.Subscribe():
            return T_SUBSCRIBE, v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + _params(msg.params)
        case m.SubscribeOk():
            body = v(msg.request_id) + v(msg.track_alias) + _params(msg.params) + _kvps(msg.extensions)
            return T_SUBSCRIBE_OK, body
        case m.RequestError():
            body = v(msg.request_id) + v(msg.error_code) + v(msg.retry_interval) + _blob(msg.reason)
            return T_REQUEST_ERROR, body
        case m.RequestOk():
            return T_REQUEST_OK, v(msg.request_id) + _params(msg.params)
        case m.RequestUpdate():
            return T_REQUEST_UPDATE, v(msg.request_id) + v(msg.existing_request_id) + _params(msg.params)
        case m.Unsubscribe(request_id=rid):
            return T_UNSUBSCRIBE, v(rid)
        case m.PublishDone():
            body = v(msg.request_id) + v(msg.status_code) + v(msg.stream_count) + _blob(msg.reason)
            return T_PUBLISH_DONE, body
        case m.PublishNamespace():
            return T_PUBLISH_NAMESPACE, v(msg.request_id) + _tuple(msg.namespace) + _params(msg.params)
        case m.PublishNamespaceDone(request_id=rid):
            return T_PUBLISH_NAMESPACE_DONE, v(rid)
        case m.PublishNamespaceCancel():
            return T_PUBLISH_NAMESPACE_CANCEL, v(msg.request_id) + v(msg.error_code) + _blob(msg.reason)
        case m.Namespace(suffix=suffix):
            return T_NAMESPACE, _tuple(suffix)
        case m.NamespaceDone(suffix=suffix):
            return T_NAMESPACE_DONE, _tuple(suffix)
        case m.SubscribeNamespace():
            body = v(msg.request_id) + _tuple(msg.prefix) + v(msg.options) + _params(msg.params)
            return T_SUBSCRIBE_NAMESPACE, body
        case m.Publish():
            body = (
                v(msg.request_id)
                + _tuple(msg.namespace)
                + _blob(msg.name)
                + v(msg.track_alias)
                + _params(msg.params)
                + _kvps(msg.extensions)
            )
            return T_PUBLISH, body
        case m.PublishOk():
            return T_PUBLISH_OK, v(msg.request_id) + _params(msg.params)
        case m.TrackStatus():
            body = v(msg.request_id) + _tuple(msg.namespace) + _blob(msg.name) + _params(msg.params)
            return T_TRACK_STATUS, body
        case m.Fetch():
            body = v(msg.request_id) + v(msg.fetch_type)
            if msg.fetch_type == m.FETCH_STANDALONE:
                body += _tuple(msg.namespace) + _blob(msg.name)
                body += v(msg.start_group) + v(msg.start_object) + v(msg.end_group) + v(msg.end_object)
            else:
                body += v(msg.joining_request_id) + v(msg.joining_start)
            return T_FETCH, body + _params(msg.params)
        case m.FetchOk():
            body = v(msg.request_id) + bytes((msg.end_of_track,)) + v(msg.end_group) + v(msg.end_object)
            return T_FETCH_OK, body + _params(msg.params) + _kvps(msg.extensions)
        case m.FetchCancel(request_id=rid):
            return T_FETCH_CANCEL, v(rid)
    raise TypeError(f"not a control message: {msg!r}")


def encode_message(msg: m.ControlMessage) -> bytes:
    kind, payload = _payload(msg)
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"control message of {len(payload)} bytes (at most {MAX_MESSAGE})")
    return encode_varint(kind) + len(payload).to_bytes(2, "big") + payload


# -- decoding --------------------------------------------------------------------------------


def _d_fetch(r: Reader) -> m.Fetch:
    rid = r.varint()
    kind = r.varint()
    if kind == m.FETCH_STANDALONE:
        ns = _read_tuple(r)
        name = r.blob()
        sg, so, eg, eo = r.varint(), r.varint(), r.varint(), r.varint()
        return m.Fetch(rid, kind, ns, name, sg, so, eg, eo, params=_read_params(r))
    if kind in (m.FETCH_RELATIVE_JOINING, m.FETCH_ABSOLUTE_JOINING):
        joining, start = r.varint(), r.varint()
        return m.Fetch(rid, kind, joining_request_id=joining, joining_start=start, params=_read_params(r))
    raise MoqDecodeError(f"unknown FETCH type {kind}")


def _d_fetch_ok(r: Reader) -> m.FetchOk:
    rid = r.varint()
    end_of_track = r.uint8()
    if end_of_track > 1:
        raise MoqDecodeError(f"FETCH_OK End Of Track {end_of_track}")
    eg, eo = r.varint(), r.varint()
    return m.FetchOk(rid, end_of_track, eg, eo, _read_params(r), _read_extensions(r))


def _d_publish(r: Reader) -> m.Publish:
    rid, ns, name, alias = r.varint(), _read_tuple(r), r.blob(), r.varint()
    return m.Publish(rid, ns, name, alias, _read_params(r), _read_extensions(r))


_DECODERS: dict[int, Callable[[Reader], m.ControlMessage]] = {
    T_CLIENT_SETUP: lambda r: m.ClientSetup(_read_params(r)),
    T_SERVER_SETUP: lambda r: m.ServerSetup(_read_params(r)),
    T_GOAWAY: lambda r: m.GoAway(r.blob(8192)),
    T_MAX_REQUEST_ID: lambda r: m.MaxRequestId(r.varint()),
    T_REQUESTS_BLOCKED: lambda r: m.RequestsBlocked(r.varint()),
    T_SUBSCRIBE: lambda r: m.Subscribe(r.varint(), _read_tuple(r), r.blob(), _read_params(r)),
    T_SUBSCRIBE_OK: lambda r: m.SubscribeOk(r.varint(), r.varint(), _read_params(r), _read_extensions(r)),
    T_REQUEST_ERROR: lambda r: m.RequestError(r.varint(), r.varint(), r.varint(), r.blob()),
    T_REQUEST_OK: lambda r: m.RequestOk(r.varint(), _read_params(r)),
    T_REQUEST_UPDATE: lambda r: m.RequestUpdate(r.varint(), r.varint(), _read_params(r)),
    T_UNSUBSCRIBE: lambda r: m.Unsubscribe(r.varint()),
    T_PUBLISH_DONE: lambda r: m.PublishDone(r.varint(), r.varint(), r.varint(), r.blob()),
    T_PUBLISH_NAMESPACE: lambda r: m.PublishNamespace(r.varint(), _read_tuple(r), _read_params(r)),
    T_PUBLISH_NAMESPACE_DONE: lambda r: m.PublishNamespaceDone(r.varint()),
    T_PUBLISH_NAMESPACE_CANCEL: lambda r: m.PublishNamespaceCancel(r.varint(), r.varint(), r.blob()),
    T_NAMESPACE: lambda r: m.Namespace(_read_tuple(r)),
    T_NAMESPACE_DONE: lambda r: m.NamespaceDone(_read_tuple(r)),
    T_SUBSCRIBE_NAMESPACE: lambda r: m.SubscribeNamespace(r.varint(), _read_tuple(r), r.varint(), _read_params(r)),
    T_PUBLISH: _d_publish,
    T_PUBLISH_OK: lambda r: m.PublishOk(r.varint(), _read_params(r)),
    T_TRACK_STATUS: lambda r: m.TrackStatus(r.varint(), _read_tuple(r), r.blob(), _read_params(r)),
    T_FETCH: _d_fetch,
    T_FETCH_OK: _d_fetch_ok,
    T_FETCH_CANCEL: lambda r: m.FetchCancel(r.varint()),
}

MESSAGE_TYPES = frozenset(_DECODERS)


def split_message(buf: bytes | bytearray | memoryview) -> tuple[int, bytes, int] | None:
    """The first whole message of a control stream buffer: (type, payload, bytes used), or None
    when more bytes are needed."""
    r = Reader(buf)
    try:
        kind = r.varint()
        size = r.uint16()
        payload = r.raw(size)  # a copy: the caller then trims its (resizable) buffer
    except Truncated:
        return None
    end = r.pos
    r.data.release()
    return kind, payload, end


def decode_message(kind: int, payload: bytes | bytearray | memoryview) -> m.ControlMessage:
    """One message from its type and payload; the payload must be used exactly (s9)."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise MoqDecodeError(f"unknown control message type 0x{kind:x}")
    r = Reader(payload)
    try:
        msg = decoder(r)
    except Truncated as exc:
        raise MoqDecodeError(f"control message 0x{kind:x} shorter than its fields ({exc})") from None
    if r.remaining():
        raise MoqDecodeError(f"control message 0x{kind:x} has {r.remaining()} bytes after its fields")
    return msg
