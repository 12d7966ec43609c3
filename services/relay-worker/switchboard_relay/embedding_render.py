"""Embeddings → OpenAI's `{"object": "list", ...}` response, in the encoding the client asked for.

`base64` is the vector's little-endian float32 bytes, base64-encoded (what OpenAI returns); an
upstream that answered floats anyway is converted here, and base64 from an upstream is decoded
for a client that asked for floats.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from .channels.base import Usage, Vector


def render_embeddings(vectors: list[Vector], encoding_format: str, model: str, usage: Usage) -> bytes:
    """The whole response body; `usage` counts prompt tokens only (embeddings produce none)."""
    data = [{"object": "embedding", "index": i, "embedding": _encoded(v, encoding_format)} for i, v in enumerate(vectors)]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }
    )


def _encoded(vector: Vector, encoding_format: str) -> Any:
    if encoding_format == "base64":
        packed = vector if isinstance(vector, bytes) else struct.pack(f"<{len(vector)}f", *vector)
        return base64.b64encode(packed).decode("ascii")
    if isinstance(vector, bytes):
        return list(struct.unpack(f"<{len(vector) // 4}f", vector))
    return vector
