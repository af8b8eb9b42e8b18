"""Flow `build-dataset`: documents -> chunks -> multi-temperature QA -> train/test chat dataset.
The stage's logic is memorize.generation; here are the task runs, retries, progress and artifacts."""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from tqdm import tqdm

from memorize import DEFAULT_CACHE_DIR, generation, status_note, write_json
from memorize.chunking import Chunk, source_names
from memorize.extract import ExtractionError, find_documents
from memorize.generation import GenerationJob, batches
from memorize.hub import HubError
from memorize.llm import EndpointError
from memorize.local_model import resolve_model
from memorize.local_server import STOPPING, serve
from memorize.plan import estimate
from memorize.publish import dataset_card, push_dataset
from memorize.settings import GenerationSettings
from tasks.augment import augment_task
from tasks.caching import result_storage
from tasks.chunk import chunk_task
from tasks.extract import document, extract_task
from tasks.generate import cached_generation, generate_batch_task

# One torch thread for the embedded generator (bench/embedded_generator.py, batches of 8): 2 threads were
# faster on an idle 2-core machine (20.6 vs 13.6 tokens/s) but finished nothing in 150 s once another
# process took a core, where 1 thread kept its pace (14.3 tokens/s).
EMBEDDED_THREADS = 1
SLOW_EMBEDDED = 1.0  # tokens/s under which the embedded generator is reported as much slower than expected


def _extract_and_chunk(documents: list[str], chunk_tokens: int, overlap: int, storage, failures: list):
    """(documents read, chunks, files skipped in the folders given: unsupported types, with the reason)."""
    docs, chunks = [], []
    extract_node, chunk_node = (t.with_options(result_storage=storage) for t in (extract_task, chunk_task))
    found, skipped = find_documents(documents)
    for s in skipped:
        get_run_logger().warning("skipped %s: %s", s["file"], s["reason"])
    for path, source in source_names(found, documents).items():
        try:
            doc = document(extract_node(path))
        except ExtractionError as exc:
            failures.append({"file": exc.path, "stage": "extract", "reason": exc.reason})
            continue
        docs.append(doc.path)
        chunks.extend(Chunk(**c) for c in chunk_node(doc, source, chunk_tokens, overlap))
    return docs, chunks, skipped


