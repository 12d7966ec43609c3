"""Call-rate limits shared by every process: Redis in distributed mode, in-process in the embedded one."""

from .base import RateLimiter, spacing_seconds

__all__ = ["RateLimiter", "spacing_seconds"]
