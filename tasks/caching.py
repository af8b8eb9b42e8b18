"""Content-keyed caching shared by the pipeline's tasks.

Keys are built from content (memorize.content_key) and results persist in a project-local folder,
so a re-run on unchanged inputs does no work and a killed run keeps every node it finished.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore


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