def _generate(job: GenerationJob, settings: GenerationSettings, storage, log_dir: Path, progress: bool) -> None:
    """Ask the endpoint for every request not cached yet, in batches of task runs; fills job.results
    and job.failures. Without an endpoint the embedded model is served on loopback meanwhile."""
    s, todo = settings, job.todo
    base_url, concurrency, timeout, endpoint_model = s.base_url, s.concurrency, s.request_timeout, None
    if base_url is None:
        # The embedded server answers the requests in flight together, in one batch: a CPU step over 8 rows
        # costs little more than over one. A batch of long replies takes minutes.
        timeout = max(timeout, 1800.0)
    with ExitStack() as stack:
        # Entered before the server, so left after it: on Ctrl-C the server stops first, its requests in
        # flight fail at once, and the runner's shutdown does not wait for them to finish generating.
        runner = stack.enter_context(ThreadPoolTaskRunner(max_workers=concurrency))
        stack.callback(STOPPING.clear)
        if base_url is None:
            base_url, endpoint_model = stack.enter_context(
                serve(str(resolve_model(s.model)), log_dir / "generator-server.log", threads=EMBEDDED_THREADS,
                      max_batch=concurrency))
            get_run_logger().info(f"serving {endpoint_model} at {base_url} (batches of up to {concurrency})")
        task = generate_batch_task.with_options(retries=s.retries,
                                                retry_delay_seconds=exponential_backoff(backoff_factor=s.retry_delay))
        futures = {runner.submit(task, parameters=dict(
            requests=[{"key": job.keys[i], "messages": job.requests[i].messages,
                       "temperature": job.requests[i].temperature, "max_tokens": job.requests[i].max_tokens,
                       "schema": job.requests[i].schema}
                      for i in batch],
            label=f"{job.requests[batch[0]].chunk.chunk_id}-{len(batch)}req", storage=storage, model=job.model_name,
            base_url=base_url, api_key_env=s.api_key_env, timeout=timeout, parse_attempts=s.parse_attempts,
            concurrency_limit=s.concurrency_limit, endpoint_model=endpoint_model)): batch
            for batch in batches(todo, concurrency)}
        progress_id = create_progress_artifact(0.0, key="build-dataset-progress", description="LLM requests done")
        done, tokens, started, warned = 0, 0, time.perf_counter(), False
        try:  # KeyboardInterrupt (Ctrl-C, or SIGTERM via the CLI) is not an Exception: it passes the handler below
            with tqdm(total=len(todo), desc="generating QA", unit="req", disable=not progress) as bar:
                for fut in as_completed(list(futures)):
                    batch = futures[fut]
                    try:
                        out = fut.result()
                        errors = out["failures"]
                        job.results.update({i: out["generations"][job.keys[i]] for i in batch
                                            if job.keys[i] in out["generations"]})
                    except Exception as exc:  # retries exhausted: every unfinished request of the batch failed
                        errors = {job.keys[i]: (f"{type(exc).__name__}: {exc}", 0, 0) for i in batch}
                    done += len(batch)
                    tokens += sum(job.results[i].completion_tokens for i in batch if i in job.results)
                    for i in batch:
                        if job.keys[i] in errors and i not in job.results:
                            reason, calls, spent = errors[job.keys[i]]
                            job.fail(i, reason, calls)
                            tokens += spent  # an unusable reply took as long to write
                    rate = tokens / (time.perf_counter() - started)
                    bar.update(len(batch))
                    bar.set_postfix_str(f"{rate:.1f} tokens/s")
                    update_progress_artifact(progress_id, 100.0 * done / len(todo))
                    # The embedded server answers the requests in flight as one batch, which ends all at once:
                    # the rate means something once that batch is done, not at its first reply.
                    first_batch = done >= min(concurrency, len(todo))
                    if s.base_url is None and first_batch and rate < SLOW_EMBEDDED and done < len(todo) and not warned:
                        warned = True
                        get_run_logger().warning(
                            f"the embedded generator runs at {rate:.1f} tokens/s (about 14 on a 2-core machine): "
                            f"another process may be using the CPU. The {len(todo) - done} requests left take about "
                            f"{(time.perf_counter() - started) / done * (len(todo) - done) / 60:.0f} min; a faster "
                            "endpoint (--base-url) or the teacher-free pairs alone (--temperatures 0) avoid the wait.")
        except BaseException:
            STOPPING.set()  # interrupted: no retries while the stack (server, then runner) unwinds
            raise


def _stop_if_failing(failures: list[dict], sent: int, settings: GenerationSettings, log_dir: Path) -> None:
    """Raise EndpointError, before anything is written, when more than max_failed_share of the requests sent
    failed at the endpoint: with a wrong key, model or URL every request fails, and the teacher-free pairs
    alone must not pass for the run's dataset. Unparseable replies (reason "ParseError: ...", see
    tasks/generate.py) are the model's doing, not the endpoint's, and do not count."""
    failed = [f for f in failures if not f["reason"].startswith("ParseError")]
    if len(failed) <= settings.max_failed_share * sent:
        return
    check = (f"--base-url, --model and the key in ${settings.api_key_env}" if settings.base_url
             else f"the generator's log, {log_dir / 'generator-server.log'}")
    raise EndpointError(
        f"{len(failed)} of {sent} LLM requests failed (more than --max-failed-share {settings.max_failed_share:g}), "
        f"e.g. {failed[0]['reason'][:300]}. Check {check}. No dataset was written; the replies received are cached, "
        "so a re-run asks only for the others")


