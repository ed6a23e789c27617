from stockgate.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AddLocationRequest(_message.Message):
    __slots__ = ("location", "kind")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    location: str
    kind: str
    def __init__(self, location: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class ListLocationsResponse(_message.Message):
    __slots__ = ("locations",)
    class LocationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.ScalarMap[str, str]
    def __init__(self, locations: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Source(_message.Message):
    __slots__ = ("location", "pool")
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    location: str
    pool: str
    def __init__(self, location: _Optional[str] = ..., pool: _Optional[str] = ...) -> None: ...

class SetChannelRequest(_message.Message):
    __slots__ = ("channel", "sources", "allow_presale")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PRESALE_FIELD_NUMBER: _ClassVar[int]
    channel: str
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    allow_presale: bool
    def __init__(self, channel: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., allow_presale: _Optional[bool] = ...) -> None: ...

class Channel(_message.Message):
    __slots__ = ("channel", "sources", "allow_presale")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PRESALE_FIELD_NUMBER: _ClassVar[int]
    channel: str
    sources: _containers.RepeatedCompositeFieldContainer[Source]
    allow_presale: bool
    def __init__(self, channel: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[Source, _Mapping]]] = ..., allow_presale: _Optional[bool] = ...) -> None: ...

class ListChannelsResponse(_message.Message):
    __slots__ = ("channels",)
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[Channel]
    def __init__(self, channels: _Optional[_Iterable[_Union[Channel, _Mapping]]] = ...) -> None: ...

class SetAllocationRuleRequest(_message.Message):
    __slots__ = ("location", "shares", "sku")
    class SharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    location: str
    shares: _containers.ScalarMap[str, int]
    sku: str
    def __init__(self, location: _Optional[str] = ..., shares: _Optional[_Mapping[str, int]] = ..., sku: _Optional[str] = ...) -> None: ...

class SetSafetyStockRequest(_message.Message):
    __slots__ = ("sku", "units", "location", "pool", "channel")
    SKU_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    sku: str
    units: int
    location: str
    pool: str
    channel: str
    def __init__(self, sku: _Optional[str] = ..., units: _Optional[int] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class SetPresaleAllowanceRequest(_message.Message):
    __slots__ = ("sku", "location", "pool", "units")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    pool: str
    units: int
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., units: _Optional[int] = ...) -> None: ...

class ReceiveRequest(_message.Message):
    __slots__ = ("sku", "location", "qty", "pool", "ref")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    qty: int
    pool: str
    ref: str
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., qty: _Optional[int] = ..., pool: _Optional[str] = ..., ref: _Optional[str] = ...) -> None: ...

class ReceiveResponse(_message.Message):
    __slots__ = ("added",)
    class AddedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: _containers.ScalarMap[str, int]
    def __init__(self, added: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AdjustRequest(_message.Message):
    __slots__ = ("sku", "location", "pool", "on_hand", "ref")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    pool: str
    on_hand: int
    ref: str
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., on_hand: _Optional[int] = ..., ref: _Optional[str] = ...) -> None: ...

class AdjustResponse(_message.Message):
    __slots__ = ("variance",)
    VARIANCE_FIELD_NUMBER: _ClassVar[int]
    variance: int
    def __init__(self, variance: _Optional[int] = ...) -> None: ...

class MoveRequest(_message.Message):
    __slots__ = ("sku", "location", "from_pool", "to_pool", "qty")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    FROM_POOL_FIELD_NUMBER: _ClassVar[int]
    TO_POOL_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    from_pool: str
    to_pool: str
    qty: int
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., from_pool: _Optional[str] = ..., to_pool: _Optional[str] = ..., qty: _Optional[int] = ...) -> None: ...

class TransferOutRequest(_message.Message):
    __slots__ = ("transfer_id", "sku", "from_location", "from_pool", "to_location", "to_pool", "qty")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    FROM_LOCATION_FIELD_NUMBER: _ClassVar[int]
    FROM_POOL_FIELD_NUMBER: _ClassVar[int]
    TO_LOCATION_FIELD_NUMBER: _ClassVar[int]
    TO_POOL_FIELD_NUMBER: _ClassVar[int]
    QTY_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    sku: str
    from_location: str
    from_pool: str
    to_location: str
    to_pool: str
    qty: int
    def __init__(self, transfer_id: _Optional[str] = ..., sku: _Optional[str] = ..., from_location: _Optional[str] = ..., from_pool: _Optional[str] = ..., to_location: _Optional[str] = ..., to_pool: _Optional[str] = ..., qty: _Optional[int] = ...) -> None: ...

class TransferInRequest(_message.Message):
    __slots__ = ("transfer_id",)
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    transfer_id: str
    def __init__(self, transfer_id: _Optional[str] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class StockRow(_message.Message):
    __slots__ = ("sku", "location", "pool", "on_hand")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    pool: str
    on_hand: int
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., on_hand: _Optional[int] = ...) -> None: ...

class ImportChunk(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[StockRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[StockRow, _Mapping]]] = ...) -> None: ...

class ImportResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    def __init__(self, rows: _Optional[int] = ...) -> None: ...

