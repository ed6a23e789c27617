from stockgate.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReserveRequest(_message.Message):
    __slots__ = ("reservation_id", "channel", "lines", "customer", "campaign", "ttl_ms", "partial", "prefer_locations")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    PREFER_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    customer: str
    campaign: str
    ttl_ms: int
    partial: bool
    prefer_locations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ..., customer: _Optional[str] = ..., campaign: _Optional[str] = ..., ttl_ms: _Optional[int] = ..., partial: _Optional[bool] = ..., prefer_locations: _Optional[_Iterable[str]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("reservation_id", "lines")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    def __init__(self, reservation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ExtendRequest(_message.Message):
    __slots__ = ("reservation_id", "ttl_ms")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    ttl_ms: int
    def __init__(self, reservation_id: _Optional[str] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class AmendRequest(_message.Message):
    __slots__ = ("reservation_id", "lines")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.Line]
    def __init__(self, reservation_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.Line, _Mapping]]] = ...) -> None: ...

class ReserveBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ReserveRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ReserveRequest, _Mapping]]] = ...) -> None: ...

class CommitBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CommitRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CommitRequest, _Mapping]]] = ...) -> None: ...

class ReleaseBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ReleaseRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ReleaseRequest, _Mapping]]] = ...) -> None: ...

class ExtendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ExtendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ExtendRequest, _Mapping]]] = ...) -> None: ...

class AmendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[AmendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[AmendRequest, _Mapping]]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_types_pb2.Result]
    def __init__(self, results: _Optional[_Iterable[_Union[_types_pb2.Result, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "timeout_ms", "reserve", "commit", "release", "extend", "amend")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    EXTEND_FIELD_NUMBER: _ClassVar[int]
    AMEND_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    reserve: ReserveRequest
    commit: CommitRequest
    release: ReleaseRequest
    extend: ExtendRequest
    amend: AmendRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., reserve: _Optional[_Union[ReserveRequest, _Mapping]] = ..., commit: _Optional[_Union[CommitRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., extend: _Optional[_Union[ExtendRequest, _Mapping]] = ..., amend: _Optional[_Union[AmendRequest, _Mapping]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("ops",)
    OPS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedCompositeFieldContainer[Operation]
    def __init__(self, ops: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ...) -> None: ...

class OperationResult(_message.Message):
    __slots__ = ("id", "result", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    result: _types_pb2.Result
    error: _types_pb2.Error
    def __init__(self, id: _Optional[int] = ..., result: _Optional[_Union[_types_pb2.Result, _Mapping]] = ..., error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("results", "refused_ids", "refused_error")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_IDS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_ERROR_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[OperationResult]
    refused_ids: _containers.RepeatedScalarFieldContainer[int]
    refused_error: _types_pb2.Error
    def __init__(self, results: _Optional[_Iterable[_Union[OperationResult, _Mapping]]] = ..., refused_ids: _Optional[_Iterable[int]] = ..., refused_error: _Optional[_Union[_types_pb2.Error, _Mapping]] = ...) -> None: ...
