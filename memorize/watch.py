"""Polling a folder for document changes by content hash, and announcing them as Prefect events."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from memorize import write_json
from memorize.checks import InputError
from memorize.extract import file_sha256, find_documents

CHANGE_EVENT = "memorize.document.changed"


def snapshot(folder: Path) -> dict[str, str]:
    """{path: sha256} of every supported document under folder. Hashing every file on every poll
    costs little for document sets and catches edits that keep size and mtime."""
    return {str(p.resolve()): file_sha256(p) for p in find_documents([folder])[0]}


def changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """{path: "created" | "modified" | "deleted"} between two snapshots."""
    out = {p: ("created" if p not in before else "modified") for p, h in after.items() if before.get(p) != h}
    out.update({p: "deleted" for p in before if p not in after})
    return out


@dataclass
class Watcher:
    folder: Path
    state_file: Path
    payload: dict  # what the triggered build-dataset run needs: context, out, cache_dir, ...

    def _load(self) -> dict[str, str]:
        """The hashes of the last poll; a damaged state file counts as none (each document is announced again:
        the content-keyed cache makes that cost little) with a warning, instead of stopping the watcher."""
        if not self.state_file.exists():
            return {}
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
            if isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in state.items()):
                return state
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
            pass
        logging.getLogger("memorize").warning(
            "ignoring the damaged watch state %s: every document is announced again", self.state_file)
        return {}

    def poll(self) -> dict[str, str]:
        """Emit one event per changed document and remember the new state; returns the changes."""
        from prefect.events import emit_event

        current = snapshot(self.folder)
        found = changes(self._load(), current)
        for path, kind in sorted(found.items()):
            emit_event(
                event=CHANGE_EVENT,
                resource={"prefect.resource.id": f"memorize.document.{path}",
                          "prefect.resource.name": Path(path).name},
                payload={**self.payload, "folder": str(self.folder.resolve()), "path": path, "change": kind,
                         "sha256": current.get(path)},
            )
        # Written after the events, so a crash re-announces rather than loses a change; whole or not at all.
        write_json(self.state_file, current)
        return found

    def run(self, interval: float, once: bool = False) -> None:
        if interval <= 0 and not once:
            raise InputError(f"--interval: must be more than 0 seconds, got {interval:g}")
        while True:
            for path, kind in sorted(self.poll().items()):
                print(f"{kind}: {path} -> event {CHANGE_EVENT}", flush=True)
            if once:
                return
            time.sleep(interval)
