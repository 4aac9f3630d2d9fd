"""Splits knowledge documents into retrievable chunks.

Chunks follow sentence and paragraph boundaries and hold at most `max_words` words, so
each fits the embedding model's 128-token window (about 90 English words) and reads as a
self-contained passage when it is put in front of the LLM.
"""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            if sentence:
                out.append(sentence)
        out.append("")  # paragraph break marker
    return out


def chunk_text(text: str, max_words: int = 90) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            chunks.append(" ".join(current))
            current.clear()

    for sentence in _sentences(text):
        if not sentence:
            # A paragraph ends: start a new chunk unless this one is still short.
            if sum(len(s.split()) for s in current) >= max_words // 2:
                flush()
            continue
        words = sentence.split()
        while len(words) > max_words:  # one very long sentence: cut it by words
            flush()
            chunks.append(" ".join(words[:max_words]))
            words = words[max_words:]
        if sum(len(s.split()) for s in current) + len(words) > max_words:
            flush()
        current.append(" ".join(words))
    flush()
    return chunks
