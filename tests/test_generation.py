"""The generation stage without Prefect: planning against a cache, batching, assembling and writing the
dataset (memorize.generation), the request plan and prompt (plan.py, qa_prompt.py), and which endpoint
errors are worth a retry (llm.is_transient)."""
import json

import httpx
import openai
import pytest
from fake_llm import FakeLLM

from memorize import generation
from memorize.chunking import Chunk, text_sha256
from memorize.llm import Generation, client_for, generate_pairs, is_transient
from memorize.plan import estimate
from memorize.qa_parse import ParseError
from memorize.qa_prompt import build_messages, pairs_schema, questions_for, temperatures
from memorize.settings import GenerationSettings

TEXTS = ["The Quillmoor ferry leaves Pier Nine at 7:40. Its captain is Orla Venn.",
         "The fare is four crowns. Children under six travel free."]
CHUNKS = [Chunk(f"ferry.md#{i}", "ferry.md", 1, 1, i, text_sha256(t), 20, t) for i, t in enumerate(TEXTS)]
SETTINGS = GenerationSettings(base_url="http://127.0.0.1:9/v1", model="m", temperatures=2, styles=["mixed", "simple"],
                              test_ratio=0.25)


def test_temperatures_and_question_counts():
    assert temperatures(0) == [] and temperatures(1) == [0.01] and temperatures(3) == [0.01, 0.605, 1.2]
    with pytest.raises(ValueError, match="temperatures"):
        temperatures(-1)
    assert questions_for(20) == 2 and questions_for(600) == 10 and questions_for(600, per_chunk=4) == 4


def test_the_prompt_holds_the_chunk_the_context_and_the_count():
    messages = build_messages(TEXTS[0], "Rules of the Quillmoor ferry.", 3, "reversed")
    text = " ".join(m["content"] for m in messages)
    assert TEXTS[0] in text and "Rules of the Quillmoor ferry" in text and "3" in text
    assert "reverse" in text and messages[-1]["role"] == "user"


def test_structured_output_is_asked_for_and_an_endpoint_that_refuses_it_gets_plain_text(caplog):
    messages = build_messages(TEXTS[0], "Ferry rules", 2)
    schema = pairs_schema(2)
    with FakeLLM() as llm:
        client = client_for(llm.base_url, timeout=5)
        gen = generate_pairs(client, "m", messages, 0.01, 256, schema=schema)
        assert llm.bodies[-1]["response_format"]["json_schema"]["schema"] == schema
        assert [q for q, _ in gen.pairs][0].startswith("What does the document state in sentence 1")
    with FakeLLM(refuse_response_format=True) as llm:
        client = client_for(llm.base_url, timeout=5)
        gen = generate_pairs(client, "m", messages, 0.01, 256, schema=schema)
        generate_pairs(client, "m", messages, 0.6, 256, schema=schema)
        assert len(gen.pairs) == 2 and llm.requests == 3  # refused once; not offered again to this endpoint
        assert "response_format" not in llm.bodies[-1]
        assert sum("refused structured output" in r.message for r in caplog.records) == 1


def test_an_unusable_reply_is_paid_for():
    messages = build_messages(TEXTS[0], "Ferry rules", 2)
    with FakeLLM() as llm:
        client = client_for(llm.base_url, timeout=5)
        llm.replies = ['{"pairs": [{"question": "In the Ferry rules, what is']  # cut off by its token limit
        with pytest.raises(ParseError) as err:
            generate_pairs(client, "m", messages, 0.01, 64, parse_attempts=1, schema=pairs_schema(2))
        assert err.value.attempts == 1 and err.value.completion_tokens > 0  # paid for, and as slow to write


def test_the_reply_schema_bounds_the_pairs_and_is_part_of_the_cache_key():
    schema = pairs_schema(3)
    assert schema["properties"]["pairs"]["maxItems"] == 3 and schema["required"] == ["pairs"]
    structured = generation.plan(CHUNKS, "Ferry rules", SETTINGS, lambda key: None)
    plain = generation.plan(CHUNKS, "Ferry rules", SETTINGS.model_copy(update={"structured": False}), lambda key: None)
    assert structured.requests[0].schema == pairs_schema(structured.requests[0].n) and plain.requests[0].schema is None
    assert not set(structured.keys) & set(plain.keys)
    # The embedded generator's strings are bounded (a small model loops inside one); an endpoint's are not.
    embedded = generation.plan(CHUNKS, "Ferry rules", GenerationSettings(temperatures=1), lambda key: None)
    pair = embedded.requests[0].schema["properties"]["pairs"]["items"]["properties"]
    assert pair["answer"]["maxLength"] == pair["question"]["maxLength"] == generation.EMBEDDED_MAX_CHARS
    assert "maxLength" not in json.dumps(structured.requests[0].schema)


