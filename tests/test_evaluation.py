import json
import re

import pytest
from fake_llm import FakeLLM

from memorize.evaluation import SYSTEMS, _section, evaluate, markdown_report, summarize
from memorize.scoring import LLMJudge
from memorize.settings import EvalSettings


@pytest.fixture(scope="module")
def chat_server():
    """An OpenAI-compatible endpoint on loopback that answers "Yes" unless replies are scripted."""
    with FakeLLM(default_reply="Yes") as llm:
        yield llm


@pytest.fixture
def judge(chat_server):
    from openai import OpenAI

    chat_server.replies, chat_server.bodies = [], []
    client = OpenAI(base_url=chat_server.base_url, api_key="test", max_retries=0)
    return LLMJudge(client, "judge-model")


def test_judge_gets_a_verdict_for_every_answer_from_an_endpoint_failing_30_percent(chat_server):
    from memorize.llm import client_for
    from tasks.evaluate import JUDGE_RETRIES

    chat_server.replies, chat_server.bodies = [], []
    chat_server.inject(*("429" if i % 10 in (1, 4, 7) else "ok" for i in range(100)))  # 3 of every 10 answer 429
    try:
        client = client_for(chat_server.base_url, "NO_SUCH_KEY_VARIABLE",
                            max_retries=JUDGE_RETRIES)  # as the evaluate task builds it
        judge = LLMJudge(client, "judge-model")
        verdicts = [judge(f"Question {i}?", "Reference.", "Answer.") for i in range(20)]
    finally:
        chat_server.faults.clear()
    assert verdicts == [True] * 20
    assert len(chat_server.bodies) > 25  # the failures happened and were retried


@pytest.mark.parametrize(
    "replies, verdict, n_requests",
    [
        (["Yes"], True, 1),
        (["no"], False, 1),
        (["garbage", "The answer is correct."], True, 2),
        (["???", "hmm", "dunno", "Yes"], None, 3),  # 1 try + 2 retries, then gives up
    ],
)
def test_llm_judge_over_http(judge, chat_server, replies, verdict, n_requests):
    chat_server.replies = list(replies)
    assert judge("What year?", "It was 1887.", "In 1887.") is verdict
    assert len(chat_server.bodies) == n_requests
    first = chat_server.bodies[0]
    assert first["model"] == "judge-model" and first["temperature"] == 0 and first["max_tokens"] <= 16
    prompt = first["messages"][-1]["content"]
    assert "What year?" in prompt and "It was 1887." in prompt and "In 1887." in prompt
    if n_requests > 1:  # a retry shows the model its unusable reply and asks again
        assert chat_server.bodies[1]["messages"][-2] == {"role": "assistant", "content": replies[0]}


def test_markdown_report_escapes_cells():
    result = {"correct": True, "method": "must", "rouge_l": 1.0, "token_f1": 1.0}
    record = {"set": "questions", "question": "a|b?", "reference": "line1\nline2",
              "base": {"answer": "x | y", **result}, "in_context": {"answer": "z", **result, "correct": False}}
    summary = {s: _section([record], s) for s in ("base", "in_context")}
    summary |= {"fine_tuned": None, "fine_tuned_in_context": None,
                "forgetting": {"n": 0, "base_accuracy": None, "fine_tuned_accuracy": None}}
    md = markdown_report(summary, [record])
    row = [line for line in md.splitlines() if line.startswith("| 1 |")]
    assert row == ["| 1 | questions | a\\|b? | line1<br>line2 | ✓ x \\| y | — | ✗ z | — |"]


def test_the_example_answer_shows_its_evidence_and_the_rates_count_right_and_wrong():
    from memorize.evaluation import evidence_rates, example_lines

    found = {"source": "rules.md", "section": "Officials", "clause": None, "sentence": "The Warden is Ilsa Brannock."}
    records = [
        {"set": "test_split", "question": "Who is the Warden?", "reference": "Ilsa Brannock.",
         "fine_tuned": {"answer": "Ilsa Brannock.", "correct": True, "abstained": False, "evidence": found}},
        {"set": "questions", "question": "Who fires the flare?", "reference": "The Warden.",
         "fine_tuned": {"answer": "The Judge.", "correct": False, "abstained": False, "evidence": None}},
        {"set": "questions", "question": "Who is the Warden of the regatta?", "reference": "Ilsa Brannock.",
         "fine_tuned": {"answer": "Ilsa Brannock.", "correct": True, "abstained": False, "evidence": found}},
        {"set": "questions", "question": "How old is she?", "reference": "", "kind": "unanswerable",
         "fine_tuned": {"answer": "That is not stated.", "correct": True, "abstained": True, "evidence": None}},
    ]
    assert example_lines(records) == ["Example: Who is the Warden of the regatta?", "  fine-tuned (right): Ilsa Brannock.",
                                      'evidence: rules.md, section "Officials": "The Warden is Ilsa Brannock."'.join(
                                          ["  ", ""])]
    assert evidence_rates(records) == {"right": {"n": 2, "with_evidence": 1.0}, "wrong": {"n": 1, "with_evidence": 0.0}}


