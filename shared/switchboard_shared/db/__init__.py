"""Database layer: engine and models."""

from .billing import DEFAULT_GROUP, DEFAULT_PRICE_MODEL, Group, Price, UsageRollupDaily, UsageRollupHourly
from .engine import Database
from .knowledge import (
    DOCUMENT_SETTLED,
    JOB_FINISHED,
    DocumentState,
    JobStatus,
    KnowledgeContent,
    KnowledgeDatasetDocument,
    KnowledgeDocument,
    KnowledgeJob,
    KnowledgeTarget,
    Operation,
    SourceKind,
)
from .models import Base, Channel, SystemSetting, Token, UsageRecord, utcnow

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PRICE_MODEL",
    "DOCUMENT_SETTLED",
    "JOB_FINISHED",
    "Base",
    "Channel",
    "Database",
    "DocumentState",
    "Group",
    "JobStatus",
    "KnowledgeContent",
    "KnowledgeDatasetDocument",
    "KnowledgeDocument",
    "KnowledgeJob",
    "KnowledgeTarget",
    "Operation",
    "Price",
    "SourceKind",
    "SystemSetting",
    "Token",
    "UsageRecord",
    "UsageRollupDaily",
    "UsageRollupHourly",
    "utcnow",
]
