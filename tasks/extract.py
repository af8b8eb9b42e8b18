from prefect import task

from memorize.extract import Document, extract, file_sha256
from memorize import content_key

EXTRACT_VERSION = 2  # 2: office/web formats, page labels


@task(name="extract", persist_result=True,
      cache_key_fn=lambda ctx, p: content_key("extract", EXTRACT_VERSION, file_sha256(p["path"]), p["path"]))
def extract_task(path: str) -> Document:
    return extract(path)
