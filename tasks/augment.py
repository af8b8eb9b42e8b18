from memorize import content_key
from memorize.augment import AUGMENT_VERSION, augment_chunks
from memorize.chunking import Chunk
from tasks.caching import cached_task


# The pairs name their chunks: the ids are part of the key, as the texts and sources are.
@cached_task("augment", lambda p: content_key("augment", AUGMENT_VERSION,
                                              [(c.chunk_id, c.sha256, c.source) for c in p["chunks"]],
                                              p["context"], p["kinds"]))
def augment_task(chunks: list[Chunk], context: str, kinds: list[str]) -> list[dict]:
    return augment_chunks([c.to_dict() for c in chunks], context, kinds)
