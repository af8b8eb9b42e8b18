from memorize import content_key
from memorize.chunking import chunk_document
from memorize.extract import Document
from tasks.caching import cached_task

CHUNK_VERSION = 4  # 2: chunks keep line breaks; 3: section labels; 4: sources relative to the inputs, ids SOURCE#NNNN


@cached_task("chunk", lambda p: content_key("chunk", CHUNK_VERSION, p["doc"].sha256, p["source"], p["max_tokens"],
                                            p["overlap"]))
def chunk_task(doc: Document, source: str, max_tokens: int, overlap: int) -> list[dict]:
    """The chunks as JSON (the cache holds JSON only): Chunk(**c) for each makes them Chunks again."""
    return [c.to_dict() for c in chunk_document(doc, max_tokens=max_tokens, overlap=overlap, source=source)]

