from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbabilityBand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBABILITY_BAND_UNSPECIFIED: _ClassVar[ProbabilityBand]
    PROBABILITY_BAND_VERY_HIGH: _ClassVar[ProbabilityBand]
    PROBABILITY_BAND_HIGH: _ClassVar[ProbabilityBand]
    PROBABILITY_BAND_POSSIBLE: _ClassVar[ProbabilityBand]
    PROBABILITY_BAND_LOW: _ClassVar[ProbabilityBand]

class Agreement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGREEMENT_UNSPECIFIED: _ClassVar[Agreement]
    AGREEMENT_EXACT: _ClassVar[Agreement]
    AGREEMENT_STRONG: _ClassVar[Agreement]
    AGREEMENT_WEAK: _ClassVar[Agreement]
    AGREEMENT_DISAGREES: _ClassVar[Agreement]
    AGREEMENT_MISSING: _ClassVar[Agreement]
    AGREEMENT_NOT_COMPARED: _ClassVar[Agreement]
PROBABILITY_BAND_UNSPECIFIED: ProbabilityBand
PROBABILITY_BAND_VERY_HIGH: ProbabilityBand
PROBABILITY_BAND_HIGH: ProbabilityBand
PROBABILITY_BAND_POSSIBLE: ProbabilityBand
PROBABILITY_BAND_LOW: ProbabilityBand
AGREEMENT_UNSPECIFIED: Agreement
AGREEMENT_EXACT: Agreement
AGREEMENT_STRONG: Agreement
AGREEMENT_WEAK: Agreement
AGREEMENT_DISAGREES: Agreement
AGREEMENT_MISSING: Agreement
AGREEMENT_NOT_COMPARED: Agreement

class FieldEvidence(_message.Message):
    __slots__ = ("field", "agreement", "weight")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    field: str
    agreement: Agreement
    weight: float
    def __init__(self, field: _Optional[str] = ..., agreement: _Optional[_Union[Agreement, str]] = ..., weight: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("agency", "reference", "band", "evidence", "probability")
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    agency: str
    reference: str
    band: ProbabilityBand
    evidence: _containers.RepeatedCompositeFieldContainer[FieldEvidence]
    probability: float
    def __init__(self, agency: _Optional[str] = ..., reference: _Optional[str] = ..., band: _Optional[_Union[ProbabilityBand, str]] = ..., evidence: _Optional[_Iterable[_Union[FieldEvidence, _Mapping]]] = ..., probability: _Optional[float] = ...) -> None: ...

class EncodingHeader(_message.Message):
    __slots__ = ("schema_fingerprint", "key_version")
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    schema_fingerprint: str
    key_version: int
    def __init__(self, schema_fingerprint: _Optional[str] = ..., key_version: _Optional[int] = ...) -> None: ...

class EncodedRecord(_message.Message):
    __slots__ = ("reference", "field_filters", "record_filter", "block_keys", "salt_tags")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FILTERS_FIELD_NUMBER: _ClassVar[int]
    RECORD_FILTER_FIELD_NUMBER: _ClassVar[int]
    BLOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    SALT_TAGS_FIELD_NUMBER: _ClassVar[int]
    reference: str
    field_filters: _containers.RepeatedScalarFieldContainer[bytes]
    record_filter: bytes
    block_keys: _containers.RepeatedScalarFieldContainer[int]
    salt_tags: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, reference: _Optional[str] = ..., field_filters: _Optional[_Iterable[bytes]] = ..., record_filter: _Optional[bytes] = ..., block_keys: _Optional[_Iterable[int]] = ..., salt_tags: _Optional[_Iterable[int]] = ...) -> None: ...

