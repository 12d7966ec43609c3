"""`data:` URLs in a client's content parts (images, files), checked the same way for every adaptor."""

from __future__ import annotations

import base64
import binascii

from .base import UpstreamError


def decode_data_url(url: str) -> tuple[str, bytes]:
    """The MIME type (lower case) and bytes of a base64 `data:` URL; a 400 for anything else."""
    header, sep, payload = url.partition(",")
    if not header.startswith("data:") or not sep or ";base64" not in header:
        raise UpstreamError(
            400, "data: URLs must be base64-encoded ('data:<type>;base64,<data>').", code="invalid_data_url", param="messages"
        )
    mime = header[5:].split(";", 1)[0].strip().lower()
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UpstreamError(400, "The data: URL is not valid base64.", code="invalid_data_url", param="messages") from None
