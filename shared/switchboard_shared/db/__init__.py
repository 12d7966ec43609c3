"""Database layer: engine and models."""

from .billing import DEFAULT_GROUP, DEFAULT_PRICE_MODEL, Group, Price, UsageRollupDaily, UsageRollupHourly
from .engine import Database
from .models import Base, Channel, SystemSetting, Token, UsageRecord, utcnow

__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PRICE_MODEL",
    "Base",
    "Channel",
    "Database",
    "Group",
    "Price",
    "SystemSetting",
    "Token",
    "UsageRecord",
    "UsageRollupDaily",
    "UsageRollupHourly",
    "utcnow",
]
