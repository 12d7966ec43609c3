"""Azure OpenAI channel: OpenAI's Chat Completions and Embeddings on Azure's paths, with Azure's `api-key` header.

Azure answers exactly as OpenAI does (plus content-filter fields clients may ignore, and a first
stream chunk without choices), so the request bodies and the answers are the openai adaptor's; only
where the call goes and how the key travels differ.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from pydantic import ValidationError

from switchboard_shared.channel_options import AzureOptions
from switchboard_shared.contracts import ChatJob

from ..base import ChannelConfig, UpstreamError, upstream_model
from ..openai.adaptor import OpenAIAdaptor


class AzureOpenAIAdaptor(OpenAIAdaptor):
    """An Azure OpenAI resource: `base_url` is its endpoint (`https://<resource>.openai.azure.com`)."""

    type = "azure"

    def endpoint(self, job: ChatJob, channel: ChannelConfig, operation: str) -> str:
        options = _options(channel)
        deployment = quote(deployment_for(job, channel, options), safe="")
        query = urlencode({"api-version": options.api_version})
        return f"{channel.base_url.rstrip('/')}/openai/deployments/{deployment}/{operation}?{query}"

    def auth_headers(self, channel: ChannelConfig) -> dict[str, str] | None:
        return {"api-key": channel.api_key}


def deployment_for(job: ChatJob, channel: ChannelConfig, options: AzureOptions) -> str:
    """The deployment serving the job's model: `deployments` by the public name, then by the
    `model_mapping` name; without an entry, the (mapped) model name is the deployment's."""
    model = upstream_model(job, channel)
    return options.deployments.get(job.model) or options.deployments.get(model) or model


def _options(channel: ChannelConfig) -> AzureOptions:
    """The channel's options (checked when it was saved; a row changed behind the API's back is a clean 502)."""
    try:
        return AzureOptions.model_validate(channel.options or {})
    except ValidationError:
        raise UpstreamError(
            502, f"channel {channel.id} has invalid options", code="invalid_channel_options", retryable=True
        ) from None
