from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("channel", "skus", "from_seq", "coalesce_ms")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    COALESCE_MS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    from_seq: int
    coalesce_ms: int
    def __init__(self, channel: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ..., from_seq: _Optional[int] = ..., coalesce_ms: _Optional[int] = ...) -> None: ...

class Availability(_message.Message):
    __slots__ = ("sku", "available")
    SKU_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    sku: str
    available: int
    def __init__(self, sku: _Optional[str] = ..., available: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("seq", "kind", "t_ms", "sku", "location", "pool", "campaign", "channel", "available", "threshold")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    T_MS_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    t_ms: int
    sku: str
    location: str
    pool: str
    campaign: str
    channel: str
    available: int
    threshold: int
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., t_ms: _Optional[int] = ..., sku: _Optional[str] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., campaign: _Optional[str] = ..., channel: _Optional[str] = ..., available: _Optional[int] = ..., threshold: _Optional[int] = ...) -> None: ...

class WatchUpdate(_message.Message):
    __slots__ = ("seq", "changes", "alerts")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    changes: _containers.RepeatedCompositeFieldContainer[Availability]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, seq: _Optional[int] = ..., changes: _Optional[_Iterable[_Union[Availability, _Mapping]]] = ..., alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...
