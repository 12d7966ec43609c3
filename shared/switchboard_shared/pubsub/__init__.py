"""Pub/sub: Redis in distributed mode, in-process in the embedded one."""

from .base import Handler, PubSub

__all__ = ["Handler", "PubSub"]
