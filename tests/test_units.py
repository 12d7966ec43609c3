"""Unit tests of pure pieces: tool-call detection, zero-width ids, transcripts, channel order, aggregation."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal
from typing import Any

import orjson
import pytest

from switchboard_edge.client_ip import ClientAddresses
from switchboard_edge.rate_limits import duration
from switchboard_relay.channels.base import ChannelConfig, Delta
from switchboard_relay.channels.dify import zero_width
from switchboard_relay.channels.dify.tool_protocol import ToolCallDetector, parse_calls
from switchboard_relay.channels.dify.transcript import new_turn_start, render
from switchboard_relay.openai_render import CompletionAggregate
from switchboard_relay.picker import attempt_order
from switchboard_shared.pricing import ModelPrice, cost_of, match_price
from switchboard_shared.token_estimate import estimate_text_tokens

CALL = '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>'


def feed_all(detector: ToolCallDetector, pieces: list[str]) -> str:
    return "".join(detector.feed(p) for p in pieces) + detector.finish()


@pytest.mark.parametrize("size", [1, 2, 5, 13, len(CALL)])
def test_tool_call_split_anywhere_is_detected_and_never_leaks(size: int) -> None:
    detector = ToolCallDetector({"get_weather"})
    pieces = [CALL[i : i + size] for i in range(0, len(CALL), size)]
    assert feed_all(detector, pieces) == ""
    assert detector.calls is not None and len(detector.calls) == 1
    call = detector.calls[0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert call["id"].startswith("call_") and call["index"] == 0


def test_plain_text_passes_and_only_a_possible_tag_prefix_is_held() -> None:
    detector = ToolCallDetector({"get_weather"})
    assert detector.feed("Hello <") == "Hello "  # "<" may start the tag
    assert detector.feed("b>bold") == "<b>bold"  # it did not
    assert detector.finish() == ""
    assert detector.calls is None


def test_text_before_a_call_is_content_and_an_invalid_call_stays_text() -> None:
    detector = ToolCallDetector({"get_weather"})
    assert feed_all(detector, ["Let me check. ", CALL]) == "Let me check. "
    assert detector.calls is not None
    unknown = ToolCallDetector({"other_tool"})
    assert feed_all(unknown, [CALL]) == CALL
    assert unknown.calls is None


def test_unclosed_tag_with_valid_json_is_still_a_call() -> None:
    assert parse_calls('[{"name": "f", "arguments": "{\\"a\\": 1}"}]', {"f"})[0]["function"]["arguments"] == '{"a":1}'
    detector = ToolCallDetector({"get_weather"})
    assert feed_all(detector, [CALL.removesuffix("</tool_calls>")]) == ""
    assert detector.calls is not None


def test_zero_width_round_trip_and_strip() -> None:
    conversation_id = "5d9a1c2e-8f0b-4c7a-9b1d-2e3f4a5b6c7d"
    hidden = zero_width.encode(conversation_id)
    assert hidden and all(ch in zero_width.ALPHABET for ch in hidden)
    reply = "Sure, here you go." + hidden
    assert zero_width.decode(reply) == conversation_id
    assert zero_width.strip(reply) == "Sure, here you go."
    assert zero_width.decode("no id here") is None


def test_transcript_single_message_is_verbatim_and_history_is_labelled() -> None:
    assert render([{"role": "user", "content": "hi"}]) == "hi"
    turns = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    text = render(turns, "be brief")
    assert text.startswith("System:\nbe brief\n\nUser:\nweather?")
    assert "[called tool w (c1) with {}]" in text
    assert text.endswith("Tool result (c1, w):\nsunny")
    assert new_turn_start(turns) == 2


def _channel(cid: int, priority: int, weight: int) -> ChannelConfig:
    return ChannelConfig(cid, f"c{cid}", "openai", "http://x", "k", ("m",), {}, {}, priority, weight)


def test_attempt_order_is_priority_first_then_weighted() -> None:
    channels = [_channel(1, 0, 1), _channel(2, 10, 1), _channel(3, 10, 3)]
    rng = random.Random(7)
    firsts = Counter(attempt_order(channels, rng)[0].id for _ in range(4000))
    assert set(firsts) == {2, 3}  # the priority-0 channel is never first
    assert 0.68 < firsts[3] / 4000 < 0.82  # weight 3 vs 1 → about 75 %
    assert all(attempt_order(channels, rng)[-1].id == 1 for _ in range(50))


def test_aggregate_merges_tool_call_fragments_and_replace() -> None:
    aggregate = CompletionAggregate()
    aggregate.add(Delta(tool_calls=[{"index": 0, "id": "c1", "type": "function", "function": {"name": "get_", "arguments": ""}}]))
    aggregate.add(Delta(tool_calls=[{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}]))
    aggregate.add(Delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}], finish_reason="tool_calls"))
    assert aggregate.tool_calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    aggregate.add(Delta(content="bad words"))
    aggregate.add(Delta(content="[filtered]", replace=True))
    assert "".join(aggregate.content) == "[filtered]"


def test_token_estimate_counts_cjk_per_character() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd" * 10) == 10
    assert estimate_text_tokens("你好世界") == 4


async def test_lines_received_before_a_connection_break_are_relayed() -> None:
    """aiohttp raises a stored connection error before buffered bytes; those bytes still reach us."""
    import asyncio

    import aiohttp

    from switchboard_relay.channels.base import UpstreamError
    from switchboard_relay.channels.upstream_http import UpstreamResponse

    class _Protocol:
        _reading_paused = False

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    class _Response:
        status = 200

        def __init__(self, content: aiohttp.StreamReader) -> None:
            self.content = content

    content = aiohttp.StreamReader(_Protocol(), 2**16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    content.feed_data(b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: {"c"')
    content.set_exception(aiohttp.ClientPayloadError("connection cut"))
    lines: list[str] = []
    with pytest.raises(UpstreamError) as caught:
        async for line in UpstreamResponse(_Response(content), 2**20).lines():  # type: ignore[arg-type]
            lines.append(line)
    assert lines == ['data: {"a": 1}', "", 'data: {"b": 2}', ""]  # the cut-off partial line is not relayed
    assert caught.value.retryable and caught.value.status == 502


# ---------------------------------------------------------------- client address and rate-limit headers


def _scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 50000), "headers": headers}


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies() -> None:
    addresses = ClientAddresses("10.0.0.0/8, 2001:db8::1")
    assert str(addresses.of(_scope("203.0.113.5", "198.51.100.1"))) == "203.0.113.5"  # untrusted peer: header ignored
    assert str(addresses.of(_scope("10.1.1.1", "198.51.100.1, 203.0.113.9"))) == "203.0.113.9"  # rightmost untrusted hop
    assert str(addresses.of(_scope("10.1.1.1", "198.51.100.1, 203.0.113.9, 10.2.2.2"))) == "203.0.113.9"
    assert str(addresses.of(_scope("2001:db8::1", "::ffff:192.0.2.4"))) == "192.0.2.4"  # IPv4-mapped counts as IPv4
    assert str(addresses.of(_scope("10.1.1.1"))) == "10.1.1.1"  # no header: the proxy itself
    assert addresses.of(_scope("10.1.1.1", "not-an-address")) is None
    assert str(ClientAddresses("").of(_scope("127.0.0.1", "10.9.9.9"))) == "127.0.0.1"
    with pytest.raises(ValueError, match="not an IP address"):
        ClientAddresses("10.0.0.0/8,nonsense")


def test_rate_limit_durations_read_like_openai() -> None:
    assert [duration(ms) for ms in (20, 1000, 1500, 60_000, 61_500, 360_000)] == ["20ms", "1s", "1.5s", "1m0s", "1m1.5s", "6m0s"]


def test_price_patterns_longest_prefix_then_default() -> None:
    prices = {"*": ModelPrice(per_call=Decimal(1)), "gpt-*": ModelPrice(per_call=Decimal(2)),
              "gpt-4o*": ModelPrice(per_call=Decimal(3)), "gpt-4o-mini": ModelPrice(per_call=Decimal(4))}
    assert [match_price(prices, m).per_call for m in ("gpt-4o-mini", "gpt-4o-2024", "gpt-3.5", "claude")] == [4, 3, 2, 1]
    assert match_price({}, "anything").per_call == 0
    price = ModelPrice(Decimal("0.15"), Decimal("0.6"), Decimal("0.001"))
    assert cost_of(price, Decimal("1.5"), 1000, 500) == Decimal("0.002175")  # (0.001 + 0.00015 + 0.0003) × 1.5
