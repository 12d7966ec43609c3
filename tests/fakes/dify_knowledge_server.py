"""A fake Dify knowledge (dataset) API (Dify 1.12.1 service API) over real HTTP, for tests and benchmarks.

Start it, register dataset keys, point the knowledge service at the URL::

    state = FakeKnowledgeState(rate_limit_per_minute=60, window_seconds=2.0, indexing_seconds=0.2)
    state.add_key("dataset-test")                       # its own tenant (workspace)
    ds = state.add_dataset("dataset-test", "Handbook")   # or POST /v1/datasets
    with run_fake_knowledge(state) as base_url:          # "http://127.0.0.1:PORT/v1"
        ...                                              # then assert on state.create_calls,
                                                         # state.max_in_window(), state.documents(ds.id) ...

What it does, as Dify (see /work/shared/docs/dify-api.md §9-§11):

* Auth `Authorization: Bearer <key>` (401 `unauthorized` otherwise). A path dataset id is looked up
  before the key (unknown → 404 "Dataset not found."), as `validate_dataset_token` does; ids are UUIDs
  (anything else is a routing 404). Datasets belong to the key's tenant.
* Datasets: POST/GET `/v1/datasets` (409 `dataset_name_duplicate`; paging `{"data", "has_more":
  len(data) == limit, "limit", "total", "page"}`), GET/PATCH/DELETE `/v1/datasets/{id}`.
* Documents: `document/create-by-text|create_by_text`, `document/create-by-file|create_by_file`,
  `documents/{id}/update-by-text|update_by_text|update-by-file|update_by_file`, GET `documents`
  (page, limit ≤ 100, keyword as SQL LIKE, status; newest first), GET/DELETE `documents/{id}`
  (DELETE answers HTTP 200 with body `204`), GET `documents/{batch}/indexing-status`;
  metadata: GET/POST `metadata`, PATCH/DELETE `metadata/{id}`, POST `documents/metadata` (values
  shown in each document's `doc_metadata` as `[{"id", "name", "type", "value"}]`).
  Same-name creates re-index the existing document (same id, new batch) unless the create says
  `"duplicate": false` (by-file `data` only, as Dify) or `state.dedupe_by_name` is off.
  Only an `available` document can be updated (else 400 "Document is not available"); an update
  keeps the document's batch. create-by-file: allowed extensions and the 15 MB limit as Dify
  1.12.1 (both answer 400 `invalid_param` with an empty message there; update-by-file answers
  415 / 413), `process_rule` required when the dataset has none. Bodies over `max_body_bytes`
  (20 MB) → 413 `request_entity_too_large`.
* Indexing is computed from timestamps: a created/updated document goes waiting → parsing →
  cleaning → splitting → indexing → completed over `state.indexing_seconds` (taken when the call is
  made). Content containing `state.fail_marker` (`FAIL_INDEXING`) ends in `error` instead.

Settings (`FakeConfig`; given to the constructor, or changed while running as attributes, e.g.
`state.rate_limit_per_minute = 10`, or with `state.configure(...)`): `rate_limit_per_minute`,
`window_seconds`, `indexing_seconds`, `failure_rate`, `failure_status`, `fail_marker`, `dedupe_by_name`.
* Knowledge rate limit as Dify Cloud: per tenant a sliding window of `window_seconds` (60) allowing
  `rate_limit_per_minute` counted calls (None = unlimited); each counted call joins the window
  before the check, so rejected calls keep a client limited; over → 403 `forbidden` "Sorry, you
  have reached the knowledge base request rate limit of your subscription.". Counted: dataset
  POST/PATCH/DELETE, create/update by text/file, document DELETE, metadata writes. Not counted: every GET
  (datasets, documents, document, indexing-status, metadata). Unlike Redis, calls in the same millisecond
  are not merged (stricter, deterministic).

Deviations (on purpose): a create without `indexing_technique` on a dataset that has none, and a
create-by-text without `process_rule` on a dataset that has none, answer 400 `invalid_param`
("indexing_technique is required." / "process_rule is required.") where 1.12.1 crashes with a
500 `unknown` (KeyError / AttributeError).

Failure injection (on create/update calls, after the rate-limit check, so they are counted):
`state.fail_next(n, status=500)` answers the next n with a Dify-style 5xx and creates nothing;
`state.failure_rate` (0..1, seeded `state.random`) does the same at random with `failure_status`; `state.fail_after_create(n)`
commits the next n and then drops the connection without answering.

Records (thread-safe reads from the test thread): `state.requests` (last `max_recorded_requests`
`RecordedRequest(method, path, at, status, counted)`), `state.create_calls` ((dataset_id, name) →
creates that committed, re-indexing ones included; `state.double_creates()` lists those above 1),
`state.max_in_window(key=None)`, `state.rejected` (403 rate-limited calls), `state.injected`
(injected 5xx), `state.dropped` (drops after create), `state.documents(dataset_id)`,
`state.duplicates()` (two documents with one name in a dataset), `state.stats()`.

Control API (no auth, for out-of-process use): `GET /_fake/stats` (= `state.stats()`),
`GET /_fake/documents?dataset_id=…`, `POST /_fake/config` (fields of `FakeConfig`, plus
`fail_next`, `fail_next_status`, `fail_after_create`; answers the config), `POST /_fake/keys`
`{"key", "tenant"?}`.

As its own process: `python -m tests.fakes.dify_knowledge_server --port 9300 --key dataset-bench
--rate-limit 600 --indexing-seconds 0.5` (see `main`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .dify_server import DifyError, _error_response, _json, _parse_multipart  # one wire format for both fakes

__all__ = ["FakeConfig", "FakeDataset", "FakeDocument", "FakeKnowledgeState", "RecordedRequest",
           "create_knowledge_app", "run_fake_knowledge"]

RATE_LIMIT_MESSAGE = "Sorry, you have reached the knowledge base request rate limit of your subscription."
FAIL_MARKER = "FAIL_INDEXING"
DOCUMENT_EXTENSIONS = frozenset(
    ["txt", "markdown", "md", "mdx", "pdf", "html", "htm", "xlsx", "xls", "docx", "csv", "vtt", "properties"])
UPLOAD_LIMIT_BYTES = 15 * 1024 * 1024
_INTERNAL = ("The server encountered an internal error and was unable to complete your request. Either the "
             "server is overloaded or there is an error in the application.")
_HTTP_5XX = {500: ("internal_server_error", _INTERNAL),
             502: ("bad_gateway", "The proxy server received an invalid response from an upstream server."),
             503: ("service_unavailable", ("The server is temporarily unable to service your request due to "
                                           "maintenance downtime or capacity problems. Please try again later.")),
             504: ("gateway_timeout", "The connection to an upstream server timed out.")}
# Share of the indexing time at which each stage starts (completed at 1.0); an error stops at 0.8.
_STAGES = (("waiting", 0.0), ("parsing", 0.1), ("cleaning", 0.3), ("splitting", 0.45), ("indexing", 0.6))
_ERROR_AT = 0.8
_DISPLAY = {"waiting": "queuing", "parsing": "indexing", "cleaning": "indexing", "splitting": "indexing",
            "indexing": "indexing", "error": "error", "paused": "paused"}
_AUTOMATIC_RULES = {"pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": True},
                                             {"id": "remove_urls_emails", "enabled": False}],
                    "segmentation": {"delimiter": "\n", "max_tokens": 500, "chunk_overlap": 50}}


# ----------------------------------------------------------------------------- state
class FakeConfig(BaseModel):
    """What can be changed while the fake runs (`state.configure(...)`, `POST /_fake/config`)."""

    model_config = ConfigDict(extra="forbid")
    rate_limit_per_minute: int | None = Field(None, ge=1)
    window_seconds: float = Field(60.0, gt=0)
    indexing_seconds: float = Field(0.2, ge=0)
    failure_rate: float = Field(0.0, ge=0, le=1)
    failure_status: int = Field(500, ge=500, le=599)
    fail_marker: str = Field(FAIL_MARKER, min_length=1)
    dedupe_by_name: bool = True


class RecordedRequest(NamedTuple):
    method: str
    path: str
    at: float  # time.time()
    status: int
    counted: bool  # in the knowledge rate-limit window


@dataclass
class FakeDocument:
    id: str
    dataset_id: str
    name: str
    position: int
    content: bytes
    extension: str
    mime_type: str
    batch: str
    created_at: float
    created_by: str
    process_rule_id: str
    doc_form: str
    doc_language: str
    indexing_technique: str
    max_chars: int  # segment length (process rule max_tokens)
    started: float = 0.0  # time.time() when the current indexing run began
    duration: float = 0.0
    fails: bool = False
    updated_at: float = 0.0
    upload_file_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    enabled: bool = True
    archived: bool = False
    doc_metadata: dict[str, Any] = field(default_factory=dict)  # name → value
    metadata_ids: list[str] = field(default_factory=list)  # bound metadata fields (DatasetMetadataBinding)

    def reindex(self, content: bytes, seconds: float, marker: str) -> None:
        self.content, self.started, self.duration = content, time.time(), seconds
        self.fails = marker.encode() in content
        self.updated_at = self.started

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def progress(self, now: float) -> float:
        return 1.0 if self.duration <= 0 else max(0.0, (now - self.started) / self.duration)

    def status(self, now: float | None = None) -> str:
        p = self.progress(time.time() if now is None else now)
        if self.fails and p >= _ERROR_AT:
            return "error"
        if p >= 1.0:
            return "completed"
        return next(name for name, start in reversed(_STAGES) if p >= start)

    def display_status(self, now: float | None = None) -> str:
        status = self.status(now)
        if status != "completed":
            return _DISPLAY[status]
        return "archived" if self.archived else "available" if self.enabled else "disabled"

    def at(self, share: float, now: float) -> int | None:
        """Epoch seconds at which `share` of the indexing was reached, None if not yet (or never, after an error)."""
        if self.progress(now) < share or (self.fails and share > _ERROR_AT):
            return None
        return int(self.started + share * self.duration)

    def segments(self) -> int:
        text = self.content.decode("utf-8", "replace")
        return max(1, math.ceil(len(text) / self.max_chars))

    def word_count(self, now: float) -> int:
        return len(self.content.decode("utf-8", "replace")) if self.progress(now) >= _STAGES[4][1] else 0


@dataclass
class FakeDataset:
    id: str
    tenant: str
    name: str
    description: str = ""
    indexing_technique: str | None = None
    permission: str = "only_me"
    provider: str = "vendor"
    created_at: float = field(default_factory=time.time)
    created_by: str = ""
    process_rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {"mode", "rules"}
    latest_process_rule: str | None = None
    documents: dict[str, FakeDocument] = field(default_factory=dict)
    next_position: int = 1
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)  # id → {"id", "type", "name"}


class _Tenant:
    """One workspace: its account id and its knowledge rate-limit window."""

    def __init__(self, name: str) -> None:
        self.name, self.account_id = name, str(uuid.uuid4())
        self.window: deque[float] = deque()  # time.monotonic() of counted calls, accepted and rejected
        self.max_in_window = 0
        self.counted = 0
        self.rejected = 0


class FakeKnowledgeState:
    """Keys, datasets, documents, the configuration and everything recorded. Mutated under `lock`."""

    def __init__(self, *, rate_limit_per_minute: int | None = None, window_seconds: float = 60.0,
                 indexing_seconds: float = 0.2, max_recorded_requests: int = 100_000,
                 max_body_bytes: int = 20 * 1024 * 1024, seed: int = 0, **config: Any) -> None:
        self.lock = threading.RLock()
        self.config = FakeConfig(rate_limit_per_minute=rate_limit_per_minute, window_seconds=window_seconds,
                                 indexing_seconds=indexing_seconds, **config)
        self.max_body_bytes = max_body_bytes
        self.random = random.Random(seed)
        self.requests: deque[RecordedRequest] = deque(maxlen=max_recorded_requests)
        self.request_count = 0
        self.create_calls: Counter[tuple[str, str]] = Counter()
        self.injected = 0
        self.dropped = 0
        self.datasets: dict[str, FakeDataset] = {}
        self._keys: dict[str, _Tenant] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._fail_next: list[int] = []  # statuses of the next injected failures
        self._drop_next = 0

    # --- setup
    def add_key(self, key: str, tenant: str | None = None) -> str:
        """Register a dataset API key; keys naming the same `tenant` share datasets and rate limit (default: its own)."""
        with self.lock:
            name = tenant or key
            self._keys[key] = self._tenants.setdefault(name, _Tenant(name))
            return name

    def add_dataset(self, key: str, name: str, *, indexing_technique: str | None = None,
                    process_rule: dict[str, Any] | None = None, **fields: Any) -> FakeDataset:
        """Create a dataset directly (nothing recorded or counted), optionally with a process rule already."""
        with self.lock:
            tenant = self._keys[key]
            ds = FakeDataset(str(uuid.uuid4()), tenant.name, name, indexing_technique=indexing_technique,
                             created_by=tenant.account_id, **fields)
            if process_rule is not None:
                _add_rule(ds, process_rule)
            self.datasets[ds.id] = ds
            return ds

    def configure(self, **changes: Any) -> FakeConfig:
        """Change `FakeConfig` fields while running (validated); returns the new configuration."""
        with self.lock:
            self.config = FakeConfig.model_validate({**self.config.model_dump(), **changes})
            return self.config

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next `n` create/update calls answer `status` (a Dify 5xx) and create nothing."""
        with self.lock:
            self._fail_next += [status] * n

    def fail_after_create(self, n: int = 1) -> None:
        """The next `n` create/update calls are committed, then the connection is dropped unanswered."""
        with self.lock:
            self._drop_next += n

    # --- reads for assertions
    def documents(self, dataset_id: str) -> list[FakeDocument]:
        """The dataset's documents, oldest first."""
        with self.lock:
            return sorted(self.datasets[dataset_id].documents.values(), key=lambda d: d.position)

    def dataset_named(self, name: str) -> FakeDataset:
        with self.lock:
            return next(ds for ds in self.datasets.values() if ds.name == name)

    def max_in_window(self, key: str | None = None) -> int:
        """Most counted calls (accepted + rejected) seen in one window: of `key`'s tenant, or of any tenant."""
        with self.lock:
            tenants = [self._keys[key]] if key else list(self._tenants.values())
            return max((t.max_in_window for t in tenants), default=0)

    @property
    def rejected(self) -> int:
        """Calls answered 403 by the rate limit, all tenants."""
        with self.lock:
            return sum(t.rejected for t in self._tenants.values())

    def double_creates(self) -> dict[tuple[str, str], int]:
        """(dataset_id, name) created more than once (a correct client never does that)."""
        with self.lock:
            return {k: n for k, n in self.create_calls.items() if n > 1}

    def duplicates(self) -> dict[tuple[str, str], list[str]]:
        """(dataset_id, name) → ids of the two or more documents bearing that name."""
        with self.lock:
            by_name: dict[tuple[str, str], list[str]] = {}
            for ds in self.datasets.values():
                for doc in ds.documents.values():
                    by_name.setdefault((ds.id, doc.name), []).append(doc.id)
            return {k: ids for k, ids in by_name.items() if len(ids) > 1}

    def stats(self) -> dict[str, Any]:
        """Everything `GET /_fake/stats` answers."""
        with self.lock:
            now = time.time()
            datasets = []
            for ds in self.datasets.values():
                statuses = Counter(d.status(now) for d in ds.documents.values())
                datasets.append({"id": ds.id, "name": ds.name, "tenant": ds.tenant, "documents": len(ds.documents),
                                 "by_status": dict(statuses)})
            endpoints = Counter(f"{r.method} {r.status}" for r in self.requests)
            return {
                "config": self.config.model_dump(),
                "requests": self.request_count,
                "recent_requests_by_status": dict(endpoints),
                "counted_calls": sum(t.counted for t in self._tenants.values()),
                "rejected": self.rejected,
                "max_in_window": self.max_in_window(),
                "tenants": {t.name: {"counted": t.counted, "rejected": t.rejected, "max_in_window": t.max_in_window}
                            for t in self._tenants.values()},
                "create_calls": sum(self.create_calls.values()),
                "double_creates": [{"dataset_id": d, "name": n, "count": c} for (d, n), c in self.double_creates().items()],
                "duplicates": [{"dataset_id": d, "name": n, "document_ids": ids} for (d, n), ids in self.duplicates().items()],
                "injected_failures": self.injected,
                "dropped_after_create": self.dropped,
                "pending": {"fail_next": len(self._fail_next), "fail_after_create": self._drop_next},
                "datasets": datasets,
            }

    # --- used by the server
    def tenant_of(self, key: str) -> _Tenant | None:
        with self.lock:
            return self._keys.get(key)

    def admit(self, tenant: _Tenant) -> bool:
        """Add a counted call to the tenant's window, then check it (Dify's order); False = over the limit."""
        with self.lock:
            now, cfg = time.monotonic(), self.config
            tenant.window.append(now)
            while tenant.window and tenant.window[0] <= now - cfg.window_seconds:
                tenant.window.popleft()
            tenant.counted += 1
            tenant.max_in_window = max(tenant.max_in_window, len(tenant.window))
            if cfg.rate_limit_per_minute is not None and len(tenant.window) > cfg.rate_limit_per_minute:
                tenant.rejected += 1
                return False
            return True

    def injected_failure(self) -> int | None:
        """The status of a failure to inject into this create/update call, if any."""
        with self.lock:
            if self._fail_next:
                status = self._fail_next.pop(0)
            elif self.config.failure_rate and self.random.random() < self.config.failure_rate:
                status = self.config.failure_status
            else:
                return None
            self.injected += 1
            return status

    def take_drop(self) -> bool:
        with self.lock:
            if self._drop_next <= 0:
                return False
            self._drop_next -= 1
            self.dropped += 1
            return True

    def record(self, method: str, path: str, at: float, status: int, counted: bool) -> None:
        with self.lock:
            self.request_count += 1
            self.requests.append(RecordedRequest(method, path, at, status, counted))


