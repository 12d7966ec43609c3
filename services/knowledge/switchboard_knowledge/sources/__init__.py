"""A document's content, ready to send to Dify: stored text or file bytes, or fetched from a URL."""

from .content import Content, load_content, names_in_dify
from .errors import SourceError
from .url_fetch import UrlFetcher

__all__ = ["Content", "SourceError", "UrlFetcher", "load_content", "names_in_dify"]
