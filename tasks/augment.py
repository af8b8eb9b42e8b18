from prefect import task

from memorize.augment import AUGMENT_VERSION, augment_chunks
from memorize.chunking import Chunk
from memorize import content_key


@task(name="augment", persist_result=True,
      cache_key_fn=lambda ctx, p: content_key("augment", AUGMENT_VERSION, [c.sha256 for c in p["chunks"]],
                                              [c.source for c in p["chunks"]], p["context"], p["kinds"]))
def augment_task(chunks: list[Chunk], context: str, kinds: list[str]) -> list[dict]:
    return augment_chunks([c.to_dict() for c in chunks], context, kinds)
