"""The job kinds (chat, legacy completions, embeddings) without a stack: who serves what, estimates, rendering."""

from __future__ import annotations

import base64
import struct
from typing import get_args

import orjson
import pytest

from switchboard_edge.quota_reservation import completion_budget
from switchboard_relay.channels.base import Delta, UpstreamError, Usage
from switchboard_relay.channels.openai.embeddings import embeddings_of
from switchboard_relay.channels.registry import ADAPTORS
from switchboard_relay.embedding_render import render_embeddings
from switchboard_relay.legacy_render import TextChunkRenderer, TextCompletionAggregate
from switchboard_shared.channel_types import SERVED_KINDS, serves_kind
from switchboard_shared.contracts import JobKind
from switchboard_shared.token_estimate import estimate_prompt_tokens


def test_the_edge_and_the_adaptors_agree_on_who_serves_which_kind() -> None:
    # The edge routes by SERVED_KINDS, the worker by the methods an adaptor implements: they must not drift apart.
    kinds: tuple[JobKind, ...] = get_args(JobKind)
    assert {name: cls.kinds() for name, cls in ADAPTORS.items()} == {
        name: frozenset(kind for kind in kinds if serves_kind(name, kind)) for name in ADAPTORS
    }
    assert set(SERVED_KINDS) <= set(ADAPTORS), "a kind is declared for a channel type no adaptor serves"
    assert serves_kind("openai", "embedding") and not serves_kind("dify", "embedding")
    assert serves_kind("some-future-kind", "chat") and not serves_kind("some-future-kind", "embedding")


def test_prompt_and_input_estimates() -> None:
    assert estimate_prompt_tokens({"input": "abcdefgh"}) == 2
    assert estimate_prompt_tokens({"input": ["abcd", "abcdefgh"]}) == 3
    assert estimate_prompt_tokens({"input": [5, 6, 7]}) == 3
    assert estimate_prompt_tokens({"input": [[1, 2], [3]]}) == 3
    assert estimate_prompt_tokens({"prompt": "你好"}) == 2
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": "abcd"}]}) == 3 + 4 + 1


def test_embeddings_reserve_no_completion_tokens() -> None:
    assert completion_budget({"input": "a"}, 4096, "embedding") == 0
    assert completion_budget({"messages": [], "max_tokens": 10}, 4096, "chat") == 10
    assert completion_budget({"messages": []}, 4096) == 4096


def _packed(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def test_vectors_render_in_the_asked_encoding_whatever_the_upstream_sent() -> None:
    floats = [0.5, -0.25, 1.0]
    answer = embeddings_of(
        {
            "data": [{"index": 1, "embedding": _packed(floats)}, {"index": 0, "embedding": floats}],
            "usage": {"prompt_tokens": 4, "total_tokens": 4},
        }
    )
    assert answer.usage == Usage(4, 0)
    as_floats = orjson.loads(render_embeddings(answer.vectors, "float", "m", Usage(4, 0)))
    assert as_floats == {
        "object": "list",
        "model": "m",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
        "data": [
            {"object": "embedding", "index": 0, "embedding": floats},
            {"object": "embedding", "index": 1, "embedding": floats},
        ],
    }
    as_base64 = orjson.loads(render_embeddings(answer.vectors, "base64", "m", Usage(4, 0)))
    assert [d["embedding"] for d in as_base64["data"]] == [_packed(floats), _packed(floats)]


@pytest.mark.parametrize(
    "data",
    [
        None,
        [1, 2],
        [{"index": 0, "embedding": "not base64!"}],
        [{"index": 0, "embedding": base64.b64encode(b"abc").decode()}],  # not whole float32s
        [{"index": 0, "embedding": ["0.1"]}],
        [{"index": 0, "embedding": [1e39]}],  # no float32 is that large
        [{"index": 0, "embedding": [True]}],
        [{"index": 0, "embedding": [0.1]}, {"index": 0, "embedding": [0.2]}],
        [{"index": 1, "embedding": [0.1]}],
        [{"index": -1, "embedding": [0.1]}],
    ],
)
def test_a_malformed_upstream_answer_is_a_clean_502(data: object) -> None:
    with pytest.raises(UpstreamError) as failure:
        embeddings_of({"data": data})
    assert failure.value.status == 502 and failure.value.code == "upstream_invalid_response"


def test_a_legacy_completion_reserves_a_budget_per_choice() -> None:
    assert completion_budget({"prompt": "a", "max_tokens": 10}, 4096, "completion") == 10
    assert completion_budget({"prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2}, 4096, "completion") == 60
    assert completion_budget({"prompt": [1, 2, 3], "max_tokens": 10}, 4096, "completion") == 10  # one token array
    assert completion_budget({"prompt": [[1], [2]]}, 100, "completion") == 200


def test_legacy_rendering_keeps_choices_apart_and_drops_what_it_cannot_carry() -> None:
    aggregate, renderer = TextCompletionAggregate(), TextChunkRenderer("rid", "m")
    deltas = [
        Delta(content="a", index=1),
        Delta(content="b"),
        Delta(reasoning_content="thinking"),
        Delta(content="c", index=1, finish_reason="length"),
        Delta(finish_reason="stop"),
    ]
    chunks = [renderer.chunk(d) for d in deltas]
    for delta in deltas:
        aggregate.add(delta)
    assert chunks[2] is None, "reasoning has no place in a text_completion chunk"
    first = orjson.loads(chunks[0] or b"")
    assert first["id"] == "cmpl-rid" and first["object"] == "text_completion"
    assert first["choices"] == [{"text": "a", "index": 1, "logprobs": None, "finish_reason": None}]
    whole = orjson.loads(aggregate.render("rid", "m", Usage(3, 2)))
    assert [(c["index"], c["text"], c["finish_reason"]) for c in whole["choices"]] == [(0, "b", "stop"), (1, "ac", "length")]
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert aggregate.text() == "bac" and aggregate.has_output