def _config_property(name: str) -> property:
    def get(self: FakeKnowledgeState) -> Any:
        return getattr(self.config, name)

    def set_(self: FakeKnowledgeState, value: Any) -> None:
        self.configure(**{name: value})

    return property(get, set_, doc=f"`FakeConfig.{name}` (validated when set)")


for _name in FakeConfig.model_fields:  # state.rate_limit_per_minute, state.indexing_seconds, ...
    setattr(FakeKnowledgeState, _name, _config_property(_name))


def _add_rule(ds: FakeDataset, rule: dict[str, Any]) -> str:
    rid = str(uuid.uuid4())
    mode = rule.get("mode", "automatic")
    ds.process_rules[rid] = {"mode": mode, "rules": _AUTOMATIC_RULES if mode == "automatic" else rule.get("rules")}
    ds.latest_process_rule = rid
    return rid


# ----------------------------------------------------------------------------- payloads (names as Dify's)
class PreProcessingRule(BaseModel):
    id: str
    enabled: Any = None


class Segmentation(BaseModel):
    separator: Any = "\n"
    max_tokens: Any = None
    chunk_overlap: int = 0


class Rule(BaseModel):
    pre_processing_rules: list[PreProcessingRule] | None = None
    segmentation: Segmentation | None = None
    parent_mode: Literal["full-doc", "paragraph"] | None = None
    subchunk_segmentation: Segmentation | None = None


