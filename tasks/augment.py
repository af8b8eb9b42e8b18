import hashlib
from pathlib import Path

from memorize import augment, content_key, spans, text
from memorize.augment import AUGMENT_VERSION, augment_chunks
from memorize.chunking import Chunk
from tasks.caching import cached_task

# The rules' own source is part of the key too, so that an edit to them never meets pairs cached before it.
RULES = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (augment, spans, text))).hexdigest()


# The pairs name their chunks: the ids are part of the key, as the texts and sources are.
@cached_task("augment", lambda p: content_key("augment", AUGMENT_VERSION, RULES,
                                              [(c.chunk_id, c.sha256, c.source) for c in p["chunks"]],
                                              p["context"], p["kinds"]))
def augment_task(chunks: list[Chunk], context: str, kinds: list[str]) -> list[dict]:
    return augment_chunks([c.to_dict() for c in chunks], context, kinds)
