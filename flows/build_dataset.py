"""Flow `build-dataset`: documents -> chunks -> multi-temperature QA -> train/test chat dataset."""
from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from tqdm import tqdm

from memorize import recipe
from memorize.augment import check_kinds
from memorize.dataset import DEFAULT_TEST_RATIO, assign_split, ensure_test_pair, write_dataset
from memorize.extract import ExtractionError, find_documents
from memorize.filtering import filter_pairs
from memorize.llm import DEFAULT_API_KEY_ENV, Generation
from memorize.local_model import DEFAULT_MODEL_NAME, resolve_model
from memorize.local_server import STOPPING, serve
from memorize.plan import Request, estimate, plan_requests
from memorize.hub import HubError
from memorize.publish import dataset_card, push_dataset
from memorize.qa_prompt import temperatures as temperature_range
from memorize.styles import check_styles
from tasks.augment import augment_task
from tasks.caching import DEFAULT_CACHE_DIR, cached, result_storage
from tasks.chunk import chunk_task
from tasks.extract import extract_task
from tasks.generate import generate_batch_task, generation_key


def _extract_and_chunk(documents: list[str], chunk_tokens: int, overlap: int, storage, failures: list):
    """(documents read, chunks, files skipped in the folders given: unsupported types, with the reason)."""
    docs, chunks = [], []
    extract_node, chunk_node = (t.with_options(result_storage=storage) for t in (extract_task, chunk_task))
    found, skipped = find_documents(documents)
    for s in skipped:
        get_run_logger().warning("skipped %s: %s", s["file"], s["reason"])
    for path in found:
        try:
            doc = extract_node(str(path))
        except ExtractionError as exc:
            failures.append({"file": exc.path, "stage": "extract", "reason": exc.reason})
            continue
        docs.append(doc.path)
        chunks.extend(chunk_node(doc, chunk_tokens, overlap))
    return docs, chunks, skipped


