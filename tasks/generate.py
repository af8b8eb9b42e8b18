"""The LLM node: one request per (chunk, temperature, style), cached by content, retried on
transient faults only."""
from __future__ import annotations

from contextlib import nullcontext

from prefect import task
from prefect.tasks import exponential_backoff

from memorize.llm import Generation, client_for, generate_pairs, is_transient
from memorize.qa_prompt import PROMPT_VERSION
from tasks.caching import content_key


def generation_key(messages: list[dict], model: str, temperature: float, max_tokens: int) -> str:
    """The rendered prompt holds the chunk text, the context, the style and the pair count."""
    return content_key("generate", PROMPT_VERSION, model, temperature, max_tokens, messages)


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception
        return is_transient(exc)
    return False


@task(name="generate-qa", persist_result=True, retries=4, retry_condition_fn=_retry_transient,
      retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
      cache_key_fn=lambda ctx, p: generation_key(p["messages"], p["model"], p["temperature"], p["max_tokens"]),
      task_run_name="generate-{chunk_id}-t{temperature}-{style}")
def generate_task(messages: list[dict], model: str, temperature: float, max_tokens: int, chunk_id: str,
                  style: str, base_url: str | None, api_key_env: str, timeout: float = 120.0,
                  parse_attempts: int = 3, concurrency_limit: str | None = None,
                  endpoint_model: str | None = None) -> Generation:
    """`model` names the model in the cache key; `endpoint_model`, when given, is what the endpoint
    calls it (the embedded server only answers to its folder path, which differs per machine)."""
    # Opt-in global concurrency limit, shared by every flow run that names it (one API key's budget).
    if concurrency_limit:
        from prefect.concurrency.sync import concurrency

        gate = concurrency(concurrency_limit, occupy=1)
    else:
        gate = nullcontext()
    with gate:
        client = client_for(base_url, api_key_env, timeout)
        return generate_pairs(client, endpoint_model or model, messages, temperature, max_tokens, parse_attempts)