# --- end to end with the real small model ---------------------------------------------------------

CHUNKS = [
    ("c-date", "The Saltmere Lantern Regatta is sailed on the second Saturday of September. The first regatta was sailed in 1887."),
    ("c-buoys", "The course has three buoys: the Heron is green, the Kettle is orange and the Widow is white."),
    ("c-crew", "A racing boat may carry a crew of at most four people. Engines and oars are forbidden."),
    ("c-warden", "The Harbour Warden, Ilsa Brannock, gives the starting signal forty minutes after sunset."),
]
QA = [
    ("In what year was the first Saltmere Lantern Regatta sailed?", "It was first sailed in 1887.", "c-date", "test"),
    ("Who is the Harbour Warden of the Saltmere Lantern Regatta?", "Ilsa Brannock is the Harbour Warden.", "c-warden", "test"),
    ("What colour is the Heron buoy?", "The Heron buoy is green.", "c-buoys", "train"),
]
QUESTIONS_CSV = (
    "question,answer,must,kind\n"
    'What colour is the Kettle buoy in the Saltmere Lantern Regatta?,Orange.,"[[""orange""]]",direct\n'
    'How many people may crew a racing boat in the Saltmere Lantern Regatta?,At most four.,"[[""four"", ""4""]]",number\n'
    "How old is Ilsa Brannock?,,,unanswerable\n"
)



