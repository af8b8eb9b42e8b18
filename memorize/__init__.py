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
