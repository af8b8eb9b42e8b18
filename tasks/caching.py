"""Content-keyed caching shared by the pipeline's tasks.

Keys are built from content (a file's hash, a chunk's text hash + prompt + model + temperature),
never from Python object identity, and results persist in a project-local folder, so a re-run
on unchanged inputs does no work and a killed run keeps every node it finished.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from memorize import DEFAULT_CACHE_DIR  # noqa: F401  (re-exported for the flows)



def content_key(kind: str, *parts) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()}"


def result_storage(cache_dir: str | Path) -> LocalFileSystem:
    """A LocalFileSystem block for the cache folder. Prefect only accepts saved blocks as task
    result storage, so it is saved under a name derived from the folder's path."""
    path = str(Path(cache_dir).resolve() / "results")
    fs = LocalFileSystem(basepath=path)
    fs.save(f"memorize-cache-{hashlib.sha256(path.encode()).hexdigest()[:16]}", overwrite=True)
    return fs


def cached(storage: LocalFileSystem, key: str):
    """The persisted result for key, or None: lets a flow skip creating task runs for hits."""
    store = ResultStore(result_storage=storage)
    return store.read(key).result if store.exists(key) else None