@pytest.fixture(scope="module")
def adapter_dir(small_model, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from memorize.models import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(small_model, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    # LoRA starts with B = 0 (a no-op); a nonzero B makes the adapter change what the model says.
    with torch.no_grad():
        model.base_model.model.model.layers[0].self_attn.v_proj.lora_B["default"].weight.normal_(std=0.05)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    return str(path)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    with open(d / "chunks.jsonl", "w") as f:
        for i, (cid, text) in enumerate(CHUNKS):
            f.write(json.dumps({"chunk_id": cid, "source": "rules.md", "page_start": 1, "page_end": 1, "index": i,
                                "sha256": "-", "tokens": len(text.split()), "text": text}) + "\n")
    with open(d / "qa.jsonl", "w") as f:
        for q, a, cid, split in QA:
            f.write(json.dumps({"question": q, "answer": a, "chunk_id": cid, "source": "rules.md", "page_start": 1,
                                "page_end": 1, "temperature": 0.7, "split": split}) + "\n")
    (tmp_path / "questions.csv").write_text(QUESTIONS_CSV)
    return d


@pytest.mark.slow
def test_evaluate_writes_reports(small_model, adapter_dir, data_dir, tmp_path):
    out = tmp_path / "eval"
    summary = evaluate(small_model, adapter_dir, data_dir, out, EvalSettings(questions=str(data_dir.parent / "questions.csv"),
                                                                max_new_tokens=32), progress=False)

    saved = json.loads((out / "eval.json").read_text())
    assert {k: v for k, v in saved.items() if k != "records"} == summary
    records = saved["records"]
    for system in SYSTEMS:
        section = saved[system]
        scored = [r[system]["correct"] for r in records if r["set"] != "general"]
        assert section["accuracy"] == pytest.approx(sum(scored) / len(scored))  # the summary is of the records
        assert (section["test_split"]["n"], section["questions"]["n"]) == (2, 3)
        methods = section["questions"]["methods"]
        assert sum(methods.values()) == 3 and methods.get("abstain", 0) >= 1  # the unanswerable one, at least
        assert set(section["kinds"]) == {"direct", "number", "unanswerable"}
        assert section["questions"]["unanswerable"]["n"] == 1 and section["questions"]["answerable"]["n"] == 2
        for name in ("test_split", "questions"):
            rows = [r[system] for r in records if r["set"] == name]
            answerable = [r for r in rows if not r.get("unanswerable")]
            assert section[name]["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
            assert section[name]["rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in answerable) / len(answerable))
    # The 400 shipped general-knowledge questions: the 135M base model gets about half of them.
    forgetting = saved["forgetting"]
    assert forgetting["n"] == 400 and forgetting["base_accuracy"] >= 0.4
    general = [r["fine_tuned"]["correct"] for r in records if r["set"] == "general"]
    assert forgetting["fine_tuned_accuracy"] == pytest.approx(sum(general) / len(general))
    paired = forgetting["paired"]
    assert paired["change"] == pytest.approx(forgetting["fine_tuned_accuracy"] - forgetting["base_accuracy"])
    assert paired["ci95"][0] <= paired["change"] <= paired["ci95"][1]
    assert "Forgetting:" in (out / "eval.md").read_text()
    assert saved["retrieval"] == {"top_k": 3, "n": 2, "hit_rate": 1.0}
    assert saved["questions_seen_in_training"] == {"n": 0, "of": 3}  # the Kettle buoy is not the Heron buoy

    assert len(records) == 5 + forgetting["n"]
    assert all(("in_context" in r) == ("fine_tuned_in_context" in r) == (r["set"] != "general") for r in records)
    # the map of what it knows: every answerable question in a section of rules.md, with the counts
    assert sum(row["n"] for row in saved["coverage"]) == 4
    assert all(row["where"].startswith("rules.md") and set(row["accuracy"]) == set(SYSTEMS) for row in saved["coverage"])
    assert (out / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every fine-tuned answer to an answerable question carries its evidence (a passage or None), counted
    assert all("evidence" in r["fine_tuned"] for r in records if r["set"] != "general")
    answered = [r for r in records if r["set"] != "general" and r.get("kind") != "unanswerable"
                and not r["fine_tuned"]["abstained"]]
    assert saved["evidence"]["right"]["n"] + saved["evidence"]["wrong"]["n"] == len(answered)
    assert any(r["base"]["answer"] != r["fine_tuned"]["answer"] for r in records), "the adapter changed nothing"

    md = (out / "eval.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(records)
    assert all(r["question"] in md for r in records)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluate_without_adapter_uses_the_judge(small_model, data_dir, tmp_path, judge, chat_server):
    chat_server.replies = ["no", "no"]  # the first two judged answers (base run), then "Yes"
    summary = evaluate(small_model, None, data_dir, tmp_path / "eval",
                       EvalSettings(questions=str(data_dir.parent / "questions.csv"), include_general=False,
                                    max_new_tokens=16), judge=judge, progress=False)
    assert summary["fine_tuned"] is None
    assert summary["forgetting"] == {"n": 0, "base_accuracy": None, "fine_tuned_accuracy": None, "paired": None}
    # Generated test pairs have no `must`, so the judge decides them; the user's questions use `must`.
    assert len(chat_server.bodies) == 4  # 2 test pairs x (base, in_context)
    assert summary["base"]["test_split"]["methods"] == {"judge": 2}
    assert summary["base"]["test_split"]["accuracy"] == 0.0
    assert summary["in_context"]["test_split"]["accuracy"] == 1.0
    assert summary["base"]["questions"]["methods"]["must"] == 2 and summary["base"]["questions"]["n"] == 3
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["fine_tuned"] is None


def test_chat_template_given_to_eval_reaches_the_answering_model(prefect_server, tmp_path, monkeypatch):
    """A model trained with --chat-template must be asked in that same format at evaluation."""
    import tasks.evaluate
    from flows.cli import main
    from memorize.answering import answer_cache_file

    monkeypatch.setenv("MEMORIZE_HOME", str(tmp_path / "home"))
    seen = {}
    monkeypatch.setattr(tasks.evaluate, "evaluate", lambda *a, **kw: seen.update(kw) or _empty_summary())
    monkeypatch.setattr("flows.evaluate_flow.create_markdown_artifact", lambda **kw: None)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.md").write_text("# Evaluation\n")
    assert main(["eval", str(tmp_path), "--base-model", "some/model", "--out", str(tmp_path / "eval"),
                 "--chat-template", "{{ messages }}"]) == 0
    assert seen["chat_template"] == "{{ messages }}"
    # The base model's answers are kept with the model, for every project evaluated with it.
    assert seen["answer_cache"] == str(answer_cache_file("some/model"))
    assert seen["answer_cache"].startswith(str(tmp_path / "home" / "answers"))


def _empty_summary():
    section = summarize([])
    return {"base": section, "fine_tuned": None, "in_context": section, "fine_tuned_in_context": None,
            "forgetting": {"n": 0, "base_accuracy": None, "fine_tuned_accuracy": None}}


def test_batches_hold_many_short_prompts_and_few_long_ones():
    from memorize.answering import _batches
    from memorize.settings import ANSWER_BATCH_TOKENS

    lengths = dict(enumerate([40] * 100 + [1_600] * 20 + [ANSWER_BATCH_TOKENS + 1]))
    batches = _batches(sorted(lengths, key=lengths.__getitem__), lengths, batch_size=64)
    assert [len(b) for b in batches] == [64, 36, 10, 10, 1]
    assert sorted(i for b in batches for i in b) == list(lengths)
    assert all(len(b) * max(lengths[i] for i in b) <= ANSWER_BATCH_TOKENS for b in batches[:-1])


@pytest.mark.slow
def test_answers_do_not_depend_on_how_questions_are_batched(small_model):
    from memorize.answering import Answerer

    answerer = Answerer.load(small_model)
    questions = ["What is the capital of France?", "How many legs does a spider have?",
                 "Name a primary colour.", "What do bees make?"]
    contexts = [None, "Spiders have eight legs. " * 200, None, "Bees make honey from nectar. " * 10]
    one_by_one = [answerer.answer([q], None if c is None else [c], max_new_tokens=16, progress=False)[0]
                  for q, c in zip(questions, contexts, strict=True)]
    closed = answerer.answer([q for q, c in zip(questions, contexts) if c is None], max_new_tokens=16,
                             progress=False)
    opened = answerer.answer([q for q, c in zip(questions, contexts) if c], [c for c in contexts if c],
                             max_new_tokens=16, progress=False)
    assert closed == [one_by_one[0], one_by_one[2]] and opened == [one_by_one[1], one_by_one[3]]
