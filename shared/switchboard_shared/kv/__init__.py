"""Key-value store: Redis in distributed mode, a dict in the embedded one."""

from .base import KeyValue

__all__ = ["KeyValue"]
