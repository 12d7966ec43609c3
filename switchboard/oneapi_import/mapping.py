"""One API / New API rows → Switchboard admin API bodies.

Channel types: each project numbers its channel types its own way (One API:
`relay/channeltype/define.go`; New API: `constant/channel.go`), and builds the request URL
from the channel's base URL (or the type's default one) plus `/v1/chat/completions`. The
types below speak the OpenAI API that way (and New API's Dify type the Dify API), so they
become `openai` (or `dify`) channels with base URL + `/v1`, as Switchboard's base URLs end
in their version. Every other type is skipped and listed with its name.

Keys: their clients send `sk-` + the stored key; the import stores the hash of exactly that.
Quotas: their units → money, `quota_per_unit` units per unit of money (One API: 500,000 = 1 USD).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from switchboard_edge.schemas.admin import money_text
from switchboard_shared.money import to_money

from .source import Flavor, SourceChannel, SourceToken

DEFAULT_QUOTA_PER_UNIT = 500_000
_NAME_MAX = 128
_INT32_MAX = 2**31 - 1
_WEIGHT_MAX = 10_000


@dataclass(frozen=True)
class Kind:
    """How one of their channel types becomes a Switchboard channel."""

    type: str  # Switchboard's channel type
    default_base: str  # their default base URL for the type ("" = the channel must have one)
    suffix: str = "/v1"  # appended to their base URL (theirs has no version; ours does)


def _openai(base: str, suffix: str = "/v1") -> Kind:
    return Kind("openai", base, suffix)


#: One API (songquanpeng/one-api relay/channeltype): types whose adaptor is the OpenAI one.
ONEAPI_KINDS: dict[int, Kind] = {
    1: _openai("https://api.openai.com"), 2: _openai("https://oa.api2d.net"), 4: _openai("https://api.closeai-proxy.xyz"),
    5: _openai("https://api.openai-sb.com"), 6: _openai("https://api.openaimax.com"), 7: _openai("https://api.ohmygpt.com"),
    8: _openai(""), 9: _openai("https://api.caipacity.com"), 10: _openai("https://api.aiproxy.io"),
    12: _openai("https://api.api2gpt.com"), 13: _openai("https://api.aigc2d.com"), 20: _openai("https://openrouter.ai/api"),
    25: _openai("https://api.moonshot.cn"), 28: _openai("https://api.mistral.ai"), 29: _openai("https://api.groq.com/openai"),
    30: _openai("http://localhost:11434"),  # Ollama also serves the OpenAI API under /v1
    31: _openai("https://api.lingyiwanwu.com"), 32: _openai("https://api.stepfun.com"), 36: _openai("https://api.deepseek.com"),
    39: _openai("https://api.together.xyz"), 41: _openai("https://api.novita.ai/v3/openai", ""),
    44: _openai("https://api.siliconflow.cn"), 45: _openai("https://api.x.ai"),
    50: _openai("", ""),  # OpenAICompatible: the base URL already ends in its version
}
#: New API (QuantumNous/new-api constant/channel.go).
NEWAPI_KINDS: dict[int, Kind] = {
    1: _openai("https://api.openai.com"), 4: _openai("http://localhost:11434"), 6: _openai("https://api.openaimax.com"),
    7: _openai("https://api.ohmygpt.com"), 9: _openai("https://api.caipacity.com"), 10: _openai("https://api.aiproxy.io"),
    12: _openai("https://api.api2gpt.com"), 13: _openai("https://api.aigc2d.com"), 20: _openai("https://openrouter.ai/api"),
    25: _openai("https://api.moonshot.cn"), 31: _openai("https://api.lingyiwanwu.com"), 37: Kind("dify", "https://api.dify.ai"),
    40: _openai("https://api.siliconflow.cn"), 42: _openai("https://api.mistral.ai"), 43: _openai("https://api.deepseek.com"),
    48: _openai("https://api.x.ai"),
}
#: New API's Custom type takes the full request URL (…/chat/completions), not a base.
_NEWAPI_CUSTOM = 8

#: One API's type names by number (relay/channeltype/define.go), for the list of skipped channels.
ONEAPI_TYPE_NAMES = (
    "Unknown", "OpenAI", "API2D", "Azure", "CloseAI", "OpenAISB", "OpenAIMax", "OhMyGPT", "Custom", "Ails", "AIProxy",
    "PaLM", "API2GPT", "AIGC2D", "Anthropic", "Baidu", "Zhipu", "Ali", "Xunfei", "AI360", "OpenRouter", "AIProxyLibrary",
    "FastGPT", "Tencent", "Gemini", "Moonshot", "Baichuan", "Minimax", "Mistral", "Groq", "Ollama", "LingYiWanWu",
    "StepFun", "AwsClaude", "Coze", "Cohere", "DeepSeek", "Cloudflare", "DeepL", "TogetherAI", "Doubao", "Novita",
    "VertextAI", "Proxy", "SiliconFlow", "XAI", "Replicate", "BaiduV2", "XunfeiV2", "AliBailian", "OpenAICompatible",
    "GeminiOpenAICompatible",
)
#: New API's type names (constant/channel.go).
NEWAPI_TYPE_NAMES = {
    0: "Unknown", 1: "OpenAI", 2: "Midjourney", 3: "Azure", 4: "Ollama", 5: "MidjourneyPlus", 6: "OpenAIMax", 7: "OhMyGPT",
    8: "Custom", 9: "AILS", 10: "AIProxy", 11: "PaLM", 12: "API2GPT", 13: "AIGC2D", 14: "Anthropic", 15: "Baidu", 16: "Zhipu",
    17: "Ali", 18: "Xunfei", 19: "360", 20: "OpenRouter", 21: "AIProxyLibrary", 22: "FastGPT", 23: "Tencent", 24: "Gemini",
    25: "Moonshot", 26: "ZhipuV4", 27: "Perplexity", 31: "LingYiWanWu", 33: "AWS", 34: "Cohere", 35: "MiniMax", 36: "SunoAPI",
    37: "Dify", 38: "Jina", 39: "Cloudflare", 40: "SiliconFlow", 41: "VertexAI", 42: "Mistral", 43: "DeepSeek", 44: "MokaAI",
    45: "VolcEngine", 46: "BaiduV2", 47: "Xinference", 48: "xAI", 49: "Coze", 50: "Kling", 51: "Jimeng", 52: "Vidu",
}


def type_name(flavor: Flavor, channel_type: int) -> str:
    """Their name of a channel type, e.g. `Azure (3)`."""
    if flavor == "oneapi":
        name = ONEAPI_TYPE_NAMES[channel_type] if 0 <= channel_type < len(ONEAPI_TYPE_NAMES) else "unknown"
    else:
        name = NEWAPI_TYPE_NAMES.get(channel_type, "unknown")
    return f"{name} ({channel_type})"


@dataclass
class Skip:
    """Something of the source that is not imported, and why."""

    what: str  # "channel" | "token"
    source_id: int
    name: str
    reason: str


@dataclass
class ChannelPlan:
    """A Switchboard channel to create for (one key of) a source channel."""

    source_id: int
    marker: str  # kept in the channel's options: how a second import knows it is there
    body: dict[str, Any]  # POST /api/channels
    source_type: str


def marker_of(flavor: Flavor, label: str, channel_id: int, key_index: int, keys: int) -> str:
    """The import marker of (one key of) a source channel."""
    suffix = f"/key:{key_index + 1}" if keys > 1 else ""
    return f"{flavor}:{label}#channel:{channel_id}{suffix}"


def plan_channel(channel: SourceChannel, flavor: Flavor, label: str) -> list[ChannelPlan] | Skip:
    """The channels to create for a source channel, or why it is skipped."""
    source_type = type_name(flavor, channel.type)
    kinds = ONEAPI_KINDS if flavor == "oneapi" else NEWAPI_KINDS
    name = (channel.name.strip() or f"{flavor} channel {channel.id}")[:_NAME_MAX]
    if flavor == "newapi" and channel.type == _NEWAPI_CUSTOM:
        kind, base = Kind("openai", "", ""), _custom_base(channel.base_url)
        if base is None:
            return Skip("channel", channel.id, name, f"{source_type}: its URL does not end in /chat/completions")
    elif channel.type in kinds:
        kind = kinds[channel.type]
        base = (channel.base_url or kind.default_base).rstrip("/")
        if not base:
            return Skip("channel", channel.id, name, f"{source_type}: no base URL")
        base += kind.suffix
    else:
        return Skip("channel", channel.id, name, f"{source_type}: Switchboard has no channel of this kind")
    if not channel.keys:
        return Skip("channel", channel.id, name, f"{source_type}: no key")
    if not channel.models and kind.type != "dify":
        return Skip("channel", channel.id, name, f"{source_type}: no models")
    plans = []
    for index, key in enumerate(channel.keys):
        marker = marker_of(flavor, label, channel.id, index, len(channel.keys))
        options: dict[str, Any] = {"imported_from": marker}
        body = {
            "name": name if len(channel.keys) == 1 else f"{name[: _NAME_MAX - 8]} #{index + 1}",
            "type": kind.type,
            "base_url": base,
            "api_key": key,
            "models": channel.models,
            "priority": max(-_INT32_MAX, min(_INT32_MAX, channel.priority)),
            "weight": min(_WEIGHT_MAX, channel.weight) if channel.weight > 0 else 1,  # their 0 = an equal share
            "enabled": channel.status == 1,
            "options": options,
            "model_mapping": channel.model_mapping or {},
        }
        plans.append(ChannelPlan(channel.id, marker, body, source_type))
    return plans


def _custom_base(url: str) -> str | None:
    url = url.strip().rstrip("/")
    return url.removesuffix("/chat/completions") if url.endswith("/chat/completions") and "{model}" not in url else None


def token_body(token: SourceToken, flavor: Flavor, quota_per_unit: float, groups: set[str]) -> dict[str, Any] | Skip:
    """The body of `POST /api/import/tokens` for a source token, or why it is skipped."""
    name = (token.name.strip() or f"{flavor} token {token.id}")[:_NAME_MAX]
    if not token.key:
        return Skip("token", token.id, name, "no key")
    quota = None if token.unlimited_quota else to_money(Decimal(max(token.remain_quota, 0)) / Decimal(str(quota_per_unit)))
    body: dict[str, Any] = {
        "key": "sk-" + token.key,  # what their clients send: `sk-` + the stored key
        "name": name,
        "quota": None if quota is None else money_text(quota),
        "models": token.models,
        "allowed_ips": token.allowed_ips,
        "expires_at": expiry(token.expired_time),
        "enabled": token.status != 2,  # expired (3) and exhausted (4) follow from expires_at and quota
    }
    if token.group and token.group in groups:
        body["group"] = token.group
    return body


def expiry(expired_time: int) -> str | None:
    """Their expiry (Unix seconds, -1 = never) as an ISO date-time."""
    if expired_time <= 0:
        return None
    return datetime.fromtimestamp(expired_time, UTC).isoformat()


def multiplier(ratio: float) -> str:
    """A group ratio of theirs as a Switchboard group multiplier (an exact decimal string)."""
    return money_text(to_money(Decimal(str(ratio))))
