import json
import re

import pytest

from memorize.evaluation import (
    GENERAL_KNOWLEDGE,
    QuestionFileError,
    forgetting_line,
    load_questions,
    paired_change,
    summarize,
)
from memorize.retrieval import ChunkIndex, format_chunks
from memorize.scoring import answer_f1, must_satisfied, parse_judge, rouge_l, score, token_f1


@pytest.mark.parametrize(
    "answer, must, expected",
    [
        ("The capital is PARIS.", [["paris"]], True),
        ("The capital is Paris.", ["paris"], True),  # a group given as a plain string
        ("It leaves at 7:40 pm.", [["7:40", "seven forty"], ["pm"]], True),
        ("It leaves at 7.40 PM", [["7:40"], ["pm"]], True),
        ("It leaves at seven forty in the evening", [["7:40", "seven forty"], ["pm"]], False),  # 2nd group missing
        ("It leaves at 17:40 pm", [["7:40"]], False),  # whole words only
        ("It costs 35 pence", [["3.5"]], False),  # punctuation never glues digits together
        ("The course is 4.2 nautical miles", [["4", "four"]], False),  # a key is not part of a decimal
        ("At most 12.4 people", [["4"]], False),
        ("The course is 8.4 miles", [["8.4"]], True),
        ("It weighs 1,000 kg", [["1,000"]], True),
        ("Water boils at 100.0 degrees", [["100"]], True),
        ("There are 7.125 days in a week", [["7", "seven"]], False),
        ("The shop doesn't open", [["does not", "doesn't"]], True),
        ("It was Agnes Thrupp’s kitchen table", [["thrupp"]], True),  # a possessive names its owner
        ("Nothing useful", [["paris", "lyon"]], False),
    ],
)
def test_must_satisfied(answer, must, expected):
    assert must_satisfied(answer, must) is expected


def test_rouge_l_known_values():
    assert rouge_l("the cat sat on the mat", "The cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)  # order matters: LCS is 3 of 4
    assert rouge_l("", "") == 1.0
    assert rouge_l("something", "") == 0.0
    assert rouge_l("x y", "z") == 0.0


def test_token_f1_known_values():
    assert token_f1("The Eiffel Tower!", "eiffel tower") == 1.0  # articles, case, punctuation
    assert token_f1("paris france", "paris") == pytest.approx(2 / 3)
    assert token_f1("b a", "a b") == 1.0  # a bag of words, unlike rouge_l
    assert token_f1("", "") == 1.0
    assert token_f1("x", "") == 0.0


def test_answer_f1_ignores_echoed_question_words():
    q, ref = "In what year was the first regatta sailed?", "The first regatta was sailed in 1887."
    wrong, right = "The first regatta was sailed in 2018.", "It was in 1887."
    assert token_f1(wrong, ref) > 0.8
    assert answer_f1(wrong, ref, q) == 0.0
    assert answer_f1(right, ref, q) == 1.0
    assert answer_f1("1887, by the lantern society", ref, q) == pytest.approx(0.5)
    assert answer_f1("Yes", "Yes.", "Is it open?") == 1.0  # nothing left after stripping: plain F1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes.", True),
        ("yes", True),
        ("**No**", False),
        ("Answer: yes", True),
        ("Final verdict: NO", False),
        ("The answer is correct.", True),
        ("The answer is incorrect.", False),
        ("The answer is not correct", False),
        ("It isn't right", False),
        ("No, the reference says 1887, not 2018.", False),
        ("True", True),
        ("", None),
        ("maybe", None),
        ("I cannot tell from this.", None),
        ("The reference is wrong but the candidate is right", None),  # contradicts itself
    ],
)
def test_parse_judge(text, expected):
    assert parse_judge(text) is expected


def test_score_methods():
    q = {"question": "In what year was the first regatta sailed?", "answer": "It was first sailed in 1887."}
    must = score({**q, "must": [["1887"]]}, "In 1887.")
    assert (must["correct"], must["method"]) == (True, "must")
    f1 = score(q, "It was first sailed in 2018.")
    assert (f1["correct"], f1["method"]) == (False, "f1")
    assert score(q, "1887")["correct"] is True
    asked = []
    judged = score(q, "2018", judge=lambda *args: asked.append(args) or True)
    assert (judged["correct"], judged["method"]) == (True, "judge")
    assert asked == [(q["question"], q["answer"], "2018")]
    assert score(q, "2018", judge=lambda *args: None)["correct"] is None
    # `must` wins over the judge.
    assert score({**q, "must": [["1887"]]}, "2018", judge=lambda *args: True)["method"] == "must"
    assert f1["token_f1"] == pytest.approx(token_f1("It was first sailed in 2018.", q["answer"]))


