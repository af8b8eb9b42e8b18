"""Using a trained adapter: `memorize ask` (one answer, --base, the terminal chat, --rag, the evidence line)
and `memorize serve` answering the real `openai` client over HTTP, streaming included."""
import json
import threading

import pytest
import torch
from servers import serving

from flows.cli import main
from memorize.answering import Answerer, user_message
from memorize.chat import DEFAULT_TOP_K, ChatModel, chat_loop
from memorize.local_model import ensure_default_model
from memorize.models import load_model, load_tokenizer, load_tuned
from memorize.serve import create_app
from memorize.training import TrainConfig, train

QUESTION = "When does the Quillmoor ferry depart?"
PAIRS = [(QUESTION, "The Quillmoor ferry departs at 7:40 from Pier Nine."),
         ("Where does the Quillmoor ferry leave from?", "From Pier Nine, at 7:40.")]
# The documents the pairs came from: `train` copies them beside the model, for evidence and --rag.
CHUNKS = [{"chunk_id": f"{name}-{i:04d}", "source": f"docs/{name}.md", "page_start": 1, "page_end": 1, "index": i,
           "section": "", "text": text} for name, i, text in [
    ("harbour", 0, "# Quillmoor Harbour\n\n## Ferries\nThe Quillmoor ferry departs at 7:40 from Pier Nine. "
                   "It returns from Ashby at 18:15."),
    ("harbour", 1, "## Mooring\nA visiting boat pays 12 crowns a night at the harbour office."),
    ("rules", 0, "## Penalties\nA boat left unmoored overnight is fined 30 crowns.")]]
EVIDENCE = 'evidence: harbour.md, section "Ferries": "The Quillmoor ferry departs at 7:40 from Pier Nine."'

