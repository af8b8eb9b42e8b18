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


def read_json_cache(path) -> dict:
    """A cache of answers a local model can make again: {} when `path` is missing, and also when it cannot
    be read (edited by hand, cut short by a copy), with a warning naming the file, so a damaged cache costs
    its answers being generated again, never a failed run."""
    import json
    import logging
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, dict):
            raise ValueError(f"a JSON {type(entries).__name__}, not an object")
        return entries
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        logging.getLogger("memorize").warning(
            "ignoring the unreadable cache %s (%s); its answers will be generated again and the file rewritten",
            path, exc)
        return {}


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
