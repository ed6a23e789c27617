from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_OK: _ClassVar[Outcome]
    OUTCOME_PARTIAL: _ClassVar[Outcome]
    OUTCOME_INSUFFICIENT_STOCK: _ClassVar[Outcome]
    OUTCOME_CUSTOMER_LIMIT: _ClassVar[Outcome]
    OUTCOME_CAMPAIGN_NOT_ACTIVE: _ClassVar[Outcome]
    OUTCOME_CHANNEL_NOT_IN_CAMPAIGN: _ClassVar[Outcome]
    OUTCOME_UNKNOWN_CAMPAIGN: _ClassVar[Outcome]
    OUTCOME_UNKNOWN_SKU: _ClassVar[Outcome]
    OUTCOME_ID_CONFLICT: _ClassVar[Outcome]
    OUTCOME_NOT_FOUND: _ClassVar[Outcome]
    OUTCOME_NOT_HELD: _ClassVar[Outcome]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_HELD: _ClassVar[State]
    STATE_COMMITTED: _ClassVar[State]
    STATE_RELEASED: _ClassVar[State]
    STATE_EXPIRED: _ClassVar[State]
OUTCOME_OK: Outcome
OUTCOME_PARTIAL: Outcome
OUTCOME_INSUFFICIENT_STOCK: Outcome
OUTCOME_CUSTOMER_LIMIT: Outcome
OUTCOME_CAMPAIGN_NOT_ACTIVE: Outcome
OUTCOME_CHANNEL_NOT_IN_CAMPAIGN: Outcome
OUTCOME_UNKNOWN_CAMPAIGN: Outcome
OUTCOME_UNKNOWN_SKU: Outcome
OUTCOME_ID_CONFLICT: Outcome
OUTCOME_NOT_FOUND: Outcome
OUTCOME_NOT_HELD: Outcome
STATE_UNSPECIFIED: State
STATE_HELD: State
STATE_COMMITTED: State
STATE_RELEASED: State
STATE_EXPIRED: State

class Line(_message.Message):
    __slots__ = ("sku", "qty")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    qty: int
    def __init__(self, sku: _Optional[str] = ..., qty: _Optional[int] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("location", "pool", "qty")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    location: str
    pool: str
    qty: int
    def __init__(self, location: _Optional[str] = ..., pool: _Optional[str] = ..., qty: _Optional[int] = ...) -> None: ...

class LineResult(_message.Message):
    __slots__ = ("sku", "qty", "granted", "outcome", "allocations")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ALLOCATIONS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    qty: int
    granted: int
    outcome: Outcome
    allocations: _containers.RepeatedCompositeFieldContainer[Allocation]
    def __init__(self, sku: _Optional[str] = ..., qty: _Optional[int] = ..., granted: _Optional[int] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., allocations: _Optional[_Iterable[_Union[Allocation, _Mapping]]] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("reservation_id", "channel", "state", "lines", "customer", "campaign", "created_ms", "expires_ms", "resolved_ms", "committed")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_MS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    channel: str
    state: State
    lines: _containers.RepeatedCompositeFieldContainer[LineResult]
    customer: str
    campaign: str
    created_ms: int
    expires_ms: int
    resolved_ms: int
    committed: _containers.RepeatedCompositeFieldContainer[Line]
    def __init__(self, reservation_id: _Optional[str] = ..., channel: _Optional[str] = ..., state: _Optional[_Union[State, str]] = ..., lines: _Optional[_Iterable[_Union[LineResult, _Mapping]]] = ..., customer: _Optional[str] = ..., campaign: _Optional[str] = ..., created_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., resolved_ms: _Optional[int] = ..., committed: _Optional[_Iterable[_Union[Line, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("outcome", "reservation", "replayed", "lines")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    reservation: Reservation
    replayed: bool
    lines: _containers.RepeatedCompositeFieldContainer[LineResult]
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., reservation: _Optional[_Union[Reservation, _Mapping]] = ..., replayed: _Optional[bool] = ..., lines: _Optional[_Iterable[_Union[LineResult, _Mapping]]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
