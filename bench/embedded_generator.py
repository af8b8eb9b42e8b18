"""Benchmark: throughput of the embedded generator (SmolLM2-135M behind `transformers serve`, CPU).

Sends the same real generation requests (chunks of the Moonwell charter, the product's prompt) at
concurrency 8 to a fresh server per setting: torch threads 1 or 2, continuous batching off (the server
answers one request at a time) or on, and the machine idle or with one core kept busy by another
process. Prints requests/min, completion tokens/s and the share of replies that parse, per setting.

    python bench/embedded_generator.py [--requests 8] [--max-tokens 256] [--seconds 240]
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from memorize.chunking import chunk_document
from memorize.extract import extract
from memorize.llm import client_for
from memorize.local_model import resolve_model
from memorize.local_server import serve
from memorize.plan import plan_requests
from memorize.qa_parse import ParseError, parse_pairs

DOC = Path(__file__).parent / "data" / "moonwell_charter.md"


def measure(model: str, threads: int, batching: bool, busy: bool, args) -> dict:
    chunks = chunk_document(extract(DOC))
    plan = plan_requests(chunks, "The charter of the Moonwell Honey and Cider Cooperative", [0.7], ["mixed"], None)
    plan = list(itertools.islice(itertools.cycle(plan), args.requests))
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp, serve(model, Path(tmp) / "server.log", threads=threads,
                                                         continuous_batching=batching) as base_url:
            client = client_for(base_url, timeout=args.seconds)
            replies = []

            def ask(req):
                r = client.chat.completions.create(model=model, messages=req.messages, temperature=req.temperature,
                                                   max_tokens=args.max_tokens)
                replies.append(r)

            started = time.perf_counter()
            pool = ThreadPoolExecutor(8)
            wait([pool.submit(ask, r) for r in plan], timeout=args.seconds)
            elapsed = time.perf_counter() - started
            pool.shutdown(wait=False, cancel_futures=True)  # stopping the server ends what is still in flight
    finally:
        if hog:
            hog.kill()
    tokens = sum(r.usage.completion_tokens for r in replies if r.usage)
    parsed = 0
    for r in replies:
        try:
            parse_pairs(r.choices[0].message.content or "")
            parsed += 1
        except ParseError:
            pass
    return {"threads": threads, "batching": batching, "busy": busy, "done": len(replies), "sent": len(plan),
            "seconds": round(elapsed, 1), "requests_per_min": round(60 * len(replies) / elapsed, 2),
            "tokens_per_s": round(tokens / elapsed, 2), "parsed": parsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=240, help="time limit per setting")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batching", choices=["off", "on"], nargs="+", default=["off", "on"])
    ap.add_argument("--load", choices=["idle", "busy"], nargs="+", default=["idle", "busy"])
    ap.add_argument("--out", default="out/bench-embedded-generator.json")
    args = ap.parse_args()
    model = str(resolve_model(None))
    rows = []
    print("| threads | continuous batching | machine | requests done / sent | seconds | requests/min | tokens/s | parsed |")
    print("|---|---|---|---|---|---|---|---|")
    for load, threads, batching in itertools.product(args.load, args.threads, args.batching):
        r = measure(model, threads, batching == "on", load == "busy", args)
        rows.append(r)
        print(f"| {threads} | {batching} | {load} | {r['done']} / {r['sent']} | {r['seconds']} | {r['requests_per_min']} "
              f"| {r['tokens_per_s']} | {r['parsed']} / {r['done']} |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