class ProcessRule(BaseModel):
    mode: Literal["automatic", "custom", "hierarchical"]
    rules: Rule | None = None


class DatasetCreatePayload(BaseModel):
    name: str = Field(..., min_length=1, max_length=40)
    description: str = Field("", max_length=400)
    indexing_technique: Literal["high_quality", "economy"] | None = None
    permission: Literal["only_me", "all_team_members", "partial_members"] | None = "only_me"
    provider: str = "vendor"
    external_knowledge_api_id: str | None = None
    external_knowledge_id: str | None = None
    embedding_model: str | None = None
    embedding_model_provider: str | None = None
    retrieval_model: dict[str, Any] | None = None


class DatasetUpdatePayload(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=40)
    description: str | None = Field(None, max_length=400)
    indexing_technique: Literal["high_quality", "economy"] | None = None
    permission: Literal["only_me", "all_team_members", "partial_members"] | None = None


class DocumentTextCreatePayload(BaseModel):
    name: str
    text: str
    process_rule: ProcessRule | None = None
    original_document_id: str | None = None
    doc_form: str = "text_model"
    doc_language: str = "English"
    indexing_technique: Literal["high_quality", "economy"] | None = None
    retrieval_model: dict[str, Any] | None = None
    embedding_model: str | None = None
    embedding_model_provider: str | None = None


class DocumentTextUpdate(BaseModel):
    name: str | None = None
    text: str | None = None
    process_rule: ProcessRule | None = None
    doc_form: str = "text_model"
    doc_language: str = "English"
    retrieval_model: dict[str, Any] | None = None


class KnowledgeConfig(BaseModel):  # the by-file `data` JSON
    indexing_technique: Literal["high_quality", "economy"] | None = None
    process_rule: ProcessRule | None = None
    duplicate: bool = True
    doc_form: str = "text_model"
    doc_language: str = "English"
    original_document_id: str | None = None
    retrieval_model: dict[str, Any] | None = None
    embedding_model: str | None = None
    embedding_model_provider: str | None = None


class MetadataArgs(BaseModel):
    type: Literal["string", "number", "time"]
    name: str


class MetadataUpdatePayload(BaseModel):
    name: str


class MetadataDetail(BaseModel):
    id: str
    name: str
    value: str | int | float | None = None


