"""`memorize serve` as an endpoint others can reach: a bearer key, no unauthenticated non-loopback host, bounded
work (max_tokens, body and prompt size, a queue answered 429 when full), /health during generations, a
client that disconnects stops its generation, a failed stream says so, and a bad request fails only itself.
Real server (uvicorn), real small model."""
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from servers import serving

from flows.cli import main
from memorize.chat import Batcher, ChatModel
from memorize.serve import create_app, exposure_warning

pytestmark = pytest.mark.slow

STORY = [{"role": "user", "content": "Write a long story about a dragon who guards a lighthouse."}]


@pytest.fixture(scope="module")
def chat(small_model):
    return ChatModel(small_model)


def _ask(url: str, headers: dict | None = None, **body) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, **body}
    return httpx.post(f"{url}/v1/chat/completions", headers=headers, json=body, timeout=120)


def test_a_key_guards_every_endpoint_but_health(chat):
    from openai import AuthenticationError, OpenAI

    with serving(create_app(chat, api_key="s3cret")) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        refused = httpx.get(f"{url}/v1/models")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert _ask(url).status_code == 401 and _ask(url, {"Authorization": "s3cret"}).status_code == 401
        assert _ask(url, {"Authorization": "Bearer s3cret"}).status_code == 200
        client = OpenAI(base_url=f"{url}/v1", api_key="s3cret")
        assert [m.id for m in client.models.list()] == [chat.name]
        with pytest.raises(AuthenticationError, match="API key"):
            OpenAI(base_url=f"{url}/v1", api_key="guess", max_retries=0).models.list()


def test_serving_other_machines_needs_a_key(small_model, monkeypatch, capsys):
    monkeypatch.delenv("MEMORIZE_API_KEY", raising=False)
    monkeypatch.delenv("TEAM_KEY", raising=False)
    assert main(["serve", small_model, "--host", "0.0.0.0"]) == 2  # refused before the model is loaded
    err = capsys.readouterr().err
    assert err.startswith("error: --host 0.0.0.0") and "export MEMORIZE_API_KEY=" in err and "--insecure-no-auth" in err
    assert main(["serve", small_model, "--host", "192.168.1.5", "--api-key-env", "TEAM_KEY"]) == 2
    assert "TEAM_KEY is not set" in capsys.readouterr().err
    assert all(exposure_warning(host, None) is None for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert exposure_warning("0.0.0.0", "a-key") is None
    assert exposure_warning("0.0.0.0", None, insecure=True).startswith("warning: serving 0.0.0.0 without an API key")


def test_max_tokens_is_clamped_to_the_context_and_sizes_are_capped(chat, monkeypatch):
    limits = []
    original = chat.complete

    def complete(requests, use_adapter=True):  # records the limit asked for, generates 4 tokens at most
        limits.extend(r[1] for r in requests)
        return original([(m, min(n, 4), t, s) for m, n, t, s in requests], use_adapter)

    monkeypatch.setattr(chat, "complete", complete)
    with serving(create_app(chat, max_prompt_tokens=64)) as url:
        clamped = _ask(url, max_tokens=100000)
        assert clamped.status_code == 200
        assert limits == [chat.context_length - clamped.json()["usage"]["prompt_tokens"]]
        for body in ({"max_tokens": 0}, {"max_completion_tokens": -5}):
            refused = _ask(url, **body)
            assert refused.status_code == 400 and "max_tokens must be at least 1" in refused.json()["error"]["message"]
        long = _ask(url, messages=[{"role": "user", "content": "word " * 200}])
        assert long.status_code == 400 and "takes at most 64" in long.json()["error"]["message"]
        assert _ask(url, messages=[{"role": "user", "content": "x" * (2 << 20)}]).status_code == 413
        assert _ask(url, messages="not a list").status_code == 400
    assert len(limits) == 1  # nothing refused reached the model


def test_a_flood_is_answered_429_beyond_the_queue(chat):
    start = threading.Barrier(8)

    def one(_):
        start.wait()
        return _ask(url, max_tokens=8)

    with serving(create_app(chat, max_batch=1, max_queue=2)) as url:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(8)))
        statuses = [r.status_code for r in replies]
        assert set(statuses) == {200, 429} and statuses.count(200) >= 2
        busy = next(r for r in replies if r.status_code == 429)
        assert busy.json()["error"]["type"] == "rate_limit_error" and busy.headers["retry-after"] == "1"
        assert _ask(url).status_code == 200  # the queue emptied: served again


