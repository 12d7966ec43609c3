"""Database layer: engine and models."""

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
    "DOCUMENT_SETTLED",
    "JOB_FINISHED",
    "Base",
    "Channel",
    "Database",
    "DocumentState",
    "JobStatus",
    "KnowledgeContent",
    "KnowledgeDatasetDocument",
    "KnowledgeDocument",
    "KnowledgeJob",
    "KnowledgeTarget",
    "Operation",
    "SourceKind",
    "SystemSetting",
    "Token",
    "UsageRecord",
    "utcnow",
]
