"""The embedded OpenAI-compatible generator: `memorize serve`'s server (memorize.serve) for a local model on
a loopback port, in its own process (its CPU-bound generation does not hold this process's GIL),
answering the requests in flight together in batches."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def wait_until_healthy(proc, root: str, timeout: float, see: str = "") -> None:
    """Poll ROOT/health until it answers 200; ServerError (ending with `see`) when the server process exits
    or `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"the server exited with code {proc.returncode}{see}")
        try:
            if httpx.get(f"{root}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"the server did not answer within {timeout:.0f}s{see}")
        time.sleep(0.5)


class ServerError(RuntimeError):
    pass


_running: set[subprocess.Popen] = set()  # servers started by `serve` and not yet stopped
# Set when the run is being interrupted (Ctrl-C, SIGTERM): a request that fails then is not retried, so
# the exit does not wait out a retry schedule against a generator that is shutting down.
STOPPING = threading.Event()


def stop_servers() -> None:
    """Terminate every running server now, without waiting: called from a signal handler, so that an
    interrupted run's requests in flight fail at once wherever the interrupt lands."""
    for proc in list(_running):
        proc.terminate()


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the parent dies, even by kill -9, so no
    orphaned server keeps a core busy (other systems: the normal stop in `serve` only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model_dir: str, log_path: Path, startup_timeout: float = 300.0, threads: int | None = None,
          max_batch: int = 8):
    """Start the server, wait until the model answers, yield (base URL, the model's name there), stop it at exit.

    threads: torch's intra-op threads in the server (OMP_NUM_THREADS); None leaves torch's default.
    max_batch: requests answered together in one batch (1: one at a time)."""
    port = free_port()
    cmd = [sys.executable, "-m", "memorize.serve", model_dir, str(port), str(max_batch)]
    # The server needs no credential: no key or token of this process reaches it (OPENAI_API_KEY, HF_TOKEN, ...).
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith(("_KEY", "_TOKEN", "_SECRET", "_PASSWORD"))}
    env.update({"HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    _running.add(proc)
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, root, startup_timeout, f"; see {log_path}")
        yield f"{root}/v1", httpx.get(f"{root}/v1/models", timeout=10).json()["data"][0]["id"]
    finally:
        _running.discard(proc)
        proc.terminate()
        try:
            proc.wait(timeout=5)  # it stops in ~1 s; mid-generation it may not listen
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
