"""Calls to any OpenAI-compatible chat endpoint, and the fault classification retries rely on."""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass

import httpx
import openai

from memorize import checks
from memorize.qa_parse import ParseError, parse_pairs
from memorize.settings import DEFAULT_API_KEY_ENV

_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()
_unstructured: set[str] = set()  # endpoints that refused `response_format`: asked for plain text from then on

_SECRETS = [  # (pattern, replacement), applied in order
    (re.compile(r"(?<=://)[^/\s'\"@]+@"), "***@"),  # user:password@ in a URL
    (re.compile(r"(?i)\bbearer\s+[^\s'\",]+"), "Bearer ***"),
    (re.compile(r"\bBasic\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]+=*"), "Basic ***"),  # base64 of user:password
    (re.compile(r"\bsk-[\w-]{8,}"), "sk-***"),
    # Long hex or base64 runs with letters and digits: keys of any vendor, tokens, JWT parts.
    (re.compile(r"(?=[\w+=-]*\d)(?=[\w+=-]*[A-Za-z])[\w+=-]{32,}"), "***"),
]


class EndpointError(RuntimeError):
    """The endpoint failed too many of a run's requests for the run to go on."""


def redact(text: str) -> str:
    """Text with anything that looks like a credential masked: a URL's user:password, Bearer and Basic values,
    sk-... keys and long token-like runs. For what an endpoint sends back (some echo the key they were given) and
    for endpoint URLs written to logs and config files."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redact_body(body: object) -> object:
    if isinstance(body, str):
        return redact(body)
    if isinstance(body, dict):
        return {k: _redact_body(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_redact_body(v) for v in body]
    return body


class _RedactingClient(openai.OpenAI):
    """A client whose status errors carry the endpoint's error body redacted: their messages reach
    report.json, Prefect's logs and the terminal."""

    def _make_status_error(self, err_msg: str, *, body: object, response):
        return super()._make_status_error(redact(err_msg), body=_redact_body(body), response=response)


def client_for(base_url: str | None, api_key_env: str = DEFAULT_API_KEY_ENV, timeout: float = 120.0,
               max_retries: int = 0) -> openai.OpenAI:
    """One client per endpoint and process. Generation leaves retries to Prefect (max_retries=0), so that
    every retry is visible and bounded in one place; the judge, called per answer inside one evaluation
    task, lets the client retry 429/5xx/timeouts with its own exponential backoff."""
    checks.key_env(api_key_env)
    key = (base_url, api_key_env, timeout, max_retries)
    with _clients_lock:
        if key not in _clients:
            # Local servers accept any key; a hosted endpoint without one fails with 401 (permanent).
            api_key = os.environ.get(api_key_env) or "not-needed"
            _clients[key] = _RedactingClient(base_url=base_url, api_key=api_key, timeout=timeout,
                                             max_retries=max_retries)
        return _clients[key]


def is_transient(exc: BaseException) -> bool:
    """429, 5xx, timeouts and connection errors are worth retrying; 4xx and bad replies are not."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError, httpx.TimeoutException,
                        httpx.TransportError)):
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
        fmt = {"type": "json_schema",
               "json_schema": {"name": "question_answer_pairs", "schema": schema, "strict": True}}
        try:
            return client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                  max_tokens=max_tokens, response_format=fmt)
        except openai.BadRequestError as exc:
            if not any(w in str(exc.message).lower() for w in ("response_format", "json_schema", "schema")):
                raise  # another bad request (e.g. a prompt too long): not about structured output
            _unstructured.add(endpoint)
            logging.getLogger(__name__).warning(
                f"{redact(endpoint)} refused structured output ({exc.message[:200]}); asking it for plain text "
                "(--no-structured skips the attempt)")
    return client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                          max_tokens=max_tokens)


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
