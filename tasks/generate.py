"""The LLM node. Each request (chunk, temperature, style) is cached on its own, by content, the
moment it succeeds; a task run handles a batch of requests, so that Prefect's per-task-run cost is
paid per batch rather than per request (on 2 cores it, not the LLM, was the bottleneck)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict

from prefect import task
from prefect.tasks import exponential_backoff

from memorize.llm import Generation, client_for, generate_pairs, is_transient
from memorize.local_server import STOPPING
from memorize.qa_parse import ParseError
from tasks.caching import JsonResultStorage, cached, store


def cached_generation(storage: JsonResultStorage, key: str) -> Generation | None:
    """The reply cached under key (stored as JSON: its pairs come back as lists), or None."""
    hit = cached(storage, key)
    return None if hit is None else Generation(**{**hit, "pairs": [tuple(p) for p in hit["pairs"]]})


def _retry_transient(task, task_run, state) -> bool:
    if STOPPING.is_set():
        return False
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception
        return is_transient(exc)
    return False


@task(name="generate-qa", retries=4, retry_condition_fn=_retry_transient,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      task_run_name="generate-{label}")
def generate_batch_task(requests: list[dict], label: str, storage: JsonResultStorage, model: str,
                        base_url: str | None, api_key_env: str, timeout: float = 120.0, parse_attempts: int = 3,
                        concurrency_limit: str | None = None, endpoint_model: str | None = None) -> dict:
    """requests: [{key, messages, temperature, max_tokens, schema}]. Returns {"generations": {key: Generation},
    "failures": {key: (reason, calls made, completion tokens spent)}}. A transient fault raises, so Prefect
    retries the batch; the requests that already succeeded are then read back from the cache, not asked again.

    `model` is the model's name in the cache key; `endpoint_model`, when given, is what the endpoint
    calls it (the embedded server answers only to its folder path, which differs per machine)."""
    client = client_for(base_url, api_key_env, timeout)
    generations, failures = {}, {}
    for r in requests:
        key = r["key"]
        hit = cached_generation(storage, key)
        if hit is not None:
            generations[key] = hit
            continue
        # Opt-in global concurrency limit, shared by every flow run that names it (one API key's budget).
        gate = nullcontext()
        if concurrency_limit:
            from prefect.concurrency.sync import concurrency

            gate = concurrency(concurrency_limit, occupy=1)
        try:
            with gate:
                gen = generate_pairs(client, endpoint_model or model, r["messages"], r["temperature"],
                                     r["max_tokens"], parse_attempts, r.get("schema"))
        except ParseError as exc:
            failures[key] = (f"ParseError: {exc}", exc.attempts, exc.completion_tokens)
            continue
        except Exception as exc:
            if is_transient(exc):
                raise
            failures[key] = (f"{type(exc).__name__}: {exc}", 1, 0)  # permanent (401, 400, ...): not retried
            continue
        store(storage, key, asdict(gen))  # persisted at once: a killed run keeps it
        generations[key] = gen
    return {"generations": generations, "failures": failures}
