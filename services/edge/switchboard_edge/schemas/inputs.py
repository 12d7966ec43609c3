"""The text inputs of the legacy completions (`prompt`) and embeddings (`input`) endpoints.

Both take, as OpenAI does, a string, a list of strings, one token array (a list of token ids)
or a list of token arrays. Checked by hand rather than as a pydantic union, so a wrong value
gets one message that says what is accepted instead of one per union branch.
"""

from __future__ import annotations

from typing import Any

#: OpenAI's limit on the items of one request's list.
MAX_ITEMS = 2048
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
#: The JSON schema of such a field, for the OpenAPI document (`Field(json_schema_extra=INPUTS_SCHEMA)`).
INPUTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_ITEMS},
        _TOKENS,
        {"type": "array", "items": _TOKENS, "minItems": 1, "maxItems": MAX_ITEMS},
    ]
}


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_inputs(value: Any, name: str, *, empty_text: bool) -> Any:
    """`value` if it is a string, a list of strings, a token array or a list of token arrays; else ValueError.

    `empty_text`: whether an empty string is a valid input (a completion prompt may be empty,
    an embedding input may not).
    """
    accepted = (
        f"'{name}' must be a {'' if empty_text else 'non-empty '}string, an array of "
        f"{'' if empty_text else 'non-empty '}strings, an array of token ids (integers ≥ 0) or an array of "
        f"token arrays, with at most {MAX_ITEMS} items"
    )
    if isinstance(value, str):
        if not value and not empty_text:
            raise ValueError(f"'{name}' must not be an empty string")
        return value
    if not isinstance(value, list) or not value or len(value) > MAX_ITEMS:
        raise ValueError(accepted)
    if all(isinstance(item, str) and (item or empty_text) for item in value):
        return value
    if all(_is_token(item) for item in value):
        return value
    if all(isinstance(item, list) and item and all(_is_token(t) for t in item) for item in value):
        return value
    raise ValueError(accepted)


def input_count(value: Any) -> int:
    """How many inputs a checked value holds: one string or token array counts as one."""
    if isinstance(value, list) and value and not _is_token(value[0]):
        return len(value)
    return 1
