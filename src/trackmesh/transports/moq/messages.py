"""MoQ control messages (draft-ietf-moq-transport-16 s9) as plain dataclasses.

The classes say what a message means; :mod:`.codec16` says how draft-16 lays it out. Parameters
and track extensions are ``{type: value}`` with an int value for an even type and bytes for an
odd one (draft-16 s1.4.2, Key-Value-Pair).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ClientSetup",
    "ControlMessage",
    "Fetch",
    "FetchCancel",
    "FetchOk",
    "GoAway",
    "MaxRequestId",
    "Namespace",
    "NamespaceDone",
    "Params",
    "Publish",
    "PublishDone",
    "PublishNamespace",
    "PublishNamespaceCancel",
    "PublishNamespaceDone",
    "PublishOk",
    "RequestError",
    "RequestOk",
    "RequestUpdate",
    "RequestsBlocked",
    "ServerSetup",
    "Subscribe",
    "SubscribeNamespace",
    "SubscribeOk",
    "SubscribeTracks",
    "TrackNamespace",
    "TrackStatus",
    "Unsubscribe",
]

Params = dict[int, int | bytes]
TrackNamespace = tuple[bytes, ...]

# Setup parameters (draft-16 s9.3.1).
SETUP_PATH = 0x01
SETUP_MAX_REQUEST_ID = 0x02
SETUP_AUTHORIZATION_TOKEN = 0x03
SETUP_MAX_AUTH_TOKEN_CACHE_SIZE = 0x04
SETUP_AUTHORITY = 0x05
SETUP_IMPLEMENTATION = 0x07

# Message parameters (draft-16 s9.2).
PARAM_DELIVERY_TIMEOUT = 0x02
PARAM_AUTHORIZATION_TOKEN = 0x03
PARAM_RENDEZVOUS_TIMEOUT = 0x04  # draft-18 on: wait this many ms for a publisher to appear
PARAM_MAX_CACHE_DURATION = 0x04
PARAM_EXPIRES = 0x08
PARAM_LARGEST_OBJECT = 0x09
PARAM_PUBLISHER_PRIORITY = 0x0E
PARAM_FORWARD = 0x10
PARAM_SUBSCRIBER_PRIORITY = 0x20
PARAM_SUBSCRIPTION_FILTER = 0x21
PARAM_GROUP_ORDER = 0x22
PARAM_FILL_PARAMETERS = 0x23  # draft-20: a SUBSCRIBE's joining range, served as a fill FETCH stream

# Subscription filter types (draft-16 s5.1.2).
FILTER_NEXT_GROUP_START = 0x1
FILTER_LATEST_OBJECT = 0x2
FILTER_ABSOLUTE_START = 0x3
FILTER_ABSOLUTE_RANGE = 0x4

#: A FETCH End Group meaning "up to the largest object" (draft-20 filters with no end).
FETCH_OPEN_END = (1 << 62) - 1

# FETCH types (draft-16 s9.16).
FETCH_STANDALONE = 0x1
FETCH_RELATIVE_JOINING = 0x2
FETCH_ABSOLUTE_JOINING = 0x3

# SUBSCRIBE_NAMESPACE options (draft-16 s9.25): which answers the subscriber wants.
NAMESPACE_OPTION_PUBLISH = 0x0
NAMESPACE_OPTION_NAMESPACE = 0x1
NAMESPACE_OPTION_BOTH = 0x2


@dataclass(slots=True)
class ClientSetup:
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class ServerSetup:
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class GoAway:
    new_session_uri: bytes = b""
    timeout: int = 0  # draft-20: milliseconds before the sender closes (absent at draft-16)


@dataclass(slots=True)
class MaxRequestId:
    request_id: int


@dataclass(slots=True)
class RequestsBlocked:
    maximum_request_id: int


@dataclass(slots=True)
class Subscribe:
    request_id: int
    namespace: TrackNamespace
    name: bytes
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class SubscribeOk:
    request_id: int
    track_alias: int
    params: Params = field(default_factory=dict)
    extensions: Params = field(default_factory=dict)


@dataclass(slots=True)
class RequestError:
    request_id: int
    error_code: int
    retry_interval: int = 0
    reason: bytes = b""


@dataclass(slots=True)
class RequestOk:
    request_id: int
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class RequestUpdate:
    request_id: int
    existing_request_id: int
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    request_id: int


@dataclass(slots=True)
class PublishDone:
    request_id: int
    status_code: int
    stream_count: int
    reason: bytes = b""


@dataclass(slots=True)
class PublishNamespace:
    request_id: int
    namespace: TrackNamespace
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class PublishNamespaceDone:
    request_id: int


@dataclass(slots=True)
class PublishNamespaceCancel:
    request_id: int
    error_code: int
    reason: bytes = b""


@dataclass(slots=True)
class Namespace:
    suffix: TrackNamespace


@dataclass(slots=True)
class NamespaceDone:
    suffix: TrackNamespace


@dataclass(slots=True)
class SubscribeNamespace:
    request_id: int
    prefix: TrackNamespace
    options: int = NAMESPACE_OPTION_BOTH
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class SubscribeTracks:
    """Draft-20 s10.20: the tracks of the namespaces under ``prefix``, each offered by a PUBLISH."""

    request_id: int
    prefix: TrackNamespace
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    request_id: int
    namespace: TrackNamespace
    name: bytes
    track_alias: int
    params: Params = field(default_factory=dict)
    extensions: Params = field(default_factory=dict)


@dataclass(slots=True)
class PublishOk:
    request_id: int
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class TrackStatus:
    request_id: int
    namespace: TrackNamespace
    name: bytes
    params: Params = field(default_factory=dict)


@dataclass(slots=True)
class Fetch:
    request_id: int
    fetch_type: int
    namespace: TrackNamespace = ()
    name: bytes = b""
    start_group: int = 0
    start_object: int = 0
    end_group: int = 0
    end_object: int = 0
    joining_request_id: int = 0
    joining_start: int = 0
    params: Params = field(default_factory=dict)
    # Draft-20 LOCATION_FILTER Relative Start: this many groups before the next one (1: the current).
    relative_groups: int | None = None


@dataclass(slots=True)
class FetchOk:
    request_id: int
    end_of_track: int
    end_group: int
    end_object: int
    params: Params = field(default_factory=dict)
    extensions: Params = field(default_factory=dict)


@dataclass(slots=True)
class FetchCancel:
    request_id: int


ControlMessage = (
    ClientSetup
    | ServerSetup
    | GoAway
    | MaxRequestId
    | RequestsBlocked
    | Subscribe
    | SubscribeOk
    | RequestError
    | RequestOk
    | RequestUpdate
    | Unsubscribe
    | PublishDone
    | PublishNamespace
    | PublishNamespaceDone
    | PublishNamespaceCancel
    | Namespace
    | NamespaceDone
    | SubscribeNamespace
    | SubscribeTracks
    | Publish
    | PublishOk
    | TrackStatus
    | Fetch
    | FetchOk
    | FetchCancel
)