class DocumentMetadataOperation(BaseModel):
    document_id: str
    metadata_list: list[MetadataDetail]
    partial_update: bool = False


class MetadataOperationData(BaseModel):
    operation_data: list[DocumentMetadataOperation]


_BUILT_IN_FIELDS = ("document_name", "uploader", "upload_date", "last_update_date", "source")


def _validate_rule(rule: ProcessRule) -> None:
    """`DocumentService.process_rule_args_validate`."""
    if rule.mode == "automatic":
        return
    r = rule.rules
    if not r:
        raise DifyError(400, "invalid_param", "Process rule rules is required")
    if r.pre_processing_rules is None:
        raise DifyError(400, "invalid_param", "Process rule pre_processing_rules is required")
    for p in r.pre_processing_rules:
        if not p.id:
            raise DifyError(400, "invalid_param", "Process rule pre_processing_rules id is required")
        if not isinstance(p.enabled, bool):
            raise DifyError(400, "invalid_param", "Process rule pre_processing_rules enabled is invalid")
    if not r.segmentation:
        raise DifyError(400, "invalid_param", "Process rule segmentation is required")
    if not r.segmentation.separator:
        raise DifyError(400, "invalid_param", "Process rule segmentation separator is required")
    if not isinstance(r.segmentation.separator, str):
        raise DifyError(400, "invalid_param", "Process rule segmentation separator is invalid")
    if not (rule.mode == "hierarchical" and r.parent_mode == "full-doc"):
        if not r.segmentation.max_tokens:
            raise DifyError(400, "invalid_param", "Process rule segmentation max_tokens is required")
        if not isinstance(r.segmentation.max_tokens, int) or isinstance(r.segmentation.max_tokens, bool):
            raise DifyError(400, "invalid_param", "Process rule segmentation max_tokens is invalid")


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise DifyError(400, "bad_request", "The browser (or proxy) sent a request that this server could not understand.")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise DifyError(400, "invalid_param", str(e)) from None


# ----------------------------------------------------------------------------- responses
def _ts(t: float | None) -> int | None:
    return None if t is None else int(t)


def _metadata_details(doc: FakeDocument, ds: FakeDataset) -> list[dict[str, Any]]:
    """`Document.doc_metadata_details`: the bound fields with the document's values."""
    fields_ = [ds.metadata[m] for m in doc.metadata_ids if m in ds.metadata]
    return [{**f, "value": doc.doc_metadata.get(f["name"])} for f in fields_]


