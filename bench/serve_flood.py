"""Benchmark: `memorize serve` under a flood (SmolLM2-135M, CPU).

Starts `memorize serve` on a loopback port (the default model, a key set, one torch thread), sends REQUESTS
chat completions at once, and meanwhile asks /health every 0.2 s. The server takes up to --max-queue
requests (waiting or generating) and answers the rest 429 at once. Every request and the whole run are
bounded in time. Prints the 200/429 (and any other) counts, the time the flood took, and the /health
latencies (median, max) while it ran.

    python bench/serve_flood.py [--requests 64] [--max-tokens 16] [--max-queue 32] [--max-batch 8] [--seconds 300]
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from memorize.local_model import ensure_default_model
from memorize.local_server import ServerError, free_port, wait_until_healthy

QUESTIONS = ["What is the capital of France?", "Name a colour of the sky.", "How many legs does a spider have?",
             "Say hello in Spanish."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=300, help="bound on the whole flood")
    a = p.parse_args()

    port, key = free_port(), secrets.token_urlsafe(16)
    env = {**os.environ, "MEMORIZE_API_KEY": key, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", str(ensure_default_model()),
                               "--port", str(port), "--max-queue", str(a.max_queue), "--max-batch", str(a.max_batch)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_healthy(server, root, 120)
        except ServerError as exc:
            sys.exit(f"{exc}: {server.stderr.read() if server.poll() is not None else ''}")

        # Clients made once: a new httpx client per call costs tens of ms of CPU (its SSL context), which
        # would be measured as server latency.
        flood = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=a.seconds,
                             limits=httpx.Limits(max_connections=a.requests))
        probe = httpx.Client(timeout=a.seconds)
        start, done, health = threading.Barrier(a.requests), threading.Event(), []

        def ask(i: int) -> str:
            start.wait()
            try:
                return str(flood.post(f"{root}/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                    "max_tokens": a.max_tokens}).status_code)
            except httpx.TimeoutException:
                return "timeout"

        def watch() -> None:
            while not done.is_set():
                t = time.perf_counter()
                probe.get(f"{root}/health")
                health.append(time.perf_counter() - t)
                done.wait(0.2)

        watcher = threading.Thread(target=watch)
        began = time.perf_counter()
        with ThreadPoolExecutor(a.requests) as pool:
            watcher.start()
            statuses = Counter(pool.map(ask, range(a.requests)))
        took = time.perf_counter() - began
        done.set()
        watcher.join()
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"{a.requests} requests at once (max_tokens {a.max_tokens}, --max-queue {a.max_queue}, --max-batch "
          f"{a.max_batch}, 1 torch thread): " + ", ".join(f"{n}x {s}" for s, n in sorted(statuses.items()))
          + f"; all answered in {took:.1f} s")
    print(f"/health during the flood: {len(health)} probes, median {statistics.median(health) * 1000:.0f} ms, "
          f"90th percentile {statistics.quantiles(health, n=10)[-1] * 1000:.0f} ms, max {max(health) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
