"""BM25 retrieval over the document chunks, for the in-context (open-book) ceiling."""
from __future__ import annotations

import re
from pathlib import PurePath

from rank_bm25 import BM25Okapi


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class ChunkIndex:
    def __init__(self, chunks: list[dict]):
        if not chunks:
            raise ValueError("no chunks to index")
        self.chunks = chunks
        self._position = {id(c): i for i, c in enumerate(chunks)}  # document order, for context()
        self._bm25 = BM25Okapi([tokens(c["text"]) for c in chunks])

    def top_k(self, question: str, k: int = 3) -> list[dict]:
        scores = self._bm25.get_scores(tokens(question))
        # sorted() is stable: ties keep document order, so results are reproducible.
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [self.chunks[i] for i in best]

    def context(self, chunks: list[dict]) -> str:
        """Retrieved chunks as the documents of an in-context prompt, in the order they stand in the
        documents: questions that retrieve the same chunks then get the same prompt prefix, computed once
        for all of them (answering.complete)."""
        return format_chunks(sorted(chunks, key=lambda c: self._position[id(c)]))


def format_chunks(chunks: list[dict]) -> str:
    """Chunks as tagged documents, with their file name and pages so the model can tell them apart.

    The name, not the path: the same document asked about from another folder gets the same prompt.
    """
    parts = []
    for c in chunks:
        pages = c.get("page_start")
        if pages is not None and c.get("page_end") not in (None, pages):
            pages = f"{pages}-{c['page_end']}"
        attrs = f' source="{PurePath(c.get("source", "")).name}"' + (f' pages="{pages}"' if pages is not None else "")
        parts.append(f"<document{attrs}>\n{c['text'].strip()}\n</document>")
    return "\n".join(parts)