@flow(name="build-dataset")
def build_dataset(
    documents: list[str],
    context: str,
    out: str,
    settings: GenerationSettings = GenerationSettings(),
    cache_dir: str = DEFAULT_CACHE_DIR,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Build a chat-format QA dataset from documents; returns the report also written to OUT/report.json.

    With no settings.base_url, a small local instruct model is served on loopback (memorize.local_server).

    Args:
        documents: Files or folders of documents (PDF, text, Markdown, docx, pptx, xlsx, HTML, EPUB), as
            paths the workers can see.
        context: One sentence saying what the documents are, e.g. "International touch rugby rules"; it
            opens every generation prompt and names the documents in teacher-free questions.
        out: Output folder of the dataset (qa.jsonl, train/test JSONL and CSV, dataset/, report.json).
        settings: Settings of question generation.
        cache_dir: Folder of cached results (extraction, LLM replies), shared by runs that should reuse them.
        dry_run: Only count the requests and estimate their cost; ask nothing, write nothing.
        progress: Show a progress bar in the terminal.
    """
    logger, started, out_dir, s = get_run_logger(), time.perf_counter(), Path(out), settings
    storage = result_storage(cache_dir)
    failures: list[dict] = []
    docs, chunks, skipped = _extract_and_chunk(documents, s.chunk_tokens, s.chunk_overlap, storage, failures)
    job = generation.plan(chunks, context, s, lambda key: cached_generation(storage, key))
    est, cache_hits, todo = estimate(job.requests, s.price_per_1k), len(job.results), job.todo
    logger.info(f"{len(docs)} document(s), {len(chunks)} chunk(s), {len(job.temperatures)} temperature(s) "
                f"{job.temperatures}, styles {s.styles}: {est['requests']} requests ({cache_hits} cached), "
                f"~{est['prompt_tokens'] + est['completion_tokens']:,} tokens, estimated cost "
                f"{est['estimated_cost']:.4f} at {s.price_per_1k}/1K tokens")
    report = {"documents": docs, "skipped": skipped, "chunks": len(chunks), **est, "llm_calls": 0,
              "cache_hits": cache_hits, "qa_pairs": 0, "train_rows": 0, "test_rows": 0, "failures": failures}
    if dry_run:
        return {**report, "dry_run": True}
    if todo:
        _generate(job, s, storage, out_dir / "logs", progress)
        _stop_if_failing(job.failures, len(todo), s, out_dir / "logs")
    augmented = (augment_task.with_options(result_storage=storage)(chunks, context, s.augment)
                 if s.augment and chunks else [])
    qa, dropped = generation.assemble(job, chunks, augmented, s, context)
    failures += job.failures
    calls = sum(job.results[i].attempts for i in todo if i in job.results) + job.failed_calls
    report.update(dropped=dict(dropped), llm_calls=calls, **generation.write(out_dir, qa, chunks, context, job, s))
    if s.hub_repo:
        try:
            card = dataset_card(s.hub_repo, report, report["settings"])
            report["hub_url"] = push_dataset(out_dir / "dataset", s.hub_repo, card, private=not s.public)
        except HubError as exc:  # the dataset on disk stays; re-running pushes without any LLM call
            failures.append({"file": str(out_dir / "dataset"), "stage": "publish", "reason": str(exc)})
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    write_json(out_dir / "report.json", report, indent=2)
    create_table_artifact(
        key="build-dataset-samples", description="Sample question/answer pairs",
        table=[{k: p.get(k) for k in ("question", "answer", "chunk_id", "origin", "temperature", "split")}
               for p in qa[:: max(1, len(qa) // 20)][:20]])  # a spread over origins, not only the first chunk
    create_markdown_artifact(key="build-dataset-summary",
                             markdown=generation.summary_markdown(report) + status_note(out_dir))
    for f in failures:
        logger.warning("failed: %s", f)
    logger.info(f"{report['qa_pairs']} QA pairs -> {report['train_rows']} train / {report['test_rows']} test rows in "
                f"{out_dir} ({calls} LLM calls, {cache_hits} cache hits, {len(failures)} failure(s))")
    return report
