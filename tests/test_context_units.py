"""context_svc's pure parts: chunking, analysis, rendering within a budget, the partition,
the queue of chunks waiting for their vector."""

from __future__ import annotations

import numpy as np

from voiceagent_backbone.context_svc.backfill import DocumentTail, KnowledgeBackfill
from voiceagent_backbone.context_svc.chunking import chunk_text
from voiceagent_backbone.context_svc.embedding import Vectors
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


def test_an_entry_without_a_vector_is_ranked_by_bm25_until_it_gets_one() -> None:
    index = Index(dim=2)
    key = ("t", Source.KNOWLEDGE, "")
    near, far = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    index.add(key, _entry("embedded", "parking garage"), ["park", "garag"], far)
    index.add(key, _entry("pending", "badge desk"), ["badg", "desk"], None)

    # The query means what the pending entry says, but without a vector it is no dense
    # candidate; a keyword finds it, scored by BM25 alone (not pushed down by a zero cosine).
    by_meaning = index.search([key], ["unrelated"], near, limit=10, lexical_weight=0.5)
    assert [h.entry.key for h in by_meaning] == ["embedded"]
    by_keyword = index.search([key], ["badg"], near, limit=10, lexical_weight=0.5)
    top = by_keyword[0]
    assert (top.entry.key, top.score, top.dense) == ("pending", 1.0, 0.0)

    assert index.set_vector(key, "pending", near)
    by_meaning = index.search([key], ["unrelated"], near, limit=10, lexical_weight=0.5)
    assert [h.entry.key for h in by_meaning] == ["pending", "embedded"]
    # Removed entries take no vector (a deleted document's late embedding).
    index.remove(key, "pending")
    assert not index.set_vector(key, "pending", near)
    assert not index.set_vector(("t", Source.KNOWLEDGE, "other"), "pending", near)

    # Compaction keeps which rows have a vector.
    for i in range(100):
        index.add(key, _entry(str(i), f"note {i}"), ["note", str(i)], near if i % 2 else None)
    for i in range(80):
        index.remove(key, str(i))
    by_meaning = index.search([key], ["unrelated"], near, limit=100, lexical_weight=0.5)
    assert sorted(h.entry.key for h in by_meaning if h.entry.key != "embedded") == sorted(
        str(i) for i in range(81, 100, 2)
    )


def test_a_relevance_floor_leaves_out_what_is_not_relevant_before_the_limit() -> None:
    index = Index(dim=2)
    key = ("t", Source.MEMORY, "u")
    query = np.array([1.0, 0.0], np.float32)
    # Shares the question's word but not its meaning, and the reverse.
    index.add(key, _entry("word", "my dog"), ["dog"], np.array([0.0, 1.0], np.float32))
    index.add(key, _entry("meaning", "a puppy"), ["puppi"], np.array([0.9, 0.436], np.float32))

    ranked = index.search([key], ["dog"], query, limit=2, lexical_weight=0.6)
    assert [h.entry.key for h in ranked] == ["word", "meaning"]  # the keyword ranks first
    assert ranked[0].relevance == 0.25  # all of the keyword weight, no cosine
    assert abs(ranked[1].relevance - 0.75 * 0.9) < 1e-6

    # The floor is applied before the limit: the relevant entry takes the only place.
    floored = index.search([key], ["dog"], query, limit=1, lexical_weight=0.6, min_relevance=0.5)
    assert [h.entry.key for h in floored] == ["meaning"]
    away = np.array([0.0, -1.0], np.float32)
    assert index.search([key], ["cat"], away, 10, 0.6, min_relevance=0.5) == []
    # 0 is no floor: the same question gets every candidate.
    assert len(index.search([key], ["cat"], away, 10, 0.6)) == 2

    # Without a vector yet, an entry's keyword coverage alone is its relevance.
    index.add(key, _entry("pending", "dog walking"), ["dog", "walk"], None)
    by_key = {h.entry.key: h for h in index.search([key], ["dog", "walk"], query, 10, 0.6)}
    assert by_key["pending"].relevance == 1.0


async def _no_embedding(tail: DocumentTail, texts: list[str]) -> Vectors:
    raise AssertionError("the worker is not started here")


async def _no_store(tail: DocumentTail, texts: list[str], vectors: Vectors) -> None:
    raise AssertionError("the worker is not started here")


def test_a_documents_tail_goes_with_its_version() -> None:
    backfill = KnowledgeBackfill(_no_embedding, _no_store, batch=16)
    old = DocumentTail("t", "doc", 1, {"a": [0], "b": [1, 2]})
    backfill.put(old)
    assert (backfill.count("t"), backfill.count("u"), backfill.pending_of("t", "doc", 1)) == (
        3,
        0,
        3,
    )

    # Ingested again: the old version's texts are no longer anyone's work, and a vector
    # computed for one of them meanwhile is refused (is_current).
    new = DocumentTail("t", "doc", 2, {"c": [0]})
    backfill.put(new)
    assert not backfill.is_current(old)
    assert backfill.is_current(new)
    assert (backfill.count(), backfill.pending_of("t", "doc", 1)) == (1, 0)
    backfill.done(new, ["c"])
    assert (backfill.count(), backfill.is_current(new)) == (0, False)

    # Deleted: dropped. A version without a tail leaves nothing queued.
    backfill.put(DocumentTail("t", "gone", 3, {"x": [0, 1]}))
    backfill.drop("t", "gone")
    backfill.put(DocumentTail("t", "small", 4, {}))
    assert backfill.count() == 0