def test_health_answers_during_a_generation(chat, monkeypatch):
    started, original = threading.Event(), chat.complete
    monkeypatch.setattr(chat, "complete", lambda *a, **k: (started.set(), original(*a, **k))[1])
    with serving(create_app(chat)) as url:
        generation = threading.Thread(target=_ask, args=(url,), kwargs={"messages": STORY, "max_tokens": 48})
        generation.start()
        assert started.wait(60)
        latencies = []
        for _ in range(5):
            t = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            latencies.append(time.perf_counter() - t)
            time.sleep(0.05)
        assert generation.is_alive()  # measured during the generation
        generation.join()
    assert max(latencies) < 0.5, latencies


def test_a_client_that_disconnects_stops_its_streamed_generation(chat, monkeypatch):
    calls, original = [], chat.reply

    def reply(*args, **kwargs):
        call = {"stop": kwargs.get("stop", args[6] if len(args) > 6 else None)}
        calls.append(call)
        call["usage"] = original(*args, **kwargs)[2]
        call["ended"] = time.monotonic()
        return "", "stop", call["usage"]

    monkeypatch.setattr(chat, "reply", reply)
    with serving(create_app(chat)) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=60,
                          json={"messages": STORY, "max_tokens": 1000, "stream": True}) as stream:
            pieces = (line for line in stream.iter_lines() if '"content": "' in line)
            for _ in range(4):
                next(pieces)
        left, running = time.monotonic(), "ended" not in calls[0]  # the connection is closed here, mid-answer
        while "ended" not in calls[0] and time.monotonic() < left + 20:
            time.sleep(0.1)
    assert running and calls[0]["stop"].is_set() and calls[0]["ended"] - left < 5
    assert calls[0]["usage"]["completion_tokens"] < 100, calls[0]["usage"]


def test_an_error_while_streaming_ends_the_stream_with_an_error_event(chat, monkeypatch):
    from openai import APIError, OpenAI

    def failing(messages, max_new_tokens, temperature, use_adapter, on_text, *rest):
        on_text("The ferry leaves at")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(chat, "reply", failing)
    with serving(create_app(chat)) as url:
        lines = [line for line in httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "messages": STORY, "stream": True}).text.splitlines() if line]
        assert json.loads(lines[-1].removeprefix("data: ")) == {
            "error": {"message": "generation failed: RuntimeError: out of memory", "type": "server_error"}}
        assert "data: [DONE]" not in lines
        stream = OpenAI(base_url=f"{url}/v1", api_key="unused").chat.completions.create(
            model=chat.name, messages=STORY, stream=True)
        with pytest.raises(APIError, match="out of memory"):
            list(stream)


def test_one_bad_request_fails_only_itself_not_its_batch(chat, monkeypatch):
    calls, original = [], chat.complete

    def complete(requests, use_adapter=True):
        calls.append(len(requests))
        if any(r[0][-1]["content"] == "BAD" for r in requests):
            raise ValueError("cannot answer BAD")
        return original(requests, use_adapter)

    monkeypatch.setattr(chat, "complete", complete)
    batcher = Batcher(chat, threading.Lock(), max_batch=8, window=0.5)
    futures = [batcher.submit([{"role": "user", "content": q}], 4, 0.0, True) for q in ("Say hello.", "BAD", "Hi!")]
    assert futures[0].result(60)[2]["completion_tokens"] > 0 and futures[2].result(60)[2]["completion_tokens"] > 0
    with pytest.raises(ValueError, match="cannot answer BAD"):
        futures[1].result(60)
    assert calls == [3, 1, 1, 1]  # the batch, then each of its requests alone
