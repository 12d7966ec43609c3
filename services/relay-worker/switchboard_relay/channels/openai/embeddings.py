"""OpenAI-compatible embeddings: the request as the upstream takes it, its answer checked into `Embeddings`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from switchboard_shared.contracts import ChatJob

from ..base import ChannelConfig, Embeddings, Vector, upstream_model
from ..errors import invalid_response
from .answer import usage_of

#: The largest float32: a vector is float32 on the wire (base64), so a larger number is not an embedding.
_FLOAT32_MAX = 3.4028234663852886e38
# Fields of ours that no upstream should see.
_GATEWAY_FIELDS = ("dify",)


def embeddings_request(job: ChatJob, channel: ChannelConfig) -> dict[str, Any]:
    """The client's body with the upstream's model name (`encoding_format` as asked: either answer is understood)."""
    body = {k: v for k, v in job.body.items() if k not in _GATEWAY_FIELDS}
    body["model"] = upstream_model(job, channel)
    return body


def embeddings_of(answer: dict[str, Any]) -> Embeddings:
    """The upstream's `{"object": "list", "data": [...], "usage": ...}`, vectors ordered by their `index`."""
    data = answer.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise invalid_response("'data' is not a list of objects")
    indexed: dict[int, Vector] = {}
    for position, item in enumerate(data):
        index = item.get("index", position)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0 or index in indexed:
            raise invalid_response("an embedding's 'index' is not a distinct non-negative integer")
        indexed[index] = _vector(item.get("embedding"))
    if sorted(indexed) != list(range(len(indexed))):
        raise invalid_response("the embeddings' indexes have gaps")
    usage = answer.get("usage")
    return Embeddings([indexed[i] for i in range(len(indexed))], usage_of(usage) if usage else None)


def _vector(raw: Any) -> Vector:
    """A list of numbers, or base64 of little-endian float32s (what `encoding_format: base64` returns)."""
    if isinstance(raw, str):
        try:
            packed = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_response("an embedding is a string but not base64") from None
        if len(packed) % 4:
            raise invalid_response("a base64 embedding is not a whole number of float32 values")
        return packed
    if isinstance(raw, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= _FLOAT32_MAX for v in raw
    ):
        return [float(v) for v in raw]
    raise invalid_response("an embedding is neither a list of numbers nor base64")
