"""Database layer: engine and models."""

from .engine import Database
from .models import Base, Channel, SystemSetting, Token, UsageRecord, utcnow

__all__ = ["Base", "Channel", "Database", "SystemSetting", "Token", "UsageRecord", "utcnow"]
