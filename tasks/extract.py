from dataclasses import asdict

from memorize import content_key
from memorize.extract import Document, Page, extract, file_sha256
from tasks.caching import cached_task

EXTRACT_VERSION = 2  # 2: office/web formats, page labels


@cached_task("extract", lambda p: content_key("extract", EXTRACT_VERSION, file_sha256(p["path"]), p["path"]))
def extract_task(path: str) -> dict:
    """The document as JSON (the cache holds JSON only); document() makes it a Document again."""
    return asdict(extract(path))


def document(extracted: dict) -> Document:
    return Document(path=extracted["path"], sha256=extracted["sha256"],
                    pages=tuple(Page(**page) for page in extracted["pages"]))