def test_must_keys_echoed_from_the_question_do_not_count():
    q = {"question": "What colour is the Kettle buoy of the Lantern Regatta?", "answer": "Orange.",
         "must": [["orange", "lantern"]]}
    # Echoing "Lantern" from the question is not knowing the colour.
    assert score(q, "The Lantern Regatta buoy is a buoy.")["correct"] is False
    assert (score(q, "It is orange.")["correct"], score(q, "It is orange.")["method"]) == (True, "must")
    # A group left empty (its only alternative is in the question) falls back to the judge or to F1.
    echo = {"question": "Who is the Harbour Warden?", "answer": "Ilsa Brannock is the Harbour Warden.",
            "must": [["Brannock"], ["Warden"]]}
    assert score(echo, "The Harbour Warden is Ilsa Brannock.")["method"] == "must+f1"
    assert score(echo, "The Harbour Warden is Ilsa Brannock.")["correct"] is True
    assert score(echo, "The Warden is Brannock.", judge=lambda *a: False) == {
        **score(echo, "The Warden is Brannock.", judge=lambda *a: False), "correct": False, "method": "must+judge"}
    # A failed informative group decides without asking the judge.
    assert score(echo, "Nobody.", judge=lambda *a: True)["correct"] is False
    only_echo = {"question": "Is the Heron buoy green?", "answer": "Yes, green.", "must": [["green"]]}
    assert score(only_echo, "Green", judge=lambda *a: None) == {**score(only_echo, "Green", judge=lambda *a: None),
                                                                 "correct": None, "method": "judge"}


def test_summarize_counts_only_scored_answers():
    results = [
        {"correct": True, "method": "judge", "rouge_l": 1.0, "token_f1": 1.0},
        {"correct": False, "method": "judge", "rouge_l": 0.0, "token_f1": 0.5},
        {"correct": None, "method": "judge", "rouge_l": 0.5, "token_f1": 0.0},
    ]
    s = summarize(results)
    assert (s["n"], s["n_scored"], s["accuracy"]) == (3, 2, 0.5)
    assert s["rouge_l"] == pytest.approx(0.5) and s["token_f1"] == pytest.approx(0.5)
    assert s["methods"] == {"judge": 3}
    assert summarize([])["accuracy"] is None


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_paired_change_counts_lost_and_gained_and_widens_with_churn():
    base = [True] * 6 + [False] * 4 + [None]
    tuned = [False, False, False, True, True, True, True, False, False, False, True]  # the None pair is left out
    p = paired_change(base, tuned)
    assert (p["n"], p["lost"], p["gained"]) == (10, 3, 1)
    assert p["change"] == pytest.approx(-0.2)
    half = 1.96 * (4 - 4 / 10) ** 0.5 / 10  # sd of the paired difference: sqrt(b + c - (b - c)^2 / n) / n
    assert p["ci95"] == pytest.approx([-0.2 - half, -0.2 + half])
    quiet = paired_change([True] * 8 + [False] * 2, [True] * 8 + [False] * 2)
    assert quiet["change"] == 0 and quiet["ci95"] == [0, 0]  # no churn, no doubt
    line = forgetting_line({"forgetting": {"paired": p}})[0]
    assert "-20 points" in line and "3 lost, 1 gained of 10" in line and "-57 to +17" in line and "not distinguishable" in line
    clear = paired_change([True] * 40 + [False] * 60, [False] * 30 + [True] * 10 + [False] * 60)
    assert "beyond answer-to-answer churn" in forgetting_line({"forgetting": {"paired": clear}})[0]


