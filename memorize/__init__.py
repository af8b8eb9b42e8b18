__version__ = "0.1.0"

# Where cached results live unless --cache-dir says otherwise: project-local, beside the outputs.
DEFAULT_CACHE_DIR = ".memorize/cache"


def content_key(kind: str, *parts) -> str:
    """A cache key from content (a file's hash, a chunk's text hash + prompt + model + ...), never from
    Python object identity: a re-run on unchanged inputs finds every result it made before."""
    import hashlib
    import json

    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()}"


def write_json(path, obj) -> None:
    """Write JSON so that a reader never sees half a file: a temporary file of this writer's own beside
    `path` (opened normally, so the umask sets its permissions), then an atomic rename (two writers at once
    leave one whole file, never a mix)."""
    import json
    import os
    import uuid
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left when writing failed (e.g. an object JSON cannot hold)
