"""The one error a source raises: its message is the document's error."""


class SourceError(Exception):
    """The content cannot or may not be had; the message says why."""