class EncodedColumns(_message.Message):
    __slots__ = ("references", "field_filters", "field_present", "record_filters", "block_keys", "salt_tags", "form_of")
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    FIELD_FILTERS_FIELD_NUMBER: _ClassVar[int]
    FIELD_PRESENT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FILTERS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_KEYS_FIELD_NUMBER: _ClassVar[int]
    SALT_TAGS_FIELD_NUMBER: _ClassVar[int]
    FORM_OF_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedScalarFieldContainer[str]
    field_filters: _containers.RepeatedScalarFieldContainer[bytes]
    field_present: bytes
    record_filters: bytes
    block_keys: bytes
    salt_tags: bytes
    form_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, references: _Optional[_Iterable[str]] = ..., field_filters: _Optional[_Iterable[bytes]] = ..., field_present: _Optional[bytes] = ..., record_filters: _Optional[bytes] = ..., block_keys: _Optional[bytes] = ..., salt_tags: _Optional[bytes] = ..., form_of: _Optional[_Iterable[str]] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("header", "columns")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    header: EncodingHeader
    columns: EncodedColumns
    def __init__(self, header: _Optional[_Union[EncodingHeader, _Mapping]] = ..., columns: _Optional[_Union[EncodedColumns, _Mapping]] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("received", "inserted", "replaced", "unchanged", "forms")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    INSERTED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    FORMS_FIELD_NUMBER: _ClassVar[int]
    received: int
    inserted: int
    replaced: int
    unchanged: int
    forms: int
    def __init__(self, received: _Optional[int] = ..., inserted: _Optional[int] = ..., replaced: _Optional[int] = ..., unchanged: _Optional[int] = ..., forms: _Optional[int] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("references",)
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    references: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, references: _Optional[_Iterable[str]] = ...) -> None: ...

class WithdrawResponse(_message.Message):
    __slots__ = ("withdrawn",)
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    withdrawn: int
    def __init__(self, withdrawn: _Optional[int] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("header", "max_candidates", "on_behalf_of", "queries", "purpose_code", "hypotheses")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_CODE_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    header: EncodingHeader
    max_candidates: int
    on_behalf_of: str
    queries: _containers.RepeatedCompositeFieldContainer[EncodedRecord]
    purpose_code: str
    hypotheses: _containers.RepeatedCompositeFieldContainer[EncodedRecord]
    def __init__(self, header: _Optional[_Union[EncodingHeader, _Mapping]] = ..., max_candidates: _Optional[int] = ..., on_behalf_of: _Optional[str] = ..., queries: _Optional[_Iterable[_Union[EncodedRecord, _Mapping]]] = ..., purpose_code: _Optional[str] = ..., hypotheses: _Optional[_Iterable[_Union[EncodedRecord, _Mapping]]] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("candidates",)
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class LinkRequest(_message.Message):
    __slots__ = ("min_probability",)
    MIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    min_probability: float
    def __init__(self, min_probability: _Optional[float] = ...) -> None: ...

class LinkProgress(_message.Message):
    __slots__ = ("stage", "done", "total", "result_id")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    stage: str
    done: int
    total: int
    result_id: str
    def __init__(self, stage: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., result_id: _Optional[str] = ...) -> None: ...

class GetLinkResultRequest(_message.Message):
    __slots__ = ("result_id", "page_size", "page_token")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    page_size: int
    page_token: str
    def __init__(self, result_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ClusterMember(_message.Message):
    __slots__ = ("agency", "reference")
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    agency: str
    reference: str
    def __init__(self, agency: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class ClusterEdge(_message.Message):
    __slots__ = ("left", "right", "band", "probability", "evidence")
    LEFT_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    left: int
    right: int
    band: ProbabilityBand
    probability: float
    evidence: _containers.RepeatedCompositeFieldContainer[FieldEvidence]
    def __init__(self, left: _Optional[int] = ..., right: _Optional[int] = ..., band: _Optional[_Union[ProbabilityBand, str]] = ..., probability: _Optional[float] = ..., evidence: _Optional[_Iterable[_Union[FieldEvidence, _Mapping]]] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("cluster_id", "members", "edges")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    members: _containers.RepeatedCompositeFieldContainer[ClusterMember]
    edges: _containers.RepeatedCompositeFieldContainer[ClusterEdge]
    def __init__(self, cluster_id: _Optional[str] = ..., members: _Optional[_Iterable[_Union[ClusterMember, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[ClusterEdge, _Mapping]]] = ...) -> None: ...

class GetLinkResultResponse(_message.Message):
    __slots__ = ("clusters", "next_page_token", "total_clusters", "total_records")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RECORDS_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    next_page_token: str
    total_clusters: int
    total_records: int
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_clusters: _Optional[int] = ..., total_records: _Optional[int] = ...) -> None: ...

class GetLinkedRecordsRequest(_message.Message):
    __slots__ = ("result_id", "page_size", "page_token")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    page_size: int
    page_token: str
    def __init__(self, result_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class LinkedAgency(_message.Message):
    __slots__ = ("agency", "band")
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    agency: str
    band: ProbabilityBand
    def __init__(self, agency: _Optional[str] = ..., band: _Optional[_Union[ProbabilityBand, str]] = ...) -> None: ...

class LinkedRecord(_message.Message):
    __slots__ = ("reference", "cluster_id", "agencies")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCIES_FIELD_NUMBER: _ClassVar[int]
    reference: str
    cluster_id: str
    agencies: _containers.RepeatedCompositeFieldContainer[LinkedAgency]
    def __init__(self, reference: _Optional[str] = ..., cluster_id: _Optional[str] = ..., agencies: _Optional[_Iterable[_Union[LinkedAgency, _Mapping]]] = ...) -> None: ...

class GetLinkedRecordsResponse(_message.Message):
    __slots__ = ("result_id", "records", "next_page_token")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    records: _containers.RepeatedCompositeFieldContainer[LinkedRecord]
    next_page_token: str
    def __init__(self, result_id: _Optional[str] = ..., records: _Optional[_Iterable[_Union[LinkedRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MatcherStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AgencyCount(_message.Message):
    __slots__ = ("agency", "records")
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    agency: str
    records: int
    def __init__(self, agency: _Optional[str] = ..., records: _Optional[int] = ...) -> None: ...

class MatcherStatusResponse(_message.Message):
    __slots__ = ("schema_fingerprint", "key_version", "agencies", "indexed_records", "version")
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENCIES_FIELD_NUMBER: _ClassVar[int]
    INDEXED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    schema_fingerprint: str
    key_version: int
    agencies: _containers.RepeatedCompositeFieldContainer[AgencyCount]
    indexed_records: int
    version: str
    def __init__(self, schema_fingerprint: _Optional[str] = ..., key_version: _Optional[int] = ..., agencies: _Optional[_Iterable[_Union[AgencyCount, _Mapping]]] = ..., indexed_records: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class SignedStatement(_message.Message):
    __slots__ = ("statement", "signature", "certificate")
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    statement: bytes
    signature: bytes
    certificate: bytes
    def __init__(self, statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("head", "receipt")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    head: SignedStatement
    receipt: SignedStatement
    def __init__(self, head: _Optional[_Union[SignedStatement, _Mapping]] = ..., receipt: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class AnchorHeadRequest(_message.Message):
    __slots__ = ("head",)
    HEAD_FIELD_NUMBER: _ClassVar[int]
    head: SignedStatement
    def __init__(self, head: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class AnchorHeadResponse(_message.Message):
    __slots__ = ("receipt", "matcher_head")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    MATCHER_HEAD_FIELD_NUMBER: _ClassVar[int]
    receipt: AuditReceipt
    matcher_head: SignedStatement
    def __init__(self, receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., matcher_head: _Optional[_Union[SignedStatement, _Mapping]] = ...) -> None: ...

class GetAnchorsRequest(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    def __init__(self, owner: _Optional[str] = ...) -> None: ...

class GetAnchorsResponse(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[AuditReceipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[AuditReceipt, _Mapping]]] = ...) -> None: ...

class AnchorAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AnchorAuditResponse(_message.Message):
    __slots__ = ("receipt", "seq")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    receipt: AuditReceipt
    seq: int
    def __init__(self, receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("identifiers", "max_candidates", "purpose_code", "note", "on_behalf_of")
    class IdentifiersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IDENTIFIERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_CODE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    identifiers: _containers.ScalarMap[str, str]
    max_candidates: int
    purpose_code: str
    note: str
    on_behalf_of: str
    def __init__(self, identifiers: _Optional[_Mapping[str, str]] = ..., max_candidates: _Optional[int] = ..., purpose_code: _Optional[str] = ..., note: _Optional[str] = ..., on_behalf_of: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("lookup_id", "candidates", "notes")
    LOOKUP_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    lookup_id: str
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lookup_id: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class DiscloseRequest(_message.Message):
    __slots__ = ("reference", "on_behalf_of", "purpose_code", "note", "priority")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_CODE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    reference: str
    on_behalf_of: str
    purpose_code: str
    note: str
    priority: str
    def __init__(self, reference: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., purpose_code: _Optional[str] = ..., note: _Optional[str] = ..., priority: _Optional[str] = ...) -> None: ...

class DiscloseResponse(_message.Message):
    __slots__ = ("disclosure_id", "agency", "reference", "fields", "withheld_fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DISCLOSURE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELDS_FIELD_NUMBER: _ClassVar[int]
    disclosure_id: str
    agency: str
    reference: str
    fields: _containers.ScalarMap[str, str]
    withheld_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, disclosure_id: _Optional[str] = ..., agency: _Optional[str] = ..., reference: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., withheld_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class FetchLinkedRequest(_message.Message):
    __slots__ = ("result_id",)
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    def __init__(self, result_id: _Optional[str] = ...) -> None: ...

class FetchLinkedResponse(_message.Message):
    __slots__ = ("result_id", "linked_records")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    LINKED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    linked_records: int
    def __init__(self, result_id: _Optional[str] = ..., linked_records: _Optional[int] = ...) -> None: ...

class ListLinkedRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "on_behalf_of")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    on_behalf_of: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., on_behalf_of: _Optional[str] = ...) -> None: ...

class ListLinkedResponse(_message.Message):
    __slots__ = ("result_id", "fetched_at", "records", "next_page_token", "total_records")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    FETCHED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_RECORDS_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    fetched_at: str
    records: _containers.RepeatedCompositeFieldContainer[LocalLinkedRecord]
    next_page_token: str
    total_records: int
    def __init__(self, result_id: _Optional[str] = ..., fetched_at: _Optional[str] = ..., records: _Optional[_Iterable[_Union[LocalLinkedRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_records: _Optional[int] = ...) -> None: ...

class LocalLinkedRecord(_message.Message):
    __slots__ = ("local_id", "record")
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    local_id: str
    record: LinkedRecord
    def __init__(self, local_id: _Optional[str] = ..., record: _Optional[_Union[LinkedRecord, _Mapping]] = ...) -> None: ...

class ResolveReferenceRequest(_message.Message):
    __slots__ = ("reference", "purpose")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    reference: str
    purpose: str
    def __init__(self, reference: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class ResolveReferenceResponse(_message.Message):
    __slots__ = ("reference", "local_id")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ID_FIELD_NUMBER: _ClassVar[int]
    reference: str
    local_id: str
    def __init__(self, reference: _Optional[str] = ..., local_id: _Optional[str] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatusResponse(_message.Message):
    __slots__ = ("agency", "records", "published", "pending", "schema_fingerprint", "key_version", "version", "quality")
    AGENCY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    agency: str
    records: int
    published: int
    pending: int
    schema_fingerprint: str
    key_version: int
    version: str
    quality: DataQuality
    def __init__(self, agency: _Optional[str] = ..., records: _Optional[int] = ..., published: _Optional[int] = ..., pending: _Optional[int] = ..., schema_fingerprint: _Optional[str] = ..., key_version: _Optional[int] = ..., version: _Optional[str] = ..., quality: _Optional[_Union[DataQuality, _Mapping]] = ...) -> None: ...

class FieldMissing(_message.Message):
    __slots__ = ("field", "missing", "share")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    field: str
    missing: int
    share: float
    def __init__(self, field: _Optional[str] = ..., missing: _Optional[int] = ..., share: _Optional[float] = ...) -> None: ...

class RejectReason(_message.Message):
    __slots__ = ("reason", "field", "rows")
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    field: str
    rows: int
    def __init__(self, reason: _Optional[str] = ..., field: _Optional[str] = ..., rows: _Optional[int] = ...) -> None: ...

class SourceQuality(_message.Message):
    __slots__ = ("source", "ingested_at", "rows_read", "stored", "superseded", "rejected_rows", "rejected_share", "rejected", "invalid_nhs_numbers", "missing")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_FIELD_NUMBER: _ClassVar[int]
    ROWS_READ_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    INVALID_NHS_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    source: str
    ingested_at: str
    rows_read: int
    stored: int
    superseded: int
    rejected_rows: int
    rejected_share: float
    rejected: _containers.RepeatedCompositeFieldContainer[RejectReason]
    invalid_nhs_numbers: int
    missing: _containers.RepeatedCompositeFieldContainer[FieldMissing]
    def __init__(self, source: _Optional[str] = ..., ingested_at: _Optional[str] = ..., rows_read: _Optional[int] = ..., stored: _Optional[int] = ..., superseded: _Optional[int] = ..., rejected_rows: _Optional[int] = ..., rejected_share: _Optional[float] = ..., rejected: _Optional[_Iterable[_Union[RejectReason, _Mapping]]] = ..., invalid_nhs_numbers: _Optional[int] = ..., missing: _Optional[_Iterable[_Union[FieldMissing, _Mapping]]] = ...) -> None: ...

class LinkQuality(_message.Message):
    __slots__ = ("result_id", "fetched_at", "linked", "linked_share", "linked_without_nhs_number", "linked_share_without_nhs_number")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    FETCHED_AT_FIELD_NUMBER: _ClassVar[int]
    LINKED_FIELD_NUMBER: _ClassVar[int]
    LINKED_SHARE_FIELD_NUMBER: _ClassVar[int]
    LINKED_WITHOUT_NHS_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LINKED_SHARE_WITHOUT_NHS_NUMBER_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    fetched_at: str
    linked: int
    linked_share: float
    linked_without_nhs_number: int
    linked_share_without_nhs_number: float
    def __init__(self, result_id: _Optional[str] = ..., fetched_at: _Optional[str] = ..., linked: _Optional[int] = ..., linked_share: _Optional[float] = ..., linked_without_nhs_number: _Optional[int] = ..., linked_share_without_nhs_number: _Optional[float] = ...) -> None: ...

class DataQuality(_message.Message):
    __slots__ = ("sources", "records", "missing", "nhs_number_field", "with_nhs_number", "nhs_number_share", "without_nhs_number", "link")
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    NHS_NUMBER_FIELD_FIELD_NUMBER: _ClassVar[int]
    WITH_NHS_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NHS_NUMBER_SHARE_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_NHS_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    sources: _containers.RepeatedCompositeFieldContainer[SourceQuality]
    records: int
    missing: _containers.RepeatedCompositeFieldContainer[FieldMissing]
    nhs_number_field: str
    with_nhs_number: int
    nhs_number_share: float
    without_nhs_number: int
    link: LinkQuality
    def __init__(self, sources: _Optional[_Iterable[_Union[SourceQuality, _Mapping]]] = ..., records: _Optional[int] = ..., missing: _Optional[_Iterable[_Union[FieldMissing, _Mapping]]] = ..., nhs_number_field: _Optional[str] = ..., with_nhs_number: _Optional[int] = ..., nhs_number_share: _Optional[float] = ..., without_nhs_number: _Optional[int] = ..., link: _Optional[_Union[LinkQuality, _Mapping]] = ...) -> None: ...
