"""Thought signatures of Gemini's tool calls, kept between turns.

Gemini 3 refuses a history whose function calls lack the `thoughtSignature` it issued with
them. OpenAI clients send back only a tool call's id, so the signature is stored under that
id (ours and unguessable, or Gemini's) in the shared key-value store, where any worker finds
it on the next turn. An id not found there gets the placeholder Gemini accepts instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from switchboard_shared.kv import KeyValue

#: Long enough for an agent's tool loop and a user coming back to the chat later that day.
TTL_SECONDS = 24 * 3600


class ThoughtSignatures:
    """Tool call id → thought signature, in the key-value store under one channel."""

    def __init__(self, kv: KeyValue, key_prefix: str) -> None:
        self._kv, self._prefix = kv, f"{key_prefix}gemini-signature:"

    def _key(self, channel_id: int, call_id: str) -> str:
        # Per channel: a signature is Google's for one project's key; another channel gets the placeholder.
        return f"{self._prefix}{channel_id}:{call_id}"

    async def remember(self, channel_id: int, signatures: Mapping[str, str]) -> None:
        """Keep the signatures an answer came with."""
        for call_id, signature in signatures.items():
            await self._kv.set(self._key(channel_id, call_id), signature.encode(), TTL_SECONDS)

    async def recall(self, channel_id: int, call_ids: Iterable[str]) -> dict[str, str]:
        """The signatures known for these tool call ids."""
        found = {}
        for call_id in dict.fromkeys(call_ids):
            value = await self._kv.get(self._key(channel_id, call_id))
            if value is not None:
                found[call_id] = value.decode()
        return found
