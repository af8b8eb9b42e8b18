"""`transformers serve` on a loopback port: the embedded OpenAI-compatible generator."""
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
          continuous_batching: bool = False):
    """Start the server, wait until the model answers, yield its base URL, stop it at exit.

    threads: torch's intra-op threads in the server (OMP_NUM_THREADS); None leaves torch's default.
    continuous_batching: requests in flight share forward passes (`--continuous-batching`)."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    # `--device auto` (the default) ran 10-20x slower than `--device cpu` on a CPU-only machine.
    import torch

    device = "auto" if torch.cuda.is_available() else "cpu"
    cmd = [str(exe) if exe.exists() else "transformers", "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
           "--device", device, *(["--continuous-batching"] if continuous_batching else [])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    _running.add(proc)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise ServerError(f"`transformers serve` exited with code {proc.returncode}; see {log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"`transformers serve` did not answer within {startup_timeout:.0f}s; see {log_path}")
            time.sleep(0.5)
        yield base_url
    finally:
        _running.discard(proc)
        proc.terminate()
        try:
            proc.wait(timeout=5)  # it stops in ~1 s when idle; mid-generation it may not listen
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
