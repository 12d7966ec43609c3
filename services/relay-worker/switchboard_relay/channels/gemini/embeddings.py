"""OpenAI embeddings → Gemini `batchEmbedContents`, and its answer checked into `Embeddings`.

Gemini embeds text only (no token arrays), takes at most `BATCH` texts per call (so longer
inputs go in several calls, in order) and reports no usage: the call is billed by estimate.
"""

from __future__ import annotations

from typing import Any

from ..base import UpstreamError, Vector
from ..errors import invalid_response

#: Gemini's limit on the requests of one `batchEmbedContents` call.
BATCH = 100
_FLOAT32_MAX = 3.4028234663852886e38


def embedding_texts(value: Any) -> list[str]:
    """The (edge-checked) `input` as texts; token arrays are a 400 (Gemini has no token ids)."""
    texts = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(t, str) for t in texts):
        raise UpstreamError(400, "Gemini channels embed text, not token arrays.", code="unsupported_input", param="input")
    return texts


def batch_request(texts: list[str], model: str, dimensions: int | None) -> dict[str, Any]:
    """One `batchEmbedContents` body: a request per text, each naming the model, as the API wants."""
    requests = []
    for text in texts:
        request: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            request["outputDimensionality"] = dimensions
        requests.append(request)
    return {"requests": requests}


def vectors_of(answer: dict[str, Any], expected: int) -> list[Vector]:
    """`{"embeddings": [{"values": [...]}, ...]}`, one per request, in order."""
    embeddings = answer.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != expected:
        raise invalid_response("'embeddings' is not a list with one entry per input")
    vectors: list[Vector] = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= _FLOAT32_MAX for v in values
        ):
            raise invalid_response("an embedding's 'values' is not a list of numbers")
        vectors.append([float(v) for v in values])
    return vectors