def _document_fields(doc: FakeDocument, ds: FakeDataset, now: float) -> dict[str, Any]:
    """`fields/document_fields.py: document_fields`."""
    status = doc.status(now)
    ext = doc.extension
    return {
        "id": doc.id, "position": doc.position, "data_source_type": "upload_file",
        "data_source_info": {"upload_file_id": doc.upload_file_id},
        "data_source_detail_dict": {"upload_file": {
            "id": doc.upload_file_id, "name": doc.name, "size": len(doc.content), "extension": ext, "mime_type": doc.mime_type, "created_by": doc.created_by,
            "created_at": _ts(doc.created_at)}},
        "dataset_process_rule_id": doc.process_rule_id, "name": doc.name, "created_from": "api",
        "created_by": doc.created_by, "created_at": _ts(doc.created_at),
        "tokens": (len(doc.content) // 4 if doc.indexing_technique == "high_quality" else 0) if status == "completed" else 0,
        "indexing_status": status, "error": _error_text(doc) if status == "error" else None, "enabled": doc.enabled,
        "disabled_at": None, "disabled_by": None, "archived": doc.archived, "display_status": doc.display_status(now),
        "word_count": doc.word_count(now), "hit_count": 0, "doc_form": doc.doc_form,
        "doc_metadata": _metadata_details(doc, ds), "summary_index_status": None, "need_summary": False,
    }


def _error_text(doc: FakeDocument) -> str:
    return f"[fake] indexing failed: the content of {doc.name!r} contains the failure marker"


def _document_detail(doc: FakeDocument, ds: FakeDataset, now: float, metadata: str) -> dict[str, Any]:
    """`GET …/documents/{id}` (`metadata` = all | only | without)."""
    if metadata == "only":
        return {"id": doc.id, "doc_type": None, "doc_metadata": _metadata_details(doc, ds)}
    base = _document_fields(doc, ds, now)
    rule = ds.process_rules.get(doc.process_rule_id, {"mode": "automatic", "rules": _AUTOMATIC_RULES})
    completed = doc.at(1.0, now)
    detail = {k: base[k] for k in ("id", "position", "data_source_type", "data_source_info", "dataset_process_rule_id")}
    detail |= {"dataset_process_rule": rule, "document_process_rule": {**rule, "id": doc.process_rule_id},
               "name": doc.name, "created_from": "api", "created_by": doc.created_by, "created_at": _ts(doc.created_at),
               "tokens": base["tokens"], "indexing_status": base["indexing_status"], "completed_at": completed,
               "updated_at": _ts(doc.updated_at), "indexing_latency": doc.duration if completed is not None else None,
               "error": base["error"], "enabled": doc.enabled, "disabled_at": None, "disabled_by": None,
               "archived": doc.archived, "doc_type": None, "doc_metadata": base["doc_metadata"],
               "segment_count": doc.segments() if base["word_count"] else 0,
               "average_segment_length": base["word_count"] // doc.segments() if base["word_count"] else 0,
               "hit_count": 0, "display_status": base["display_status"], "doc_form": doc.doc_form,
               "doc_language": doc.doc_language}
    if metadata == "without":
        del detail["doc_type"], detail["doc_metadata"]
    return detail


def _indexing_status(doc: FakeDocument, now: float) -> dict[str, Any]:
    status = doc.status(now)
    total = doc.segments() if doc.progress(now) >= _STAGES[4][1] else 0
    if status == "completed":
        done = total
    elif status == "indexing":
        done = int(total * (doc.progress(now) - _STAGES[4][1]) / (1 - _STAGES[4][1]))
    else:
        done = 0
    return {"id": doc.id, "indexing_status": status, "processing_started_at": doc.at(_STAGES[1][1], now),
            "parsing_completed_at": doc.at(_STAGES[2][1], now), "cleaning_completed_at": doc.at(_STAGES[3][1], now),
            "splitting_completed_at": doc.at(_STAGES[4][1], now), "completed_at": doc.at(1.0, now), "paused_at": None,
            "error": _error_text(doc) if status == "error" else None,
            "stopped_at": int(doc.started + _ERROR_AT * doc.duration) if status == "error" else None,
            "completed_segments": done, "total_segments": total}


def _dataset_fields(ds: FakeDataset, now: float) -> dict[str, Any]:
    """`fields/dataset_fields.py: dataset_detail_fields`."""
    docs = list(ds.documents.values())
    available = sum(d.display_status(now) == "available" for d in docs)
    return {
        "id": ds.id, "name": ds.name, "description": ds.description, "provider": ds.provider,
        "permission": ds.permission, "data_source_type": "upload_file" if docs else None,
        "indexing_technique": ds.indexing_technique, "app_count": 0, "document_count": len(docs),
        "word_count": sum(d.word_count(now) for d in docs), "created_by": ds.created_by, "author_name": "Tester",
        "created_at": _ts(ds.created_at), "updated_by": None, "updated_at": _ts(ds.created_at),
        "embedding_model": "text-embedding-3-small" if ds.indexing_technique == "high_quality" else None,
        "embedding_model_provider": "langgenius/openai/openai" if ds.indexing_technique == "high_quality" else None,
        "embedding_available": True,
        "retrieval_model_dict": {"search_method": "semantic_search", "reranking_enable": False, "reranking_mode": None,
                                 "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""},
                                 "weights": None, "top_k": 2, "score_threshold_enabled": False, "score_threshold": None},
        "summary_index_setting": None, "tags": [], "doc_form": (next(iter(docs)).doc_form if docs else None),
        "external_knowledge_info": {"external_knowledge_id": None, "external_knowledge_api_id": None,
                                    "external_knowledge_api_name": None, "external_knowledge_api_endpoint": None},
        "external_retrieval_model": {"top_k": 2, "score_threshold": 0.0, "score_threshold_enabled": None},
        "doc_metadata": list(ds.metadata.values()), "built_in_field_enabled": False, "pipeline_id": None, "runtime_mode": "general",
        "chunk_structure": None, "icon_info": None, "is_published": False, "total_documents": len(docs),
        "total_available_documents": available, "enable_api": True, "is_multimodal": False,
    }


def _like(keyword: str) -> re.Pattern[str]:
    """SQL `LIKE '%keyword%'` (case-sensitive, `%` and `_` are wildcards) as a regex."""
    parts = ["." if c == "_" else ".*" if c == "%" else re.escape(c) for c in keyword]
    return re.compile(".*" + "".join(parts) + ".*", re.DOTALL)


def _int_arg(request: Request, name: str, default: int) -> int:
    """Flask's `request.args.get(name, default, type=int)`: an unparsable value is the default."""
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        return default


def _page(items: list[Any], request: Request, max_per_page: int | None = None) -> tuple[list[Any], dict[str, Any]]:
    """Flask-SQLAlchemy paginate(error_out=False) and Dify's envelope (`has_more` is len(data) == limit)."""
    page, limit = max(1, _int_arg(request, "page", 1)), _int_arg(request, "limit", 20)
    per_page = max(1, min(limit, max_per_page or limit))
    chunk = items[(page - 1) * per_page: page * per_page]
    return chunk, {"has_more": len(chunk) == limit, "limit": limit, "total": len(items), "page": page}


class _DropAnswer(Exception):
    """The call was committed; the connection is to be closed without an answer."""


# ----------------------------------------------------------------------------- handlers
class _Api:
    def __init__(self, state: FakeKnowledgeState) -> None:
        self.state = state

    # --- request plumbing
    async def read_body(self, request: Request) -> bytes:
        limit = self.state.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise DifyError(413, "request_entity_too_large", "The data value transmitted exceeds the capacity limit.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise DifyError(413, "request_entity_too_large", "The data value transmitted exceeds the capacity limit.")
            chunks.append(chunk)
        return b"".join(chunks)

    def authenticate(self, request: Request) -> _Tenant:
        auth = request.headers.get("authorization")
        if not auth or " " not in auth:
            raise DifyError(401, "unauthorized", "Authorization header must be provided and start with 'Bearer'")
        scheme, key = auth.split(None, 1) if len(auth.split(None, 1)) == 2 else (auth, "")
        if scheme.lower() != "bearer":
            raise DifyError(401, "unauthorized", "Authorization scheme must be 'Bearer'")
        tenant = self.state.tenant_of(key.strip())
        if tenant is None:
            raise DifyError(401, "unauthorized", "Access token is invalid")
        return tenant

    def begin(self, request: Request, counted: bool) -> tuple[_Tenant, FakeDataset | None]:
        """`validate_dataset_token` (dataset id, then key), then the knowledge rate limit when `counted`."""
        ds = None
        if "dataset_id" in request.path_params:
            with self.state.lock:
                ds = self.state.datasets.get(str(request.path_params["dataset_id"]))
            if ds is None:
                raise DifyError(404, "not_found", "Dataset not found.")
        tenant = self.authenticate(request)
        if counted:
            request.state.counted = True
            if not self.state.admit(tenant):
                raise DifyError(403, "forbidden", RATE_LIMIT_MESSAGE)
        if ds is not None and ds.tenant != tenant.name:
            ds = None
        return tenant, ds

    @staticmethod
    def own(ds: FakeDataset | None, not_found: bool = False) -> FakeDataset:
        """The dataset when it is the caller's: else Dify's `ValueError("Dataset does not exist.")` (or NotFound)."""
        if ds is None:
            if not_found:
                raise DifyError(404, "not_found", "Dataset not found.")
            raise DifyError(400, "invalid_param", "Dataset does not exist.")
        return ds

    async def json_body(self, request: Request) -> Any:
        raw = await self.read_body(request)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise DifyError(400, "bad_request", "Failed to decode JSON object: invalid JSON") from None

    # --- datasets
    async def create_dataset(self, request: Request) -> Response:
        body = await self.json_body(request)
        tenant, _ = self.begin(request, counted=True)
        p = _parse(DatasetCreatePayload, body)
        with self.state.lock:
            if any(d.tenant == tenant.name and d.name == p.name for d in self.state.datasets.values()):
                raise DifyError(409, "dataset_name_duplicate",
                                "The dataset name already exists. Please modify your dataset name.")
            ds = FakeDataset(str(uuid.uuid4()), tenant.name, p.name, p.description, p.indexing_technique,
                             p.permission or "only_me", p.provider, created_by=tenant.account_id)
            self.state.datasets[ds.id] = ds
            return _json(_dataset_fields(ds, time.time()))

    async def list_datasets(self, request: Request) -> Response:
        await self.read_body(request)
        tenant, _ = self.begin(request, counted=False)
        keyword = request.query_params.get("keyword")
        with self.state.lock:
            mine = [d for d in self.state.datasets.values() if d.tenant == tenant.name]
            if keyword:
                pattern = _like(keyword)
                mine = [d for d in mine if pattern.fullmatch(d.name)]
            mine.sort(key=lambda d: d.created_at, reverse=True)
            chunk, envelope = _page(mine, request)
            now = time.time()
            return _json({"data": [_dataset_fields(d, now) for d in chunk], **envelope})

    async def get_dataset(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=False)
        with self.state.lock:
            return _json(_dataset_fields(self.own(ds, not_found=True), time.time()))

    async def patch_dataset(self, request: Request) -> Response:
        body = await self.json_body(request)
        tenant, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        p = _parse(DatasetUpdatePayload, body or {})
        with self.state.lock:
            if p.name and any(d.tenant == tenant.name and d.name == p.name and d.id != ds.id
                              for d in self.state.datasets.values()):
                raise DifyError(409, "dataset_name_duplicate",
                                "The dataset name already exists. Please modify your dataset name.")
            for name, value in p.model_dump(exclude_none=True).items():
                setattr(ds, name, value)
            return _json(_dataset_fields(ds, time.time()))

    async def delete_dataset(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        with self.state.lock:
            self.state.datasets.pop(ds.id, None)
        return _json(204)  # flask-restx sends `return 204` as HTTP 200 with body 204

    # --- documents: create and update
    async def create_by_text(self, request: Request) -> Response:
        body = await self.json_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds)
        p = _parse(DocumentTextCreatePayload, body)
        # FileService.upload_text: the upload file (hence the document) is named after `name`, cut to 200
        return self.create(ds, p.name[:200], p.text.encode(), "txt", "text/plain", p.indexing_technique,
                           p.process_rule, p.doc_form, p.doc_language, duplicate=True)

    async def create_by_file(self, request: Request) -> Response:
        options, upload = await self.file_form(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds)
        p = _parse(KnowledgeConfig, options)
        if ds.provider == "external":
            raise DifyError(400, "invalid_param", "External datasets are not supported.")
        if not ds.indexing_technique and not p.indexing_technique:
            raise DifyError(400, "invalid_param", "indexing_technique is required.")
        if upload is None:
            raise DifyError(400, "no_file_uploaded", "Please upload your file.")
        filename, mime, content = self.check_file(upload, strict_errors=False)
        return self.create(ds, filename, content, filename.rsplit(".", 1)[-1].lower(), mime, p.indexing_technique,
                           p.process_rule, p.doc_form, p.doc_language, duplicate=p.duplicate)

    async def update_by_text(self, request: Request) -> Response:
        body = await self.json_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds)
        p = _parse(DocumentTextUpdate, body or {})
        if p.text is not None and p.name is None:
            raise DifyError(400, "invalid_param", "Both text and name must be strings.")
        content = p.text.encode() if p.text else None
        return self.update(ds, str(request.path_params["document_id"]), p.name, content, "txt", "text/plain",
                           p.process_rule, p.doc_form)

    async def update_by_file(self, request: Request) -> Response:
        options, upload = await self.file_form(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds)
        p = _parse(KnowledgeConfig, options)
        name = content = None
        ext, mime = "txt", "text/plain"
        if upload is not None:
            name, mime, content = self.check_file(upload, strict_errors=True)
            ext = name.rsplit(".", 1)[-1].lower()
        return self.update(ds, str(request.path_params["document_id"]), name, content, ext, mime, p.process_rule,
                           p.doc_form)

    async def file_form(self, request: Request) -> tuple[dict[str, Any], tuple[str, str, bytes] | None]:
        """The `data` JSON options and the one uploaded `file` of a by-file call."""
        raw = await self.read_body(request)
        ctype = request.headers.get("content-type", "")
        form, files = _parse_multipart(raw, ctype) if ctype.startswith("multipart/form-data") else ({}, {})
        try:
            options = json.loads(form["data"]) if "data" in form else {}
        except ValueError:
            raise DifyError(400, "invalid_param", "Expecting value: line 1 column 1 (char 0)") from None
        if sum(len(v) for v in files.values()) > 1:
            raise DifyError(400, "too_many_files", "Only one file is allowed.")
        upload = files["file"][0] if "file" in files else None
        return options if isinstance(options, dict) else {}, upload

    @staticmethod
    def check_file(upload: tuple[str, str, bytes], strict_errors: bool) -> tuple[str, str, bytes]:
        """`FileService.upload_file` for datasets. 1.12.1's create-by-file lets its errors out as an empty 400."""
        filename, mime, content = upload
        if not filename:
            raise DifyError(400, "filename_not_exists_error", "The specified filename does not exist.")
        if any(c in filename for c in '/\\:*?"<>|'):
            raise DifyError(400, "invalid_param", "Filename contains invalid characters")
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in DOCUMENT_EXTENSIONS:
            raise (DifyError(415, "unsupported_file_type", "File type not allowed.") if strict_errors
                   else DifyError(400, "invalid_param", ""))
        if len(content) > UPLOAD_LIMIT_BYTES:
            raise (DifyError(413, "file_too_large", "File size exceeded. {message}") if strict_errors
                   else DifyError(400, "invalid_param", ""))
        if len(filename) > 200:
            filename = filename.split(".")[0][:200] + "." + ext
        return filename, mime or "application/octet-stream", content

    def create(self, ds: FakeDataset, name: str, content: bytes, ext: str, mime: str, technique: str | None,
               rule: ProcessRule | None, doc_form: str, doc_language: str, *, duplicate: bool) -> Response:
        """`DocumentService.save_document_with_dataset_id` for one upload-file document."""
        state = self.state
        if ds.provider == "external":
            raise DifyError(400, "invalid_param", "External datasets are not supported.")
        if not ds.indexing_technique and not technique:
            raise DifyError(400, "invalid_param", "indexing_technique is required.")
        if rule is not None:
            _validate_rule(rule)
        elif ds.latest_process_rule is None:
            raise DifyError(400, "invalid_param", "process_rule is required.")
        failure = state.injected_failure()
        if failure is not None:
            code, message = _HTTP_5XX.get(failure, ("internal_server_error", _INTERNAL))
            raise DifyError(failure, code, message)
        with state.lock:
            if ds.id not in state.datasets:  # deleted meanwhile
                raise DifyError(400, "invalid_param", "Dataset does not exist.")
            rule_id = _add_rule(ds, rule.model_dump()) if rule is not None else ds.latest_process_rule or ""
            if not ds.indexing_technique:
                ds.indexing_technique = technique
            batch = time.strftime("%Y%m%d%H%M%S") + str(state.random.randint(100000, 999999))
            cfg = state.config
            existing = next((d for d in ds.documents.values() if d.name == name and d.enabled),
                            None) if duplicate and cfg.dedupe_by_name else None
            max_chars = _max_chars(ds, rule_id)
            if existing is not None:  # Dify re-indexes the same-name document
                doc = existing
                doc.process_rule_id, doc.doc_form, doc.doc_language = rule_id, doc_form, doc_language
                doc.batch, doc.extension, doc.mime_type, doc.max_chars = batch, ext, mime, max_chars
                doc.upload_file_id = str(uuid.uuid4())
            else:
                doc = FakeDocument(str(uuid.uuid4()), ds.id, name, ds.next_position, content, ext, mime, batch,
                                   time.time(), ds.created_by, rule_id, doc_form, doc_language,
                                   ds.indexing_technique or "high_quality", max_chars)
                ds.next_position += 1
                ds.documents[doc.id] = doc
            doc.reindex(content, cfg.indexing_seconds, cfg.fail_marker)
            state.create_calls[(ds.id, name)] += 1
            answer = {"document": _document_fields(doc, ds, time.time()), "batch": batch}
        if state.take_drop():
            raise _DropAnswer
        return _json(answer)

    def update(self, ds: FakeDataset, doc_id: str, name: str | None, content: bytes | None, ext: str, mime: str,
               rule: ProcessRule | None, doc_form: str) -> Response:
        """`DocumentService.update_document_with_dataset_id`: the document keeps its id and batch."""
        state = self.state
        if rule is not None:
            _validate_rule(rule)
        with state.lock:
            doc = ds.documents.get(doc_id)
            if doc is None:
                raise DifyError(404, "not_found", "Document not found")
            if doc.display_status() != "available":
                raise DifyError(400, "invalid_param", "Document is not available")
        failure = state.injected_failure()
        if failure is not None:
            code, message = _HTTP_5XX.get(failure, ("internal_server_error", _INTERNAL))
            raise DifyError(failure, code, message)
        with state.lock:
            if rule is not None:
                doc.process_rule_id = _add_rule(ds, rule.model_dump())
                doc.max_chars = _max_chars(ds, doc.process_rule_id)
            if content is not None:
                doc.extension, doc.mime_type, doc.upload_file_id = ext, mime, str(uuid.uuid4())
            if name:
                doc.name = name
            doc.doc_form = doc_form
            doc.reindex(content if content is not None else doc.content, state.config.indexing_seconds,
                        state.config.fail_marker)
            answer = {"document": _document_fields(doc, ds, time.time()), "batch": doc.batch}
        if state.take_drop():
            raise _DropAnswer
        return _json(answer)

    # --- documents: read and delete
    async def list_documents(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=False)
        ds = self.own(ds, not_found=True)
        keyword, status = request.query_params.get("keyword"), request.query_params.get("status")
        now = time.time()
        with self.state.lock:
            docs = sorted(ds.documents.values(), key=lambda d: (d.created_at, d.position), reverse=True)
            if keyword:
                pattern = _like(keyword)
                docs = [d for d in docs if pattern.fullmatch(d.name)]
            if status:
                docs = [d for d in docs if d.display_status(now) == status]
            chunk, envelope = _page(docs, request, max_per_page=100)
            return _json({"data": [_document_fields(d, ds, now) for d in chunk], **envelope})

    async def get_document(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=False)
        ds = self.own(ds, not_found=True)
        metadata = request.query_params.get("metadata", "all")
        if metadata not in ("all", "only", "without"):
            raise DifyError(400, "invalid_metadata", f"Invalid metadata value: {metadata}")
        with self.state.lock:
            doc = ds.documents.get(str(request.path_params["document_id"]))
            if doc is None:
                raise DifyError(404, "not_found", "Document not found.")
            return _json(_document_detail(doc, ds, time.time(), metadata))

    async def delete_document(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds)
        with self.state.lock:
            doc = ds.documents.get(str(request.path_params["document_id"]))
            if doc is None:
                raise DifyError(404, "not_found", "Document Not Exists.")
            if doc.archived:
                raise DifyError(403, "archived_document_immutable", "The archived document is not editable.")
            del ds.documents[doc.id]
        return _json(204)  # flask-restx sends `return 204` as HTTP 200 with body 204

    async def indexing_status(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=False)
        ds = self.own(ds, not_found=True)
        batch = request.path_params["batch"]
        now = time.time()
        with self.state.lock:
            docs = sorted((d for d in ds.documents.values() if d.batch == batch), key=lambda d: d.position)
            if not docs:
                raise DifyError(404, "not_found", "Documents not found.")
            return _json({"data": [_indexing_status(d, now) for d in docs]})

    # --- metadata (`service_api/dataset/metadata.py`, `services/metadata_service.py`)
    def check_metadata_name(self, ds: FakeDataset, name: str) -> None:
        if len(name) > 255:
            raise DifyError(400, "invalid_param", "Metadata name cannot exceed 255 characters.")
        if any(m["name"] == name for m in ds.metadata.values()):
            raise DifyError(400, "invalid_param", "Metadata name already exists.")
        if name in _BUILT_IN_FIELDS:
            raise DifyError(400, "invalid_param", "Metadata name already exists in Built-in fields.")

    async def create_metadata(self, request: Request) -> Response:
        body = await self.json_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        p = _parse(MetadataArgs, body)
        with self.state.lock:
            self.check_metadata_name(ds, p.name)
            field_ = {"id": str(uuid.uuid4()), "type": p.type, "name": p.name}
            ds.metadata[field_["id"]] = field_
            return _json(field_, 201)

    async def list_metadata(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=False)
        ds = self.own(ds, not_found=True)
        with self.state.lock:
            counts = Counter(m for d in ds.documents.values() for m in d.metadata_ids)
            data = [{**f, "count": counts[f["id"]]} for f in ds.metadata.values()]
            return _json({"doc_metadata": data, "built_in_field_enabled": False})

    async def patch_metadata(self, request: Request) -> Response:
        body = await self.json_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        p = _parse(MetadataUpdatePayload, body)
        with self.state.lock:
            self.check_metadata_name(ds, p.name)
            field_ = ds.metadata.get(str(request.path_params["metadata_id"]))
            if field_ is None:
                raise DifyError(400, "invalid_param", "Metadata not found.")
            old, field_["name"] = field_["name"], p.name
            for d in ds.documents.values():
                if field_["id"] in d.metadata_ids:
                    d.doc_metadata[p.name] = d.doc_metadata.pop(old, None)
            return _json(field_)

    async def delete_metadata(self, request: Request) -> Response:
        await self.read_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        with self.state.lock:
            field_ = ds.metadata.pop(str(request.path_params["metadata_id"]), None)
            if field_ is None:
                raise DifyError(400, "invalid_param", "Metadata not found.")
            for d in ds.documents.values():
                if field_["id"] in d.metadata_ids:
                    d.metadata_ids.remove(field_["id"])
                    d.doc_metadata.pop(field_["name"], None)
        return _json(204)

    async def documents_metadata(self, request: Request) -> Response:
        """`update_documents_metadata`: an operation that fails (unknown document) is logged and skipped, as Dify."""
        body = await self.json_body(request)
        _, ds = self.begin(request, counted=True)
        ds = self.own(ds, not_found=True)
        p = _parse(MetadataOperationData, body)
        with self.state.lock:
            for op in p.operation_data:
                doc = ds.documents.get(op.document_id)
                if doc is None:
                    continue
                values = dict(doc.doc_metadata) if op.partial_update else {}
                ids = list(doc.metadata_ids) if op.partial_update else []
                for m in op.metadata_list:
                    values[m.name] = m.value
                    if m.id not in ids:
                        ids.append(m.id)
                doc.doc_metadata, doc.metadata_ids = values, ids
        return _json({"result": "success"})

    # --- control API
    async def fake_stats(self, _: Request) -> Response:
        return _json(self.state.stats())

    async def fake_documents(self, request: Request) -> Response:
        dataset_id = request.query_params.get("dataset_id", "")
        with self.state.lock:
            if dataset_id not in self.state.datasets:
                raise DifyError(404, "not_found", "Dataset not found.")
            now = time.time()
            docs = [{"id": d.id, "name": d.name, "position": d.position, "batch": d.batch, "indexing_status": d.status(now),
                     "size": len(d.content), "sha256": d.sha256,
                     "create_calls": self.state.create_calls[(dataset_id, d.name)]}
                    for d in self.state.documents(dataset_id)]
        return _json({"data": docs})

    async def fake_config(self, request: Request) -> Response:
        body = await self.json_body(request)
        if not isinstance(body, dict):
            raise DifyError(400, "invalid_param", "a JSON object is required")
        fail_next, status = body.pop("fail_next", 0), body.pop("fail_next_status", 500)
        drop = body.pop("fail_after_create", 0)
        try:
            config = self.state.configure(**body)
        except ValidationError as e:
            raise DifyError(400, "invalid_param", str(e)) from None
        if not all(isinstance(v, int) and v >= 0 for v in (fail_next, drop)) or status not in range(500, 600):
            raise DifyError(400, "invalid_param", "fail_next and fail_after_create are counts; fail_next_status is 5xx")
        self.state.fail_next(fail_next, status)
        self.state.fail_after_create(drop)
        return _json(config.model_dump())

    async def fake_keys(self, request: Request) -> Response:
        body = await self.json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("key"), str) or not body["key"]:
            raise DifyError(400, "invalid_param", '{"key": "dataset-…", "tenant"?: "…"} is required')
        return _json({"key": body["key"], "tenant": self.state.add_key(body["key"], body.get("tenant"))})


