from prefect import task

from memorize.chunking import Chunk, chunk_document
from memorize.extract import Document
from memorize import content_key

CHUNK_VERSION = 3  # 2: chunks keep line breaks; 3: section labels


@task(name="chunk", persist_result=True,
      cache_key_fn=lambda ctx, p: content_key("chunk", CHUNK_VERSION, p["doc"].sha256, p["doc"].path,
                                              p["max_tokens"], p["overlap"]))
def chunk_task(doc: Document, max_tokens: int, overlap: int) -> list[Chunk]:
    return chunk_document(doc, max_tokens=max_tokens, overlap=overlap)
