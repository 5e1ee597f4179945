"""Events a :class:`~.session.ServerSession` hands to the layer above (rml_rtmp's
``ServerSessionEvent``), each answered, where it asks for a decision, by an accept/reject call."""

from __future__ import annotations

from dataclasses import dataclass, field

from trackmesh.transports.rtmp.values import AmfValue

__all__ = [
    "AudioData",
    "Closed",
    "ConnectRequested",
    "Event",
    "MetadataReceived",
    "PublishRequested",
    "Unpublished",
    "VideoData",
]


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """``connect``: answer with accept_connect() or reject_connect()."""

    app: str
    tc_url: str
    flash_ver: str
    object_encoding: int
    properties: dict[str, AmfValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """``publish``: the stream key (the publishing name, query string included, as sent) on a
    message stream. Answer with accept_publish(stream_id) or reject_publish(stream_id, ...)."""

    stream_id: int
    stream_key: str
    publish_type: str


@dataclass(frozen=True, slots=True)
class MetadataReceived:
    """``@setDataFrame``/``onMetaData``: informative only (codecs come from sequence headers)."""

    stream_id: int
    metadata: dict[str, AmfValue]


@dataclass(frozen=True, slots=True)
class VideoData:
    """A video message on a publishing stream: the FLV/Enhanced RTMP tag body (see :mod:`.flv`)
    and its timestamp in ms, unwrapped past 2^32 (so it keeps increasing)."""

    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AudioData:
    """An audio message on a publishing stream, as :class:`VideoData`."""

    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Unpublished:
    """A publishing stream ended (FCUnpublish, deleteStream, closeStream or the connection)."""

    stream_id: int
    stream_key: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over: flush data_to_send(), then close the connection. ``error`` is True
    for a protocol error or a timeout (the reason says which), False for a clean end."""

    reason: str
    error: bool


Event = ConnectRequested | PublishRequested | MetadataReceived | VideoData | AudioData | Unpublished | Closed
