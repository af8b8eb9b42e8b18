"""Calls to any OpenAI-compatible chat endpoint, and the fault classification retries rely on."""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import httpx
import openai

from memorize.qa_parse import ParseError, parse_pairs
from memorize.settings import DEFAULT_API_KEY_ENV

_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()
_unstructured: set[str] = set()  # endpoints that refused `response_format`: asked for plain text from then on


def client_for(base_url: str | None, api_key_env: str = DEFAULT_API_KEY_ENV, timeout: float = 120.0,
               max_retries: int = 0) -> openai.OpenAI:
    """One client per endpoint and process. Generation leaves retries to Prefect (max_retries=0), so that
    every retry is visible and bounded in one place; the judge, called per answer inside one evaluation
    task, lets the client retry 429/5xx/timeouts with its own exponential backoff."""
    key = (base_url, api_key_env, timeout, max_retries)
    with _clients_lock:
        if key not in _clients:
            # Local servers accept any key; a hosted endpoint without one fails with 401 (permanent).
            api_key = os.environ.get(api_key_env) or "not-needed"
            _clients[key] = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)
        return _clients[key]


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; 4xx and bad replies are not."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, httpx.TimeoutException, httpx.TransportError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


@dataclass
class Generation:
    pairs: list[tuple[str, str]]
    prompt_tokens: int
    completion_tokens: int
    attempts: int  # calls made, including re-asks after an unparseable reply


def _ask(client: openai.OpenAI, model: str, messages: list[dict], temperature: float, max_tokens: int,
         schema: dict | None):
    """One chat completion; with a schema, as structured output. An endpoint that answers 400 to
    `response_format` (some servers do not implement it) is asked again without it, and from then on."""
    endpoint = str(client.base_url)
    if schema is not None and endpoint not in _unstructured:
        fmt = {"type": "json_schema", "json_schema": {"name": "question_answer_pairs", "schema": schema, "strict": True}}
        try:
            return client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                  max_tokens=max_tokens, response_format=fmt)
        except openai.BadRequestError as exc:
            if not any(w in str(exc.message).lower() for w in ("response_format", "json_schema", "schema")):
                raise  # another bad request (e.g. a prompt too long): not about structured output
            _unstructured.add(endpoint)
            logging.getLogger(__name__).warning(
                f"{endpoint} refused structured output ({exc.message[:200]}); asking it for plain text "
                "(--no-structured skips the attempt)")
    return client.chat.completions.create(model=model, messages=messages, temperature=temperature, max_tokens=max_tokens)


def generate_pairs(client: openai.OpenAI, model: str, messages: list[dict], temperature: float,
                   max_tokens: int, parse_attempts: int = 3, schema: dict | None = None) -> Generation:
    """Ask for pairs (as JSON of `schema` where the endpoint supports it); re-ask a bounded number of
    times when the reply cannot be parsed."""
    prompt_tokens = completion_tokens = 0
    last: ParseError | None = None
    for attempt in range(1, parse_attempts + 1):
        reply = _ask(client, model, messages, temperature, max_tokens, schema)
        if reply.usage:
            prompt_tokens += reply.usage.prompt_tokens or 0
            completion_tokens += reply.usage.completion_tokens or 0
        text = (reply.choices[0].message.content or "") if reply.choices else ""
        try:
            return Generation(parse_pairs(text), prompt_tokens, completion_tokens, attempt)
        except ParseError as exc:
            last = exc
    error = ParseError(f"unparseable reply after {parse_attempts} attempts: {last}")
    error.attempts = parse_attempts  # calls made (and paid for) although nothing was kept
    error.completion_tokens = completion_tokens
    raise error
