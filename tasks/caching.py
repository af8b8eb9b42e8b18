"""Content-keyed caching shared by the pipeline's tasks.

Keys are built from content (memorize.content_key) and results persist in a project-local folder,
so a re-run on unchanged inputs does no work and a killed run keeps every node it finished.

Results are JSON, written and read by JsonResultStorage: the cache folder may be shared (/data/cache), and a
pickle in it (Prefect's default serializer) would run the code of whoever wrote it in every run that reads it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from prefect.serializers import JSONSerializer

from memorize import replacing

SERIALIZER = JSONSerializer()
_SERIALIZER_RECORD = SERIALIZER.model_dump(mode="json")  # its settings name the functions that decode


class UnsafeResultError(ValueError):
    pass


def _checked(content: bytes, path: str, exceptions: bool) -> bytes:
    """`content`, a result record, when it holds JSON under the default JSON serializer; else UnsafeResultError.
    Plain JSON only unless `exceptions`: Prefect's JSON decoder imports the names that `__class__` and
    `__exc_type__` give. A failed task run's record holds its exception that way; it is written, never read
    back as a cached result."""
    def plain(obj: dict) -> dict:
        if "__class__" in obj or ("__exc_type__" in obj and not exceptions):
            raise ValueError(f"an encoded Python object ({obj.get('__class__') or obj.get('__exc_type__')})")
        return obj

    try:
        record = json.loads(content)
        serializer = record["metadata"]["serializer"]
        if serializer != _SERIALIZER_RECORD:
            raise ValueError(f"serializer {serializer.get('type') if isinstance(serializer, dict) else serializer!r}")
        json.loads(record["result"], object_hook=plain)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise UnsafeResultError(f"cache record {path}: not a plain JSON result: {exc}") from None
    return content


class JsonResultStorage(LocalFileSystem):
    """A local folder of JSON result records. Writing anything else fails (a cached task that returns an
    object, not JSON, is a bug to see); a record that is not plain JSON, or was cut short, is never decoded:
    Prefect takes a record it cannot read for a missing one, so the task runs again and overwrites it. Records
    are written whole (memorize.replacing): runs sharing the folder never read half of one."""

    _block_type_name = "Memorize JSON Result Storage"

    async def aread_path(self, path: str) -> bytes:
        return _checked(await super().aread_path(path), path, exceptions=False)

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return _checked(super().read_path(path, _sync=True), path, exceptions=False)

    def _write(self, path: str, content: bytes) -> str:
        target = Path(self._resolve_path(path))
        with replacing(target) as tmp:
            tmp.write_bytes(_checked(content, path, exceptions=True))
        return str(target)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)  # one small file: not worth a thread

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        return self._write(path, content)


def result_storage(cache_dir: str | Path) -> JsonResultStorage:
    """The storage block for the cache folder. Prefect only accepts saved blocks as task result storage,
    so it is saved under a name derived from the folder's path."""
    path = str(Path(cache_dir).resolve() / "results")
    fs = JsonResultStorage(basepath=path)
    fs.save(f"memorize-cache-{hashlib.sha256(path.encode()).hexdigest()[:16]}", overwrite=True)
    return fs


def cached_task(name: str, key: Callable[[dict], str], **options):
    """@task whose result persists as JSON under key(its parameters), to be run with result_storage=
    result_storage(...): its function must return JSON (dicts, lists, strings, numbers)."""
    return task(name=name, persist_result=True, result_serializer=SERIALIZER,
                cache_key_fn=lambda context, parameters: key(parameters), **options)


def _store(storage: JsonResultStorage) -> ResultStore:
    return ResultStore(result_storage=storage, serializer=SERIALIZER)


def cached(storage: JsonResultStorage, key: str):
    """The persisted result for key, or None: lets a flow skip creating task runs for hits."""
    store = _store(storage)
    return store.read(key).result if store.exists(key) else None


def store(storage: JsonResultStorage, key: str, value) -> None:
    """Persist `value` (JSON) under key at once, for a task that caches its results one by one."""
    _store(storage).write(value, key=key)
