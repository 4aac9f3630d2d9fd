"""Renders ranked context as one block for the LLM, within a token budget."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from voiceagent_backbone.context_svc.index import Hit, Source

HEADER = "Context that may help with the user's last turn (most relevant first):"


def estimate_tokens(text: str) -> int:
    """Tokens of `text` for common LLM tokenizers, erring high: English averages about four
    characters or 0.75 words per token; the larger of the two estimates is used."""
    return max(math.ceil(len(text) / 4), math.ceil(len(text.split()) * 4 / 3)) + 1


def date_label(at_us: int) -> str:
    """ "8 May 2023": how turns are dated, in the index and in the rendered block."""
    at = datetime.fromtimestamp(at_us / 1_000_000, UTC)
    return f"{at.day} {at:%B %Y}"


def line(hit: Hit) -> str:
    entry = hit.entry
    if entry.source is Source.MEMORY:
        return f"- [{date_label(entry.occurred_at_us)}] {entry.speaker}: {entry.text}"
    if entry.source is Source.KNOWLEDGE:
        title = f' "{entry.title}"' if entry.title else ""
        return f"- From the knowledge base{title}: {entry.text}"
    return f"- About the user: {entry.text}"


def render(hits: list[Hit], token_budget: int) -> tuple[str, int, list[Hit]]:
    """(block, its estimated tokens, the hits in it). Items that do not fit are left out;
    a smaller one further down may still fit."""
    used = estimate_tokens(HEADER)
    if not hits or used >= token_budget:
        return "", 0, []
    lines = [HEADER]
    kept: list[Hit] = []
    for hit in hits:
        text = line(hit)
        cost = estimate_tokens(text)
        if used + cost > token_budget:
            continue
        lines.append(text)
        kept.append(hit)
        used += cost
    if not kept:
        return "", 0, []
    return "\n".join(lines), used, kept