class CreateCampaignRequest(_message.Message):
    __slots__ = ("campaign_id", "channels", "start_ms", "end_ms", "location", "source_pool", "quotas", "customer_limit")
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POOL_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    start_ms: int
    end_ms: int
    location: str
    source_pool: str
    quotas: _containers.ScalarMap[str, int]
    customer_limit: int
    def __init__(self, campaign_id: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., location: _Optional[str] = ..., source_pool: _Optional[str] = ..., quotas: _Optional[_Mapping[str, int]] = ..., customer_limit: _Optional[int] = ...) -> None: ...

class CampaignRequest(_message.Message):
    __slots__ = ("campaign_id",)
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    def __init__(self, campaign_id: _Optional[str] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("campaign_id", "channels", "start_ms", "end_ms", "location", "source_pool", "quotas", "customer_limit", "state", "carved", "returned", "pool")
    class QuotasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CarvedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ReturnedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAMPAIGN_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POOL_FIELD_NUMBER: _ClassVar[int]
    QUOTAS_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CARVED_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    campaign_id: str
    channels: _containers.RepeatedScalarFieldContainer[str]
    start_ms: int
    end_ms: int
    location: str
    source_pool: str
    quotas: _containers.ScalarMap[str, int]
    customer_limit: int
    state: str
    carved: _containers.ScalarMap[str, int]
    returned: _containers.ScalarMap[str, int]
    pool: str
    def __init__(self, campaign_id: _Optional[str] = ..., channels: _Optional[_Iterable[str]] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., location: _Optional[str] = ..., source_pool: _Optional[str] = ..., quotas: _Optional[_Mapping[str, int]] = ..., customer_limit: _Optional[int] = ..., state: _Optional[str] = ..., carved: _Optional[_Mapping[str, int]] = ..., returned: _Optional[_Mapping[str, int]] = ..., pool: _Optional[str] = ...) -> None: ...

class ListCampaignsResponse(_message.Message):
    __slots__ = ("campaigns",)
    CAMPAIGNS_FIELD_NUMBER: _ClassVar[int]
    campaigns: _containers.RepeatedCompositeFieldContainer[Campaign]
    def __init__(self, campaigns: _Optional[_Iterable[_Union[Campaign, _Mapping]]] = ...) -> None: ...

class GetStockRequest(_message.Message):
    __slots__ = ("sku",)
    SKU_FIELD_NUMBER: _ClassVar[int]
    sku: str
    def __init__(self, sku: _Optional[str] = ...) -> None: ...

class BucketStock(_message.Message):
    __slots__ = ("sku", "location", "pool", "on_hand", "held", "available", "presale_units", "safety_stock")
    SKU_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    PRESALE_UNITS_FIELD_NUMBER: _ClassVar[int]
    SAFETY_STOCK_FIELD_NUMBER: _ClassVar[int]
    sku: str
    location: str
    pool: str
    on_hand: int
    held: int
    available: int
    presale_units: int
    safety_stock: int
    def __init__(self, sku: _Optional[str] = ..., location: _Optional[str] = ..., pool: _Optional[str] = ..., on_hand: _Optional[int] = ..., held: _Optional[int] = ..., available: _Optional[int] = ..., presale_units: _Optional[int] = ..., safety_stock: _Optional[int] = ...) -> None: ...

class GetStockResponse(_message.Message):
    __slots__ = ("buckets",)
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[BucketStock]
    def __init__(self, buckets: _Optional[_Iterable[_Union[BucketStock, _Mapping]]] = ...) -> None: ...

class GetAvailabilityRequest(_message.Message):
    __slots__ = ("channel", "skus", "campaign", "prefer_locations")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SKUS_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    PREFER_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    channel: str
    skus: _containers.RepeatedScalarFieldContainer[str]
    campaign: str
    prefer_locations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, channel: _Optional[str] = ..., skus: _Optional[_Iterable[str]] = ..., campaign: _Optional[str] = ..., prefer_locations: _Optional[_Iterable[str]] = ...) -> None: ...

class GetAvailabilityResponse(_message.Message):
    __slots__ = ("available",)
    class AvailableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    available: _containers.ScalarMap[str, int]
    def __init__(self, available: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetReservationRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReadJournalRequest(_message.Message):
    __slots__ = ("from_seq", "limit")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    limit: int
    def __init__(self, from_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class JournalEvent(_message.Message):
    __slots__ = ("seq", "kind", "t_ms", "body")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    T_MS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    t_ms: int
    body: bytes
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., t_ms: _Optional[int] = ..., body: _Optional[bytes] = ...) -> None: ...

class ReadJournalResponse(_message.Message):
    __slots__ = ("events", "last_seq")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[JournalEvent]
    last_seq: int
    def __init__(self, events: _Optional[_Iterable[_Union[JournalEvent, _Mapping]]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("ok", "drifts", "buckets", "live_reservations", "events", "totals")
    class TotalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OK_FIELD_NUMBER: _ClassVar[int]
    DRIFTS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    LIVE_RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    drifts: _containers.RepeatedScalarFieldContainer[str]
    buckets: int
    live_reservations: int
    events: int
    totals: _containers.ScalarMap[str, int]
    def __init__(self, ok: _Optional[bool] = ..., drifts: _Optional[_Iterable[str]] = ..., buckets: _Optional[int] = ..., live_reservations: _Optional[int] = ..., events: _Optional[int] = ..., totals: _Optional[_Mapping[str, int]] = ...) -> None: ...
