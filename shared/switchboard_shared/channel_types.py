"""Channel kinds known to every service: their queue family and the models they serve."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .contracts import JOB_ENDPOINTS, JobKind
from .errors import OpenAIError

#: channel type → queue family. Ops scale the workers of each family apart.
CHANNEL_FAMILIES: dict[str, str] = {
    "openai": "openai",
    "dify": "dify",
    "anthropic": "openai",  # HTTP upstreams that answer like a model: the openai-family workers serve them
    "gemini": "openai",
    "azure": "openai",
}

#: Channel types whose adaptor learns facts from the upstream when the channel is saved (stored in
#: `channels.info`; a channel without models serves the name it learns). Saving one asks a relay worker.
LEARNS_ON_SAVE: frozenset[str] = frozenset({"dify"})

#: Channel types that, saved without models, serve nothing: the save asks a relay worker for the
#: upstream's model list and is refused with it (a 400 naming the ids), so the admin picks the models.
LISTS_MODELS_ON_SAVE: frozenset[str] = frozenset({"openai"})


#: channel type → the job kinds (endpoints) its adaptor serves; a type not listed serves chat only.
#: The edge routes a job to the family of the best channel that serves its kind; the relay's
#: adaptors implement exactly these (tests/test_job_kinds.py checks that they agree).
SERVED_KINDS: dict[str, frozenset[JobKind]] = {
    "openai": frozenset({"chat", "completion", "embedding"}),
    "azure": frozenset({"chat", "completion", "embedding"}),
    "dify": frozenset({"chat", "completion"}),  # completions on completion apps only (the adaptor checks the mode)
    "gemini": frozenset({"chat", "embedding"}),
}


def serves_kind(channel_type: str, kind: JobKind) -> bool:
    """Whether channels of `channel_type` serve jobs of `kind`."""
    return kind in SERVED_KINDS.get(channel_type, frozenset({"chat"}))


def kind_not_served(model: str, kind: JobKind) -> OpenAIError:
    """The 404 of a model none of whose channels offers `kind`'s endpoint (e.g. embeddings of a Dify app)."""
    return OpenAIError(
        404, f"The model '{model}' is not available on {JOB_ENDPOINTS[kind]}: none of its channels offers it.",
        code="model_not_supported", param="model",
    )


def family_of(channel_type: str) -> str:
    """The queue family jobs for a channel type travel on."""
    return CHANNEL_FAMILIES.get(channel_type, "openai")


def served_models(models: Iterable[str], info: dict[str, Any] | None) -> list[str]:
    """Model names a channel answers to: the configured ones, else the name learned from the upstream."""
    configured = [m for m in models if m]
    if configured:
        return configured
    name = (info or {}).get("name")
    return [name] if name else []