def test_plan_asks_each_chunk_at_each_temperature_and_style_and_takes_cached_replies():
    job = generation.plan(CHUNKS, "Ferry rules", SETTINGS, lambda key: None)
    assert len(job.requests) == len(job.keys) == len(set(job.keys)) == 2 * 2 * 2  # chunks x temperatures x styles
    assert job.todo == list(range(8)) and job.temperatures == [0.01, 1.2]
    reply = Generation([("When does the ferry leave?", "At 7:40.")], 10, 5, 1)
    cache = {job.keys[3]: reply}
    again = generation.plan(CHUNKS, "Ferry rules", SETTINGS, cache.get)
    assert again.keys == job.keys  # content keys: the same inputs give the same keys
    assert again.results == {3: reply} and 3 not in again.todo
    other = generation.plan(CHUNKS, "Ferry rules", SETTINGS.model_copy(update={"model": "other"}), cache.get)
    assert not other.results  # another model's replies are not this one's
    est = estimate(job.requests, price_per_1k=0.5)
    assert est["requests"] == 8
    assert est["estimated_cost"] == pytest.approx((est["prompt_tokens"] + est["completion_tokens"]) / 1000 * 0.5, abs=1e-3)


def test_default_temperatures_three_at_an_endpoint_one_with_the_embedded_model():
    endpoint = generation.plan(CHUNKS, "c", SETTINGS.model_copy(update={"temperatures": None, "styles": ["mixed"]}),
                               lambda key: None)
    assert endpoint.temperatures == [0.01, 0.605, 1.2] and len(endpoint.requests) == 2 * 3
    embedded = generation.plan(CHUNKS, "c", GenerationSettings(), lambda key: None)
    assert embedded.temperatures == [0.01] and len(embedded.requests) == 2
    assert generation.plan(CHUNKS, "c", GenerationSettings(temperatures=0), lambda key: None).requests == []


def test_plan_needs_a_model_name_with_an_endpoint():
    with pytest.raises(ValueError, match="--model is required"):
        generation.plan(CHUNKS, "c", SETTINGS.model_copy(update={"model": None}), lambda key: None)
    embedded = generation.plan(CHUNKS, "c", GenerationSettings(temperatures=1), lambda key: None)
    assert embedded.model_name == "SmolLM2-135M-Instruct"  # keyed by name, not by its per-machine path


def test_batches_cover_every_request_once_about_two_per_worker():
    for n, workers in [(1, 8), (7, 2), (40, 8), (41, 3)]:
        parts = generation.batches(list(range(n)), workers)
        assert sorted(i for b in parts for i in b) == list(range(n))
        assert len(parts) <= 2 * workers and all(parts)


def test_assemble_filters_generated_pairs_adds_teacher_free_ones_and_records_failures(tmp_path):
    job = generation.plan(CHUNKS, "Ferry rules", SETTINGS, lambda key: None)
    job.results[0] = Generation([("When does the Quillmoor ferry leave Pier Nine?", "At 7:40."),
                                 ("Is Orla Venn the captain?", "Orla Venn is the captain.")], 10, 5, 2)
    job.results[5] = Generation([("How much is the fare?", "Four crowns.")], 10, 5, 1)
    job.fail(6, "ParseError: no pairs", calls=3)
    augmented = [{"question": "Who captains the Quillmoor ferry?", "answer": "Orla Venn.", "kind": "reverse",
                  "chunk_id": "ferry.md#0"}]
    qa, dropped = generation.assemble(job, CHUNKS, augmented, SETTINGS.model_copy(update={"abstain_share": 0}),
                                    "Ferry rules")
    assert [p["origin"] for p in qa] == ["llm", "llm", "augment:reverse"]
    assert dropped == {"answer_in_question": 1}  # nothing to learn from an answer its question holds
    first = qa[0]
    assert first["chunk_id"] == "ferry.md#0" and first["source"] == "ferry.md" and first["temperature"] == 0.01
    assert first["chunk_sha256"] == CHUNKS[0].sha256 and first["split"] in ("train", "test")
    assert any(p["split"] == "test" for p in qa)  # a small set still gets a held-out pair
    assert job.failed_calls == 3 and job.failures[0]["chunk"] == CHUNKS[job.requests[6].chunk.index].chunk_id

    report = generation.write(tmp_path, qa, CHUNKS, "Ferry rules", job, SETTINGS)
    assert report["qa_pairs"] == 3 and report["pairs_by_origin"] == {"llm": 2, "augment:reverse": 1}
    assert report["train_rows"] + report["test_rows"] == 3 and report["settings"]["temperatures"] == [0.01, 1.2]
    assert [json.loads(line)["chunk_id"] for line in open(tmp_path / "chunks.jsonl")] == ["ferry.md#0", "ferry.md#1"]


def _status(code: int) -> openai.APIStatusError:
    response = httpx.Response(code, request=httpx.Request("POST", "http://x/v1/chat/completions"))
    return openai.APIStatusError(f"HTTP {code}", response=response, body=None)


@pytest.mark.parametrize("exc, transient", [
    (_status(429), True), (_status(500), True), (_status(503), True),
    (_status(400), False), (_status(401), False), (_status(404), False),
    (openai.APITimeoutError(request=httpx.Request("POST", "http://x")), True),
    (openai.APIConnectionError(request=httpx.Request("POST", "http://x")), True),
    (httpx.ReadTimeout("slow"), True), (httpx.ConnectError("refused"), True),
    (ValueError("a bug"), False),
])
def test_which_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient
