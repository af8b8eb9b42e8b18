"""Benchmark: throughput of the embedded generator (SmolLM2-135M, CPU).

Sends the same real generation requests (chunks of the Moonwell charter, the product's prompt) at
concurrency 8 to a fresh embedded server (memorize.local_server: `memorize serve`'s app) per setting:
torch threads 1 or 2, batching off (one request at a time) or on (the requests in flight answered
together, up to 8), and the machine idle or with one core kept busy by another process.
`--engine in-process` runs the same requests through `model.generate` in this process instead, one
after another or all in one left-padded batch: the floor without HTTP and server. Prints requests/min,
completion tokens/s, the share of replies that parse and the pairs that pass the dataset's filters, per
setting. `--structured on off` asks the server for JSON of the pairs schema (`response_format`, the
product's default) or for plain text.

    python bench/embedded_generator.py [--requests 8] [--max-tokens 256] [--seconds 240] [--engine serve in-process]
    python bench/embedded_generator.py --engine serve --threads 1 --batching on --load idle \
        --temperatures 0.01 0.605 1.2 --structured on off --requests 16 --max-tokens 512   # parse rates
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
from contextlib import contextmanager
from pathlib import Path

from memorize.chunking import chunk_document
from memorize.extract import extract
from memorize.filtering import filter_pairs
from memorize.generation import EMBEDDED_MAX_CHARS
from memorize.llm import client_for
from memorize.local_model import resolve_model
from memorize.local_server import serve
from memorize.plan import plan_requests
from memorize.qa_parse import ParseError, parse_pairs

DOC = Path(__file__).parent / "data" / "moonwell_charter.md"


def _plan(args, temperature: float, structured: bool = False) -> list:
    chunks = chunk_document(extract(DOC))
    plan = plan_requests(chunks, "The charter of the Moonwell Honey and Cider Cooperative", [temperature], ["mixed"],
                         structured=structured, max_chars=EMBEDDED_MAX_CHARS)
    return list(itertools.islice(itertools.cycle(plan), args.requests))


def _parsed(texts: list[str], requests: list) -> tuple[int, int, int]:
    """(replies that parse, pairs parsed, pairs the dataset's filters keep)."""
    ok, pairs = 0, []
    for text, r in zip(texts, requests):
        try:
            pairs += [{"question": q, "answer": a, "chunk_id": r.chunk.chunk_id} for q, a in parse_pairs(text or "")]
            ok += 1
        except ParseError:
            pass
    kept, _ = filter_pairs(pairs, {r.chunk.chunk_id: r.chunk.text for r in requests})
    return ok, len(pairs), len(kept)


@contextmanager
def _load(busy: bool):
    """One core kept busy by another process, as on a shared machine."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if hog:
            hog.kill()


def measure_in_process(model: str, threads: int, batched: bool, busy: bool, temperature: float, args) -> dict:
    """The requests through `generate` here: serialized, or one batch (left-padded, sampled)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    plan = _plan(args, temperature)
    tok = AutoTokenizer.from_pretrained(model)
    tok.padding_side = "left"
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    prompts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in plan]
    texts, tokens, prompt_tokens = [], 0, 0
    with _load(busy), torch.inference_mode():
        started = time.perf_counter()
        for group in [prompts] if batched else [[p] for p in prompts]:
            if time.perf_counter() - started > args.seconds:
                break
            enc = tok(group, return_tensors="pt", padding=True, add_special_tokens=False)
            out = lm.generate(**enc, do_sample=True, temperature=temperature, max_new_tokens=args.max_tokens,
                              pad_token_id=tok.pad_token_id or tok.eos_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            prompt_tokens += int(enc["attention_mask"].sum())
            tokens += int((new != (tok.pad_token_id or tok.eos_token_id)).sum())
            texts += tok.batch_decode(new, skip_special_tokens=True)
        elapsed = time.perf_counter() - started
    parsed, pairs, kept = _parsed(texts, plan)
    return {"engine": "in-process", "temperature": temperature, "threads": threads, "batching": batched, "busy": busy,
            "structured": False, "done": len(texts), "sent": len(plan), "seconds": round(elapsed, 1),
            "requests_per_min": round(60 * len(texts) / elapsed, 2), "tokens_per_s": round(tokens / elapsed, 2),
            "prompt_tokens": prompt_tokens, "parsed": parsed, "pairs": pairs, "kept": kept}


def measure(model: str, threads: int, batching: bool, busy: bool, temperature: float, structured: bool, args) -> dict:
    plan = _plan(args, temperature, structured)
    with _load(busy):
        with tempfile.TemporaryDirectory() as tmp, serve(model, Path(tmp) / "server.log", threads=threads,
                                                         max_batch=8 if batching else 1) as (base_url, name):
            client = client_for(base_url, timeout=args.seconds)
            replies = []

            def ask(req):
                schema = {"type": "json_schema", "json_schema": {"name": "pairs", "schema": req.schema}}
                fmt = {"response_format": schema} if structured else {}
                r = client.chat.completions.create(model=name, messages=req.messages, temperature=req.temperature,
                                                   max_tokens=args.max_tokens, **fmt)
                replies.append((req, r))

            started = time.perf_counter()
            pool = ThreadPoolExecutor(8)
            wait([pool.submit(ask, r) for r in plan], timeout=args.seconds)
            elapsed = time.perf_counter() - started
            pool.shutdown(wait=False, cancel_futures=True)  # stopping the server ends what is still in flight
    tokens = sum(r.usage.completion_tokens for _, r in replies if r.usage)
    parsed, pairs, kept = _parsed([r.choices[0].message.content for _, r in replies], [q for q, _ in replies])
    return {"engine": "server", "temperature": temperature, "threads": threads, "batching": batching, "busy": busy,
            "structured": structured, "done": len(replies), "sent": len(plan), "seconds": round(elapsed, 1),
            "requests_per_min": round(60 * len(replies) / elapsed, 2), "tokens_per_s": round(tokens / elapsed, 2),
            "parsed": parsed, "pairs": pairs, "kept": kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=240, help="time limit per setting")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batching", choices=["off", "on"], nargs="+", default=["off", "on"])
    ap.add_argument("--load", choices=["idle", "busy"], nargs="+", default=["idle", "busy"])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.7],
                    help="sampling temperatures; the parsed column is the parse rate at each")
    ap.add_argument("--engine", choices=["serve", "in-process"], nargs="+", default=["serve", "in-process"])
    ap.add_argument("--structured", choices=["on", "off"], nargs="+", default=["on"],
                    help="server engine: ask for JSON of the pairs schema (on, the product's default) or plain text")
    ap.add_argument("--out", default="out/bench-embedded-generator.json")
    args = ap.parse_args()
    model = str(resolve_model(None))
    rows = []
    print("| engine | structured | temperature | threads | batching | machine | requests done / sent | seconds "
          "| requests/min | tokens/s | replies that parse | pairs parsed → kept by the filters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, structured, temperature, load, threads, batching in itertools.product(
            args.engine, args.structured, args.temperatures, args.load, args.threads, args.batching):
        if engine == "serve":
            r = measure(model, threads, batching == "on", load == "busy", temperature, structured == "on", args)
        elif structured == "off":  # in-process generation is plain text only
            r = measure_in_process(model, threads, batching == "on", load == "busy", temperature, args)
        else:
            continue
        rows.append(r)
        print(f"| {r['engine']} | {'on' if r['structured'] else 'off'} | {temperature} | {threads} | {batching} "
              f"| {load} | {r['done']} / {r['sent']} | {r['seconds']} | {r['requests_per_min']} | {r['tokens_per_s']} "
              f"| {r['parsed']} / {r['done']} | {r['pairs']} → {r['kept']} |", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
