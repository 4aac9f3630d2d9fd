"""context_svc's pure parts: chunking, analysis, rendering within a budget, the partition."""

from __future__ import annotations

import numpy as np

from voiceagent_backbone.context_svc.chunking import chunk_text
from voiceagent_backbone.context_svc.index import Entry, Index, Source
from voiceagent_backbone.context_svc.lexical import analyze
from voiceagent_backbone.context_svc.render import estimate_tokens, render


def test_chunks_follow_sentences_and_stay_under_the_word_limit() -> None:
    sentence = "The quick brown fox jumps over the lazy dog near the river bank."  # 13 words
    text = " ".join([sentence] * 20) + "\n\n" + "A short closing paragraph."
    chunks = chunk_text(text, max_words=40)
    assert all(len(c.split()) <= 40 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks).split() == text.split()
    # One endless sentence is cut by words.
    long_chunks = chunk_text("word " * 100, max_words=40)
    assert [len(c.split()) for c in long_chunks] == [40, 40, 20]


def test_analysis_drops_stop_words_and_stems() -> None:
    assert analyze("She was swimming in the lakes, wasn't she?") == ["swim", "lake"]
    assert analyze("Caroline's adoption agencies") == ["carolin", "adopt", "agenc"]


def _entry(key: str, text: str) -> Entry:
    return Entry(
        key=key, source=Source.MEMORY, text=text, occurred_at_us=0, event_id=key, speaker="User"
    )


def test_render_keeps_within_the_budget() -> None:
    index = Index(dim=2)
    for i in range(10):
        text = f"turn {i} about gardening " + "and tomatoes " * i
        index.add(
            ("t", Source.MEMORY, "u"),
            _entry(str(i), text),
            analyze(text),
            np.array([1.0, 0.0], np.float32),
        )
    hits = index.search(
        [("t", Source.MEMORY, "u")],
        analyze("gardening tomatoes"),
        np.array([1.0, 0.0], np.float32),
        limit=10,
        lexical_weight=0.5,
    )
    assert len(hits) == 10
    block, tokens, kept = render(hits, 80)
    assert tokens <= 80
    assert sum(estimate_tokens(line) for line in block.split("\n")) == tokens
    assert 0 < len(kept) < 10


def test_partition_removal_and_compaction_keep_search_right() -> None:
    index = Index(dim=2)
    key = ("t", Source.MEMORY, "u")
    for i in range(200):
        index.add(
            key,
            _entry(str(i), f"note {i} alpha"),
            ["note", str(i), "alpha"],
            np.array([1.0, 0.0], np.float32),
        )
    assert index.nbytes() >= 200 * 3 * 8  # three postings of two C ints per entry
    for i in range(150):
        index.remove(key, str(i))
    # Compaction dropped postings: the size gauge's count follows.
    partition = index.partitions[key]
    assert partition.posting_count == sum(len(rows) for rows, _ in partition.postings.values())
    assert partition.posting_count < 200 * 3
    hits = index.search([key], ["alpha"], None, limit=100, lexical_weight=0.5)
    assert sorted(int(h.entry.key) for h in hits) == list(range(150, 200))
    found = index.search([key], ["170"], None, limit=1, lexical_weight=0.5)
    assert found[0].entry.key == "170"
    for i in range(150, 200):
        index.remove(key, str(i))
    assert key not in index.partitions
