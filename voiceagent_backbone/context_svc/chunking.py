"""Splits knowledge documents into retrievable chunks.

Chunks follow sentence and paragraph boundaries and hold at most `max_words` words, so
each fits the embedding model's 128-token window (about 90 English words) and reads as a
self-contained passage when it is put in front of the LLM.

One pass, linear in the text: the open chunk's word count is kept as a number (recounting
it per sentence, and re-slicing the rest of an endless sentence per cut, made a 512 KiB
document of one-letter words take a second of CPU).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> Iterator[list[str]]:
    """Each sentence's words, and an empty list after each paragraph."""
    for paragraph in _PARAGRAPH.split(text):
        for sentence in _SENTENCE.split(" ".join(paragraph.split())):
            if sentence:
                yield sentence.split()
        yield []  # paragraph break marker


class _Chunker:
    def __init__(self, max_words: int) -> None:
        self.max_words = max_words
        self.chunks: list[str] = []
        self.current: list[str] = []
        self.current_words = 0

    def flush(self) -> None:
        if self.current:
            self.chunks.append(" ".join(self.current))
            self.current.clear()
            self.current_words = 0

    def paragraph_end(self) -> None:
        # Start a new chunk unless this one is still short.
        if self.current_words >= self.max_words // 2:
            self.flush()

    def sentence(self, words: list[str]) -> None:
        start = 0
        while len(words) - start > self.max_words:  # one very long sentence: cut it by words
            self.flush()
            self.chunks.append(" ".join(words[start : start + self.max_words]))
            start += self.max_words
        rest = len(words) - start
        if self.current_words + rest > self.max_words:
            self.flush()
        self.current.append(" ".join(words[start:]))
        self.current_words += rest


def chunk_text(text: str, max_words: int = 90) -> list[str]:
    chunker = _Chunker(max_words)
    for words in _sentences(text):
        if words:
            chunker.sentence(words)
        else:
            chunker.paragraph_end()
    chunker.flush()
    return chunker.chunks