def batches(todo: list[int], concurrency: int) -> list[list[int]]:
    """About two batches per worker: few task runs, yet no worker idles long at the end. A
    batch keeps a chunk's requests together where it can (todo is in chunk order)."""
    size = max(1, -(-len(todo) // (2 * max(1, concurrency))))
    return [todo[k : k + size] for k in range(0, len(todo), size)]


def _record(question: str, answer: str, chunk, origin: str, test_ratio: float, seed: int, **extra) -> dict:
    """One pair with its provenance; `origin` is "llm" or "augment:<kind>"."""
    return {"question": question, "answer": answer, "chunk_id": chunk.chunk_id, "chunk_sha256": chunk.sha256,
            "source": chunk.source, "page_start": chunk.page_start, "page_end": chunk.page_end,
            **({"section": chunk.section} if chunk.section else {}), "origin": origin,
            **extra, "split": assign_split(question, answer, test_ratio, seed)}


def _record_pairs(req: Request, gen: Generation, test_ratio: float, seed: int) -> list[dict]:
    return [_record(q, a, req.chunk, "llm", test_ratio, seed, temperature=req.temperature, style=req.style)
            for q, a in gen.pairs]


def _summary_markdown(report: dict) -> str:
    rows = "\n".join(f"| {k} | {report[k]} |" for k in
                     ("chunks", "requests", "llm_calls", "cache_hits", "qa_pairs", "pairs_by_origin", "dropped",
                      "train_rows", "test_rows"))
    fails = "\n".join(f"- `{f.get('file')}` {f.get('chunk', '')}: {f['reason']}" for f in report["failures"]) or "none"
    docs = "\n".join(f"- `{d}`" for d in report["documents"])
    skipped = "\n".join(f"- `{f['file']}`: {f['reason']}" for f in report["skipped"]) or "none"
    return (f"# Dataset summary\n\nDocuments:\n{docs}\n\nSkipped:\n{skipped}\n\n| figure | value |\n|---|---|\n{rows}"
            f"\n\nFailures:\n{fails}\n")


# One torch thread for the embedded generator: 2 threads were only ~20 % faster on an idle 2-core machine
# (3.8 vs 3.2 tokens/s, bench/embedded_generator.py) but ~10x slower as soon as another process took a core.
EMBEDDED_THREADS = 1


@flow(name="build-dataset")
def build_dataset(
    documents: list[str],
    context: str,
    out: str,
    base_url: str | None = None,
    model: str | None = None,
    api_key_env: str = DEFAULT_API_KEY_ENV,
    temperatures: int = 3,
    questions_per_chunk: int | None = None,
    styles: list[str] = ["mixed"],
    augment: list[str] = list(recipe.AUGMENT),
    chunk_tokens: int = 500,
    chunk_overlap: int = 40,
    pairs_per_row: int = recipe.PAIRS_PER_ROW,
    test_ratio: float = DEFAULT_TEST_RATIO,
    seed: int = 0,
    concurrency: int = 8,
    concurrency_limit: str | None = None,
    request_timeout: float = 120.0,
    retries: int = 4,
    retry_delay: float = 2.0,
    parse_attempts: int = 3,
    price_per_1k: float = 0.0,
    cache_dir: str = DEFAULT_CACHE_DIR,
    hub_repo: str | None = None,
    public: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Build a chat-format QA dataset from documents; returns the report also written to OUT/report.json.

    With no base_url, a small local instruct model is served on loopback with `transformers serve`.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    out_dir = Path(out)
    check_styles(styles)
    check_kinds(augment)
    temps = temperature_range(temperatures)
    storage = result_storage(cache_dir)
    failures: list[dict] = []

    # The embedded model is keyed by its name, not its per-machine path.
    model_name = model or (DEFAULT_MODEL_NAME if base_url is None else None)
    if not model_name:
        raise ValueError("--model is required with --base-url (the model name the endpoint serves)")
    docs, chunks, skipped = _extract_and_chunk(documents, chunk_tokens, chunk_overlap, storage, failures)
    plan = plan_requests(chunks, context, temps, styles, questions_per_chunk)
    est = estimate(plan, price_per_1k)
    keys = [generation_key(r.messages, model_name, r.temperature, r.max_tokens) for r in plan]
    results: dict[int, Generation] = {}
    for i, key in enumerate(keys):
        hit = cached(storage, key)
        if hit is not None:
            results[i] = hit
    cache_hits = len(results)
    logger.info(f"{len(docs)} document(s), {len(chunks)} chunk(s), {len(temps)} temperature(s) {temps}, styles {styles}: "
                f"{est['requests']} requests ({cache_hits} cached), ~{est['prompt_tokens'] + est['completion_tokens']:,} "
                f"tokens, estimated cost {est['estimated_cost']:.4f} at {price_per_1k}/1K tokens")
    report = {"documents": docs, "skipped": skipped, "chunks": len(chunks), **est, "llm_calls": 0, "cache_hits": cache_hits,
              "qa_pairs": 0, "train_rows": 0, "test_rows": 0, "failures": failures}
    if dry_run:
        report["dry_run"] = True
        return report

    todo = [i for i in range(len(plan)) if i not in results]
    failed_calls = 0
    endpoint_model = None
    embedded = bool(todo) and base_url is None
    if embedded:
        # The embedded server generates one reply at a time on a CPU; more requests in flight
        # only queue and then time out.
        concurrency, request_timeout = min(concurrency, 2), max(request_timeout, 900.0)
    with ExitStack() as stack:
        # Entered before the server, so left after it: on Ctrl-C the server stops first, its requests in
        # flight fail at once, and the runner's shutdown does not wait for them to finish generating.
        runner = stack.enter_context(ThreadPoolTaskRunner(max_workers=max(1, concurrency)))
        stack.callback(STOPPING.clear)
        if embedded:
            endpoint_model = resolve_model(model)
            base_url = stack.enter_context(serve(endpoint_model, out_dir / "logs" / "generator-server.log",
                                                 threads=EMBEDDED_THREADS))
            logger.info(f"serving {endpoint_model} at {base_url} (concurrency {concurrency})")
        task = generate_batch_task.with_options(
            retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay))
        futures = {}
        for b, batch in enumerate(batches(todo, concurrency)):
            reqs = [{"key": keys[i], "messages": plan[i].messages, "temperature": plan[i].temperature,
                     "max_tokens": plan[i].max_tokens} for i in batch]
            label = f"{plan[batch[0]].chunk.chunk_id}-{len(batch)}req"
            futures[runner.submit(task, parameters=dict(
                requests=reqs, label=label, storage=storage, model=model_name, base_url=base_url,
                api_key_env=api_key_env, timeout=request_timeout, parse_attempts=parse_attempts,
                concurrency_limit=concurrency_limit, endpoint_model=endpoint_model))] = batch
        progress_id = create_progress_artifact(0.0, key="build-dataset-progress", description="LLM requests done")
        bar = tqdm(total=len(todo), desc="generating QA", unit="req", disable=not progress)
        done = 0
        try:  # KeyboardInterrupt (Ctrl-C, or SIGTERM via the CLI) is not an Exception: it passes the handler below
            for fut in as_completed(list(futures)):
                batch = futures[fut]
                try:
                    out = fut.result()
                    errors = out["failures"]
                    results.update({i: out["generations"][keys[i]] for i in batch if keys[i] in out["generations"]})
                except Exception as exc:  # retries exhausted: every unfinished request of the batch failed
                    errors = {keys[i]: (f"{type(exc).__name__}: {exc}", 0) for i in batch}
                for i in batch:
                    if keys[i] in errors and i not in results:
                        reason, calls = errors[keys[i]]
                        failed_calls += calls
                        r = plan[i]
                        failures.append({"file": r.chunk.source, "chunk": r.chunk.chunk_id, "temperature": r.temperature,
                                         "style": r.style, "stage": "generate", "reason": reason})
                done += len(batch)
                bar.update(len(batch))
                update_progress_artifact(progress_id, 100.0 * done / len(todo))
        except BaseException:
            STOPPING.set()  # interrupted: no retries while the stack (server, then runner) unwinds
            raise
        bar.close()

    generated = [p for i in sorted(results) for p in _record_pairs(plan[i], results[i], test_ratio, seed)]
    qa, dropped = filter_pairs(generated, {c.chunk_id: c.text for c in chunks})
    if augment and chunks:
        by_id = {c.chunk_id: c for c in chunks}
        qa += [_record(p["question"], p["answer"], by_id[p["chunk_id"]], f"augment:{p['kind']}", test_ratio, seed)
               for p in augment_task.with_options(result_storage=storage)(chunks, context, augment)]
    ensure_test_pair(qa, test_ratio, seed)
    report["dropped"] = dict(dropped)
    report["pairs_by_origin"] = dict(Counter(p["origin"] for p in qa))
    report["llm_calls"] = sum(results[i].attempts for i in todo if i in results) + failed_calls
    report["qa_pairs"] = len(qa)
    report.update(write_dataset(out_dir, qa, pairs_per_row, seed))
    report["settings"] = {"context": context, "model": model_name, "temperatures": temps, "styles": styles,
                          "chunk_tokens": chunk_tokens, "chunk_overlap": chunk_overlap,
                          "questions_per_chunk": questions_per_chunk or "1 per 60 tokens", "augment": augment,
                          "pairs_per_row": pairs_per_row, "test_ratio": round(test_ratio, 4), "seed": seed}
    with open(out_dir / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
    if hub_repo:
        try:
            card = dataset_card(hub_repo, report, report["settings"])
            report["hub_url"] = push_dataset(out_dir / "dataset", hub_repo, card, private=not public)
        except HubError as exc:  # the dataset on disk stays; re-running pushes without any LLM call
            failures.append({"file": str(out_dir / "dataset"), "stage": "publish", "reason": str(exc)})
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))

    create_table_artifact(
        key="build-dataset-samples", description="Sample question/answer pairs",
        table=[{k: p.get(k) for k in ("question", "answer", "chunk_id", "origin", "temperature", "split")}
               for p in qa[:: max(1, len(qa) // 20)][:20]])  # a spread over origins, not only the first chunk
    create_markdown_artifact(key="build-dataset-summary", markdown=_summary_markdown(report))
    for f in failures:
        logger.warning("failed: %s", f)
    logger.info(f"{report['qa_pairs']} QA pairs -> {report['train_rows']} train / {report['test_rows']} test rows in "
                f"{out_dir} ({report['llm_calls']} LLM calls, {cache_hits} cache hits, {len(failures)} failure(s))")
    return report