def _max_chars(ds: FakeDataset, rule_id: str) -> int:
    rules = (ds.process_rules.get(rule_id) or {}).get("rules") or {}
    seg = rules.get("segmentation") or {}
    value = seg.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else 500


# ----------------------------------------------------------------------------- the app
async def _drop(request: Request) -> None:
    """Close the client's connection without a byte of answer (uvicorn then sends nothing either)."""
    cycle = request.scope.get("fake.cycle")
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("cannot reach the connection to drop it")
    transport.abort()
    for _ in range(100):  # until uvicorn has seen the connection go
        if getattr(cycle, "disconnected", True):
            break
        await asyncio.sleep(0)


def create_knowledge_app(state: FakeKnowledgeState) -> Callable[..., Any]:
    """The fake Dify knowledge API as an ASGI app (routes under /v1, control API under /_fake)."""
    api = _Api(state)

    def guarded(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Any:
            at = time.time()
            request.state.counted = False
            status = 200
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except DifyError as e:
                status = e.status
                return _error_response(e.status, e.code, e.message)
            except _DropAnswer:
                status = 0
                await _drop(request)
                return _Nothing()
            finally:
                state.record(request.method, request.url.path, at, status, request.state.counted)
        return endpoint

    async def not_found(request: Request, _: Exception) -> Response:
        state.record(request.method, request.url.path, time.time(), 404, False)
        return _error_response(404, "not_found", "The requested URL was not found on the server. If you entered "
                               "the URL manually please check your spelling and try again.")

    async def not_allowed(request: Request, _: Exception) -> Response:
        state.record(request.method, request.url.path, time.time(), 405, False)
        return _error_response(405, "method_not_allowed", "The method is not allowed for the requested URL.")

    async def welcome(_: Request) -> Response:
        return _json({"welcome": "Dify OpenAPI", "api_version": "v1", "server_version": "1.12.1"})

    ds, doc = "/v1/datasets/{dataset_id:uuid}", "/v1/datasets/{dataset_id:uuid}/documents/{document_id:uuid}"
    routes = [
        Route("/v1/", welcome),
        Route("/v1/datasets", guarded(api.create_dataset), methods=["POST"]),
        Route("/v1/datasets", guarded(api.list_datasets), methods=["GET"]),
        Route(ds, guarded(api.get_dataset), methods=["GET"]),
        Route(ds, guarded(api.patch_dataset), methods=["PATCH"]),
        Route(ds, guarded(api.delete_dataset), methods=["DELETE"]),
        *[Route(f"{ds}/document/create{sep}by{sep}text", guarded(api.create_by_text), methods=["POST"]) for sep in "-_"],
        *[Route(f"{ds}/document/create{sep}by{sep}file", guarded(api.create_by_file), methods=["POST"]) for sep in "-_"],
        *[Route(f"{doc}/update{sep}by{sep}text", guarded(api.update_by_text), methods=["POST"]) for sep in "-_"],
        *[Route(f"{doc}/update{sep}by{sep}file", guarded(api.update_by_file), methods=["POST"]) for sep in "-_"],
        Route(f"{ds}/documents", guarded(api.list_documents), methods=["GET"]),
        Route(doc, guarded(api.get_document), methods=["GET"]),
        Route(doc, guarded(api.delete_document), methods=["DELETE"]),
        Route(f"{ds}/documents/{{batch}}/indexing-status", guarded(api.indexing_status), methods=["GET"]),
        Route(f"{ds}/metadata", guarded(api.create_metadata), methods=["POST"]),
        Route(f"{ds}/metadata", guarded(api.list_metadata), methods=["GET"]),
        Route(f"{ds}/metadata/{{metadata_id:uuid}}", guarded(api.patch_metadata), methods=["PATCH"]),
        Route(f"{ds}/metadata/{{metadata_id:uuid}}", guarded(api.delete_metadata), methods=["DELETE"]),
        Route(f"{ds}/documents/metadata", guarded(api.documents_metadata), methods=["POST"]),
        Route("/_fake/stats", guarded(api.fake_stats), methods=["GET"]),
        Route("/_fake/documents", guarded(api.fake_documents), methods=["GET"]),
        Route("/_fake/config", guarded(api.fake_config), methods=["POST"]),
        Route("/_fake/keys", guarded(api.fake_keys), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":  # uvicorn's send is a bound method of the request cycle, which owns the socket
            scope["fake.cycle"] = getattr(send, "__self__", None)
        await app(scope, receive, send)

    return outer


class _Nothing(Response):
    """No answer at all: the connection is already gone."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        return None


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "timeout graceful shutdown" not in record.getMessage()


def _server(state: FakeKnowledgeState, host: str, port: int) -> tuple[uvicorn.Server, socket.socket]:
    err_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in err_log.filters):
        err_log.addFilter(_QuietDrops())
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY (see tests/fakes/dify_server.py `_server`).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    config = uvicorn.Config(create_knowledge_app(state), lifespan="off", log_config=None, log_level=None,
                            access_log=False, loop="asyncio", timeout_graceful_shutdown=1)
    return uvicorn.Server(config), sock


@contextlib.contextmanager
def run_fake_knowledge(state: FakeKnowledgeState, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `state` with uvicorn in a background thread; yields the base URL ending in /v1."""
    server, sock = _server(state, host, port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="fake-dify-knowledge", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake Dify knowledge server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (e.g. for `bench/knowledge_ingest.py`)::

        python -m tests.fakes.dify_knowledge_server --port 9300 --key dataset-bench --rate-limit 600 \\
            --indexing-seconds 0.5

    Every key is its own tenant; `--dataset NAME` creates a dataset (for the first key) at start.
    Read what happened with `GET /_fake/stats`; change settings with `POST /_fake/config`.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m tests.fakes.dify_knowledge_server",
                                     description="Fake Dify knowledge (dataset) API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--key", action="append", help="a dataset API key (repeatable; default dataset-bench)")
    parser.add_argument("--rate-limit", type=int, default=None, help="counted calls per window (default: unlimited)")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="rate-limit window length (default 60)")
    parser.add_argument("--indexing-seconds", type=float, default=0.2, help="time a document takes to index")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share of create/update calls answered 500")
    parser.add_argument("--dataset", action="append", default=[], help="create a dataset of this name at start")
    args = parser.parse_args(argv)

    state = FakeKnowledgeState(rate_limit_per_minute=args.rate_limit, window_seconds=args.window_seconds,
                               indexing_seconds=args.indexing_seconds, failure_rate=args.failure_rate)
    keys = args.key or ["dataset-bench"]
    for key in keys:
        state.add_key(key)
    for name in args.dataset:
        ds = state.add_dataset(keys[0], name)
        print(f"dataset {name!r}: {ds.id}", file=sys.stderr, flush=True)
    server, sock = _server(state, args.host, args.port)
    print(f"fake Dify knowledge API (keys {', '.join(keys)}; rate limit {args.rate_limit or 'none'} per "
          f"{args.window_seconds:g}s) at http://{args.host}:{sock.getsockname()[1]}/v1", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])  # uvicorn handles SIGINT/SIGTERM
    finally:
        sock.close()


if __name__ == "__main__":
    main()