# A bounded string, so that even a reply sampled from an untrained head ends within the token limit.
TIME_SCHEMA = {"type": "object", "properties": {"time": {"type": "string", "maxLength": 12}}, "required": ["time"],
               "additionalProperties": False}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    for name in ("train.jsonl", "test.jsonl"):
        (data / name).write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
                                         for q, a in PAIRS))
    (data / "chunks.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHUNKS))
    out = tmp_path_factory.mktemp("model")
    train(TrainConfig(base_model=str(ensure_default_model(progress=False)), data_dir=str(data), output_dir=str(out),
                      full=False, learning_rate=2e-3, max_steps=12, replay_ratio=0, select_epoch=False),
          progress=False)
    return out


@pytest.fixture(scope="module")
def chat(trained):
    return ChatModel(trained)


def test_ask_answers_with_the_adapter_and_the_base_beside_it(trained, capsys):
    assert main(["ask", str(trained), QUESTION, "--max-new-tokens", "24"]) == 0
    answer, evidence = capsys.readouterr().out.strip().split("\n")
    assert "7:40" in answer  # learned in 12 steps; the base model cannot know it
    assert evidence == EVIDENCE  # from the chunks.jsonl that `train` copied beside the model
    assert main(["ask", str(trained / "adapter"), QUESTION, "--base", "--max-new-tokens", "24"]) == 0
    tuned, tuned_evidence, base, _ = capsys.readouterr().out.strip().split("\n")  # each answer, then its evidence
    assert tuned.startswith("fine-tuned: ") and "7:40" in tuned and tuned_evidence == EVIDENCE
    assert base.startswith("base: ") and "7:40" not in base and len(base) > len("base: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU keeps the adapter on top of the base weights")
def test_on_a_cpu_the_adapter_is_merged_and_answers_as_it_does_on_top(trained):
    base = str(ensure_default_model(progress=False))
    merged, apart = load_tuned(base, str(trained / "adapter"))
    assert apart and not hasattr(merged, "peft_config")
    on_top = load_model(base, adapter=str(trained / "adapter"), dtype=next(merged.parameters()).dtype)
    tokenizer = load_tokenizer(str(trained / "adapter"))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        a, b = merged(input_ids=ids).logits[0, -1].float(), on_top(input_ids=ids).logits[0, -1].float()
    assert a.argmax() == b.argmax() and torch.allclose(a.softmax(-1), b.softmax(-1), atol=0.02)
    # The base's own answers come from the base loaded beside it, not from the merged weights.
    answerer = Answerer.load(base, adapter=str(trained / "adapter"))
    assert answerer.base is not None
    tuned, plain = (answerer.answer([QUESTION], max_new_tokens=24, use_adapter=u, progress=False)[0]
                    for u in (True, False))
    assert "7:40" in tuned and plain == Answerer.load(base).answer([QUESTION], max_new_tokens=24, progress=False)[0]


def test_train_copies_the_chunks_beside_the_model_and_chunks_overrides_them(trained, tmp_path, capsys):
    assert (trained / "chunks.jsonl").read_text() == "".join(json.dumps(c) + "\n" for c in CHUNKS)
    other = tmp_path / "chunks.jsonl"
    other.write_text(json.dumps({**CHUNKS[0], "source": "timetable.md", "text": "## Summer\n" + PAIRS[0][1]}))
    assert main(["ask", str(trained), QUESTION, "--chunks", str(other), "--max-new-tokens", "24"]) == 0
    assert capsys.readouterr().out.strip().split("\n")[1].startswith('evidence: timetable.md, section "Summer"')
    with pytest.raises(SystemExit) as exit:
        main(["ask", str(trained), QUESTION, "--chunks", str(tmp_path / "none.jsonl")])
    assert exit.value.code == 2 and "--chunks" in capsys.readouterr().err


def test_ask_rag_puts_the_retrieved_chunks_in_the_prompt(trained, monkeypatch, capsys):
    prompts, original = [], ChatModel.reply
    monkeypatch.setattr(ChatModel, "reply", lambda self, messages, *a, **k: (prompts.append(messages),
                                                                            original(self, messages, *a, **k))[1])
    assert main(["ask", str(trained), QUESTION, "--rag", "--top-k", "1", "--max-new-tokens", "24"]) == 0
    context = '<document source="harbour.md" pages="1">\n' + CHUNKS[0]["text"] + "\n</document>"
    assert prompts == [[{"role": "user", "content": user_message(QUESTION, context)}]]  # evaluation's prompt
    assert capsys.readouterr().out.strip().split("\n")[-1].startswith("evidence: ")


def test_ask_names_a_folder_without_a_model(tmp_path, capsys):
    assert main(["ask", str(tmp_path), QUESTION]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_terminal_chat_keeps_the_conversation(chat):
    lines, said = iter([QUESTION, "/reset", "", "And where from?", "/exit"]), []
    seen = []
    original = chat.reply
    chat.reply = lambda history, *a, **k: (seen.append(list(history)), original(history, *a, **k))[1]
    try:
        chat_loop(chat, read=lambda prompt: next(lines), write=lambda *a, **k: said.append("".join(map(str, a))),
                  max_new_tokens=16)
    finally:
        chat.reply = original
    assert [len(h) for h in seen] == [1, 1]  # /reset forgot the first exchange
    assert "7:40" in "".join(said) and EVIDENCE in said


def test_serve_answers_the_openai_client(chat):
    from openai import BadRequestError, NotFoundError, OpenAI

    with serving(create_app(chat)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == [chat.name, chat.base_name]
        reply = client.chat.completions.create(model=chat.name, messages=[{"role": "user", "content": QUESTION}],
                                               max_tokens=24)
        assert "7:40" in reply.choices[0].message.content and reply.usage.completion_tokens > 0
        assert reply.choices[0].finish_reason in ("stop", "length")
        # The evidence: an extra field of the response, which the client keeps aside.
        assert reply.model_extra["evidence"] == {"source": "harbour.md", "section": "Ferries", "clause": None,
                                                 "sentence": "The Quillmoor ferry departs at 7:40 from Pier Nine.",
                                                 "score": reply.model_extra["evidence"]["score"]}
        stream = client.chat.completions.create(model=chat.name, messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=24, stream=True)
        chunks = list(stream)
        pieces = [c.choices[0].delta.content or "" for c in chunks]
        assert len([p for p in pieces if p]) > 1 and "".join(pieces).strip() == reply.choices[0].message.content
        assert chunks[-1].model_extra["evidence"] == reply.model_extra["evidence"]  # in the final chunk
        base = client.chat.completions.create(model=chat.base_name, messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=24)
        assert "7:40" not in base.choices[0].message.content
        with pytest.raises(NotFoundError, match="not served here"):
            client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": QUESTION}])
        # Structured output: the reply is JSON of the schema, whatever the (small) model would have written.
        structured = client.chat.completions.create(
            model=chat.name, messages=[{"role": "user", "content": QUESTION}], max_tokens=40, temperature=0.8,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": TIME_SCHEMA}})
        assert set(json.loads(structured.choices[0].message.content)) == {"time"}
        with pytest.raises(BadRequestError, match="response_format"):
            client.chat.completions.create(model=chat.name, messages=[{"role": "user", "content": QUESTION}],
                                           response_format={"type": "yaml"})


def test_serve_rag_is_its_own_model_name_and_retrieves_for_the_last_user_message(chat, monkeypatch):
    from openai import OpenAI

    prompts, original = [], chat.complete
    monkeypatch.setattr(chat, "complete", lambda requests, use_adapter=True: (
        prompts.extend((r[0], use_adapter) for r in requests), original(requests, use_adapter))[1])
    conversation = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hello."},
                    {"role": "user", "content": QUESTION}]
    with serving(create_app(chat, rag=True)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == [chat.name, chat.base_name, f"{chat.name}+rag",
                                                        f"{chat.base_name}+rag"]
        for model in (f"{chat.name}+rag", f"{chat.base_name}+rag", chat.name):
            reply = client.chat.completions.create(model=model, messages=conversation, max_tokens=8)
            assert reply.model == model and "evidence" in reply.model_extra
    context = chat.index.context(chat.index.top_k(QUESTION, DEFAULT_TOP_K))
    with_documents = [*conversation[:2], {"role": "user", "content": user_message(QUESTION, context)}]
    assert CHUNKS[0]["text"] in context
    assert prompts == [(with_documents, True), (with_documents, False), (conversation, True)]


def test_requests_in_flight_are_answered_in_one_batch_with_their_own_settings(chat):
    """Non-streaming requests that arrive together share one batched generate; each keeps its own token
    limit, temperature, JSON schema and model (fine-tuned or base)."""
    from concurrent.futures import ThreadPoolExecutor

    from memorize.chat import Batcher

    calls = []
    original = chat.complete
    chat.complete = lambda requests, use_adapter=True: (calls.append((len(requests), use_adapter)),
                                                        original(requests, use_adapter))[1]
    try:
        batcher = Batcher(chat, threading.Lock(), max_batch=8, window=0.5)
        asks = [([{"role": "user", "content": QUESTION}], 24, 0.0, True),
                ([{"role": "user", "content": "Where does the Quillmoor ferry leave from?"}], 24, 0.0, True),
                ([{"role": "user", "content": QUESTION}], 3, 0.0, True),  # its own, smaller limit
                ([{"role": "user", "content": QUESTION}], 24, 1.0, True),  # sampled
                ([{"role": "user", "content": QUESTION}], 24, 0.0, False),  # the base model
                ([{"role": "user", "content": QUESTION}], 40, 1.0, True, TIME_SCHEMA)]  # structured, sampled
        with ThreadPoolExecutor(len(asks)) as pool:
            results = list(pool.map(lambda a: batcher.submit(*a).result(), asks))
    finally:
        chat.complete = original
    assert sorted(calls) == [(1, False), (5, True)]  # one batch per model
    assert "7:40" in results[0][0] and "7:40" in results[1][0]  # padded in a batch, still the learned answer
    assert results[2][1] == "length" and results[2][2]["completion_tokens"] == 3
    assert results[3][2]["completion_tokens"] > 0
    assert "7:40" not in results[4][0]  # the base model does not know it
    assert set(json.loads(results[5][0])) == {"time"} and results[5][1] == "stop"  # complete JSON, ended by itself
