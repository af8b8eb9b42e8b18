"""Benchmark: the build-dataset flow vs a plain sequential loop over the same LLM requests.

An OpenAI-compatible loopback endpoint answers every request after a fixed delay, so the figures
measure orchestration (concurrency, caching, Prefect overhead), not a model. Prints wall times and
the ratios the project tracks: speed-up over sequential, distance from the ideal
requests / concurrency x delay, and warm re-run / cold run.

    python bench/generation_speed.py [--chunks 48] [--temperatures 5] [--delay 0.2] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from flows.build_dataset import build_dataset  # noqa: E402
from memorize.chunking import chunk_document  # noqa: E402
from memorize.extract import extract  # noqa: E402
from memorize.llm import client_for, generate_pairs  # noqa: E402
from memorize.plan import plan_requests  # noqa: E402
from memorize.qa_prompt import temperatures as temperature_range  # noqa: E402
from memorize.settings import GenerationSettings  # noqa: E402

CONTEXT = "Operating manual of the fictional Brindle Canal lock system"


def write_document(path: Path, chunks: int) -> None:
    paras = []
    for c in range(chunks):
        paras.append(" ".join(f"Lock {c} rule {i}: boats of class {i % 5} wait {c + i} minutes at gate {i}."
                              for i in range(12)))
    path.write_text("\n\n".join(paras))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=48)
    ap.add_argument("--temperatures", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.2, help="seconds the endpoint takes per request")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="memorize-bench-"))
    doc = work / "manual.txt"
    write_document(doc, args.chunks)
    settings = dict(model="bench", chunk_tokens=200, chunk_overlap=0, temperatures=args.temperatures,
                    concurrency=args.concurrency)
    # The endpoint runs in its own process, as a real one would: in ours it would compete for the GIL.
    fake = Path(__file__).resolve().parents[1] / "tests" / "fake_llm.py"
    server = subprocess.Popen([sys.executable, str(fake), "--delay", str(args.delay)],
                              stdout=subprocess.PIPE, text=True)
    base_url = server.stdout.readline().strip()
    params = dict(documents=[str(doc)], context=CONTEXT, settings=GenerationSettings(**settings, base_url=base_url),
                  progress=False)
    try:
        # Start Prefect's server (temporary unless PREFECT_API_URL is set) before any timing.
        build_dataset(**params, out=str(work / "warmup"), cache_dir=str(work / "c0"), dry_run=True)

        chunks = chunk_document(extract(doc), max_tokens=200, overlap=0)
        plan = plan_requests(chunks, CONTEXT, temperature_range(args.temperatures), ["mixed"])
        client = client_for(base_url)
        t = time.perf_counter()
        for r in plan:  # the reference scripts' approach: one request after another
            generate_pairs(client, "bench", r.messages, r.temperature, r.max_tokens)
        sequential = time.perf_counter() - t

        # The same requests on a plain thread pool: the floor that client, server and GIL set on this machine.
        t = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda r: generate_pairs(client, "bench", r.messages, r.temperature, r.max_tokens), plan))
        threads = time.perf_counter() - t

        t = time.perf_counter()
        cold_report = build_dataset(**params, out=str(work / "out"), cache_dir=str(work / "cache"))
        cold = time.perf_counter() - t
        t = time.perf_counter()
        warm_report = build_dataset(**params, out=str(work / "out"), cache_dir=str(work / "cache"))
        warm = time.perf_counter() - t
        assert warm_report["llm_calls"] == 0, "warm re-run made LLM calls"
    finally:
        server.terminate()

    n = len(plan)
    ideal = n / args.concurrency * args.delay
    figures = {
        "requests": n, "chunks": len(chunks), "temperatures": args.temperatures, "delay_s": args.delay,
        "concurrency": args.concurrency, "sequential_s": round(sequential, 2), "thread_pool_s": round(threads, 2),
        "flow_cold_s": round(cold, 2), "flow_warm_s": round(warm, 2), "ideal_s": round(ideal, 2),
        "speedup_vs_sequential": round(sequential / cold, 1), "cold_vs_ideal": round(cold / ideal, 2),
        "warm_vs_cold": round(warm / cold, 3), "qa_pairs": cold_report["qa_pairs"],
        "failures": len(cold_report["failures"]),
    }
    print(f"{n} requests ({len(chunks)} chunks x {args.temperatures} temperatures), endpoint delay {args.delay}s, "
          f"concurrency {args.concurrency}")
    print(f"  sequential loop     {sequential:7.2f} s")
    print(f"  plain thread pool   {threads:7.2f} s   (no Prefect, no cache: {threads / ideal:.2f}x the ideal)")
    print(f"  flow, cold          {cold:7.2f} s   {figures['speedup_vs_sequential']}x faster than sequential, "
          f"{figures['cold_vs_ideal']}x the ideal {ideal:.2f} s")
    print(f"  flow, warm re-run   {warm:7.2f} s   {100 * figures['warm_vs_cold']:.1f}% of cold, 0 LLM calls")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