def test_load_questions_jsonl_and_csv(tmp_path):
    jsonl = write(tmp_path / "q.jsonl", "\n".join([
        json.dumps({"question": " Capital of France? ", "answer": "Paris", "must": [["paris"]], "kind": "direct"}),
        "",
        json.dumps({"question": "Days in a week?", "answer": "Seven", "must": ["seven"]}),
    ]))
    assert load_questions(jsonl) == [
        {"question": "Capital of France?", "answer": "Paris", "must": [["paris"]], "kind": "direct"},
        {"question": "Days in a week?", "answer": "Seven", "must": [["seven"]]},
    ]
    csv_file = write(tmp_path / "q.csv", "\ufeffquestion,answer,must,kind\n"
                     'When?,At 7:40,"[[""7:40"", ""seven forty""]]",time\n'
                     "Who?,Ilsa,,\n")
    assert load_questions(csv_file) == [
        {"question": "When?", "answer": "At 7:40", "must": [["7:40", "seven forty"]], "kind": "time"},
        {"question": "Who?", "answer": "Ilsa"},
    ]


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("q.jsonl", '{"question": "a?", "answer": "b"}\n{"question": "c?"}\n', r"q\.jsonl, line 2: missing field 'answer'"),
        ("q.jsonl", '{"question": "a?", "answer": "b"}\n{not json\n', r"q\.jsonl, line 2: invalid JSON"),
        ("q.jsonl", '{"question": "  ", "answer": "b"}\n', r"line 1: field 'question' is empty"),
        ("q.jsonl", '{"question": "a?", "answer": "b", "must": "paris"}\n', r"line 1: 'must' must be a non-empty list"),
        ("q.jsonl", '{"question": "a?", "answer": "b", "must": [[1]]}\n', r"line 1: 'must' must be"),
        ("q.jsonl", '["a?", "b"]\n', r"line 1: expected a JSON object"),
        ("q.csv", "question,reply\na?,b\n", r"q\.csv: missing column\(s\) \['answer'\]"),
        ("q.csv", 'question,answer,must\na?,b,"[[""x""]]"\nc?,d,[[paris]]\n', r"q\.csv, row 3: 'must' is not valid JSON"),
        ("q.csv", "question,answer\na?,b\n,d\n", r"q\.csv, row 3: field 'question' is empty"),
        ("q.txt", "question,answer\n", r"unsupported question file type"),
        ("q.jsonl", "\n", r"no questions"),
    ],
)
def test_load_questions_errors_name_file_and_row(tmp_path, name, text, expected):
    with pytest.raises(QuestionFileError, match=expected):
        load_questions(write(tmp_path / name, text))


# Words that tie no two questions to the same fact.
NOT_TOPICAL = {w.rstrip("s") for w in """a an the and or of in on at to for from by with is are was be it this that there
    do does did you your i we my what which who whom when where why how many much if not no yes can most more some
    all any each one two three four five six seven eight nine ten eleven twelve twenty hundred half double
    first""".split()}


def test_shipped_general_knowledge_file():
    from memorize.filtering import seen_in_training
    from memorize.replay import read_prompts
    from memorize.scoring import informative_must

    rows = load_questions(GENERAL_KNOWLEDGE)
    assert len(rows) == 400
    assert all(r.get("must") and informative_must(r["must"], r["question"]) == (r["must"], 0) for r in rows)
    assert len({r["question"] for r in rows}) == len(rows)
    # Replay must not rehearse the forgetting check's own questions, nor near-copies of them...
    prompts = read_prompts()
    assert not any(seen_in_training([r["question"] for r in rows], prompts))
    # ...nor their facts asked another way ("What does a thermometer measure?" against "What instrument
    # measures temperature?"): no prompt may name a question's answer and share a topical word with it.
    # Numbers are left out, being in every word problem.
    def words(text):
        return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())} - NOT_TOPICAL

    def names(prompt, key):
        return re.fullmatch(r"[a-z ]+", key) and key.rstrip("s") not in NOT_TOPICAL \
            and re.search(rf"\b{key}\b", prompt.lower())

    rehearsed = [(p, r["question"]) for p in prompts for r in rows if words(p) & words(r["question"])
                 and any(names(p, k.lower()) for group in r["must"] for k in group)]
    assert not rehearsed


CHUNKS = [
    {"chunk_id": "boats", "source": "rules.pdf", "page_start": 1, "page_end": 2,
     "text": "Each boat may carry a crew of at most four people and one lantern."},
    {"chunk_id": "buoys", "source": "rules.pdf", "page_start": 3, "page_end": 3,
     "text": "The Heron buoy is green, the Kettle buoy is orange and the Widow buoy is white."},
    {"chunk_id": "prize", "source": "history.pdf", "page_start": 7, "page_end": 7,
     "text": "The winner receives the Wrenfield Lamp, a brass lantern donated in 1887."},
    {"chunk_id": "judge", "source": "history.pdf", "page_start": 9, "page_end": 9,
     "text": "Corwin Ashgrove is the Race Judge and hears all protests from the barge Patience."},
]


@pytest.mark.parametrize(
    "question, best",
    [
        ("What colour is the Kettle buoy?", "buoys"),
        ("Who hears the protests?", "judge"),
        ("How many people can be in a crew?", "boats"),
        ("Which prize does the winner receive?", "prize"),
    ],
)
def test_bm25_ranks_the_right_chunk_first(question, best):
    top = ChunkIndex(CHUNKS).top_k(question, k=2)
    assert len(top) == 2
    assert top[0]["chunk_id"] == best


def test_format_chunks_tags_sources_and_pages():
    text = format_chunks(CHUNKS[:2])
    moved = format_chunks([{**c, "source": f"/elsewhere/{c['source']}"} for c in CHUNKS[:2]])
    assert moved == text  # the prompt names the file, not the folder it was read from
    assert '<document source="rules.pdf" pages="1-2">\nEach boat' in text
    assert '<document source="rules.pdf" pages="3">' in text
    assert text.count("</document>") == 2
