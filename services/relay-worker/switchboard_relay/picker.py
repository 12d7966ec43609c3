"""Channel choice: highest priority tier first, weighted random inside a tier."""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import groupby

from .channels.base import ChannelConfig


def attempt_order(channels: Sequence[ChannelConfig], rng: random.Random | None = None) -> list[ChannelConfig]:
    """All channels in the order to try them: tiers by descending priority, each tier a weighted shuffle."""
    rng = rng or random
    ordered: list[ChannelConfig] = []
    by_priority = sorted(channels, key=lambda c: -c.priority)
    for _, tier in groupby(by_priority, key=lambda c: c.priority):
        ordered.extend(_weighted_shuffle(list(tier), rng))
    return ordered


def _weighted_shuffle(tier: list[ChannelConfig], rng: random.Random) -> list[ChannelConfig]:
    # Efraimidis–Spirakis: sort by u^(1/w); a weight of 0 still gets a (last) chance.
    return sorted(tier, key=lambda c: rng.random() ** (1.0 / max(c.weight, 1e-6)), reverse=True)
