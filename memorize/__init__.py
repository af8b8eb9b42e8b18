import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

__version__ = "0.1.0"

# Where cached results live unless --cache-dir says otherwise: project-local, beside the outputs.
DEFAULT_CACHE_DIR = ".memorize/cache"
# `memorize serve`: the variable holding the key requests must send, and how many requests may wait or
# generate at once (more are answered 429). Here, not in memorize.serve: the CLI's flags need them without torch.
API_KEY_ENV = "MEMORIZE_API_KEY"
DEFAULT_MAX_QUEUE = 32


def content_key(kind: str, *parts) -> str:
    """A cache key from content (a file's hash, a chunk's text hash + prompt + model + ...), never from
    Python object identity: a re-run on unchanged inputs finds every result it made before."""
    payload = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()}"


def read_json_cache(path) -> dict:
    """A cache of answers a local model can make again: {} when `path` is missing, and also when it cannot
    be read (edited by hand, cut short by a copy), with a warning naming the file, so a damaged cache costs
    its answers being generated again, never a failed run."""
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


@contextmanager
def replacing(path):
    """A temporary path beside `path` to write a file or a folder to, put in place of `path` when the block
    succeeds and removed when it fails: a reader, or a run killed midway, finds the old content or the new,
    never half of it, and a failed run keeps the last good one. Beside it, so the rename stays on one filesystem
    and is atomic; opened normally, so the umask sets permissions. Two writers of a file at once leave one
    whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        if tmp.is_dir():
            _swap_folder(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink(missing_ok=True)


def _swap_folder(new: Path, dest: Path) -> None:
    """A folder cannot be renamed over a non-empty one: the old one moves aside first. The moment between
    the two renames is the only one without `dest`."""
    old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj, indent: int | None = None) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent))


# OUT/status.json: whether the outputs in a folder come from a run that finished. "running" from the start of a
# command; then "finished", or "failed" with the error. A run killed outright stays "running", with a process
# id that is gone (`run_status_line` says so).
STATUS_FILE = "status.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def recorded_run(out_dir, command: str):
    """Record the command's run in OUT_DIR/status.json around the block; the block's exit code goes in
    `status["exit_code"]`."""
    path = Path(out_dir) / STATUS_FILE
    status = {"command": command, "state": "running", "error": None, "started": _now(), "finished": None,
              "pid": os.getpid(), "host": socket.gethostname(), "exit_code": None}
    write_json(path, status, indent=2)
    try:
        yield status
        status["state"] = "finished"
    except KeyboardInterrupt:
        status.update(state="failed", error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        status.update(state="failed", error=str(exc) or type(exc).__name__)
        raise
    finally:
        status["finished"] = _now()
        write_json(path, status, indent=2)


def status_note(out_dir) -> str:
    """For a flow's summary artifact: where the state of the folder's last run is kept."""
    return (f"\n\n`{Path(out_dir) / STATUS_FILE}` says whether the last `memorize` command writing this folder "
            "finished (running, finished, or failed with its error).\n")


def read_run_status(out_dir) -> dict | None:
    """OUT_DIR/status.json, or None when there is none (or it cannot be read)."""
    try:
        status = json.loads((Path(out_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def run_status_line(out_dir) -> str | None:
    """One line on the last run recorded in OUT_DIR, or None when there is none."""
    s = read_run_status(out_dir)
    if s is None:
        return None
    where = f"`memorize {s.get('command')}` into {out_dir}, started {s.get('started')}"
    if s.get("state") == "finished":
        return f"{where}: finished {s.get('finished')} (exit code {s.get('exit_code')})"
    if s.get("state") == "failed":
        return f"{where}: failed {s.get('finished')}: {s.get('error')}"
    alive = s.get("host") == socket.gethostname() and _process_alive(s.get("pid"))
    return f"{where}: " + (f"still running (process {s.get('pid')})" if alive else
                           "did not finish (its process ended without a word: killed?); the outputs may be "
                           "incomplete or from an earlier run")


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
