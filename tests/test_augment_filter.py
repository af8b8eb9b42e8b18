"""Teacher-free augmentation and the filters for generated pairs."""
from collections import Counter

import pytest

from memorize.augment import augment_chunks
from memorize.filtering import drop_reason, filter_pairs, seen_in_training
from memorize.spans import find_spans

CONTEXT = "The rules of the Saltmere Lantern Regatta"
CHUNK = {
    "chunk_id": "rules-0000", "source": "rules.md",
    "text": "## Date and Course\n"
            "The race is sailed on the second Saturday of September. The course is a triangle of 4.2 nautical miles.\n"
            "The second buoy, the Kettle, is painted orange.\n"
            "## Officials\n"
            "The Harbour Warden is Ilsa Brannock. The entry fee is twelve shillings per boat, and all fees go to the "
            "upkeep of the three buoys.",
}


def _spans(sentence):
    return [(s.kind, s.text) for s in find_spans(sentence, CONTEXT)]


def test_spans_find_numbers_dates_colours_and_names():
    assert _spans("The race is sailed on the second Saturday of September.") == [("date", "the second Saturday of September")]
    assert _spans("The entry fee is twelve shillings per boat.") == [("number", "twelve shillings")]
    assert _spans("The Kettle is painted orange.") == [("name", "Kettle"), ("colour", "orange")]
    assert _spans("The first regatta was sailed in 1887 by Tobiah Wrenfield.") == [("year", "1887"), ("name", "Tobiah Wrenfield")]
    # The document's own subject is not a fact about it.
    assert ("name", "Saltmere Lantern Regatta") not in _spans("The Saltmere Lantern Regatta is a night race.")


def test_every_kind_asks_about_the_chunk_with_the_documents_name():
    pairs = augment_chunks([CHUNK], CONTEXT)
    by_kind = Counter(p["kind"] for p in pairs)
    assert set(by_kind) == {"passage", "span", "reverse", "cloze"}  # prose: the shapes' kinds have nothing here
    assert all("the rules of the Saltmere Lantern Regatta" in p["question"] for p in pairs)
    sentences = {"The Harbour Warden is Ilsa Brannock.", "The second buoy, the Kettle, is painted orange."}
    answers = {p["answer"] for p in pairs}
    assert sentences <= answers  # the document's own sentences are the answers
    questions = {p["kind"]: [] for p in pairs}
    for p in pairs:
        questions[p["kind"]].append(p["question"])
    # reversal: the name asks for the fact, with the name intact
    assert any("Ilsa Brannock" in q for q in questions["reverse"])
    # the span question keeps the sentence and asks for the span; the plain form for "X is Y"
    assert any("painted what colour" in q for q in questions["span"])
    assert any(q.startswith("Who is the Harbour Warden") for q in questions["span"])
    assert any('"The Harbour Warden is ____."' in q for q in questions["cloze"])
    # passages carry their section title, which carries over from the heading above
    assert any('"Officials"' in q for q in questions["passage"])
    assert all(p["chunk_id"] == "rules-0000" for p in pairs)


def test_an_appositive_title_and_name_are_asked_both_ways():
    chunk = {"chunk_id": "c", "source": "rules.md",
             "text": "The Race Judge, Corwin Ashgrove, watches the finish from the barge Patience. "
                     "The second buoy, the Kettle, is painted orange."}
    pairs = {(p["kind"], p["question"], p["answer"]) for p in augment_chunks([chunk], CONTEXT)}
    plain = {(k, a) for k, q, a in pairs if a in ("The Race Judge is Corwin Ashgrove.", "Corwin Ashgrove is the Race Judge.")}
    assert plain == {("span", "The Race Judge is Corwin Ashgrove."), ("reverse", "Corwin Ashgrove is the Race Judge.")}
    assert any(q.startswith("Who is the Race Judge, ") for k, q, a in pairs if k == "span")
    assert not any(a.startswith("The second buoy is") for k, q, a in pairs)  # a lower-case noun is no title


def test_kinds_can_be_chosen_and_overlaps_are_not_repeated():
    pairs = augment_chunks([CHUNK, {**CHUNK, "chunk_id": "rules-0001"}], CONTEXT, kinds=["cloze"])
    assert {p["kind"] for p in pairs} == {"cloze"}
    assert all(p["chunk_id"] == "rules-0000" for p in pairs)  # the repeated chunk adds nothing
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_chunks([CHUNK], CONTEXT, kinds=["paraphrase"])


def test_drop_reasons():
    chunk = CHUNK["text"]
    assert drop_reason("Who is the Harbour Warden?", "Ilsa Brannock is the Harbour Warden.", chunk) is None
    assert drop_reason("Is the Kettle buoy painted orange?", "The Kettle buoy is painted orange.", chunk) == "answer_in_question"
    assert drop_reason("Who is the Harbour Warden?", "Captain Morgan Flint of the navy.", chunk) == "unsupported"
    # A small generator rewriting the chunk as alternating lines: "pairs" that ask nothing.
    assert drop_reason("## Date and Course", "The race is sailed on the second Saturday of September.", chunk) == "not_a_question"
    assert drop_reason("港务长是谁？", "港务长是 Ilsa Brannock。", "港务长是 Ilsa Brannock。") is None  # a full-width question mark
    # Questions that name nothing of the chunk: copied from the prompt, or too vague to stand alone.
    assert drop_reason("What is the penalty for a late start?", "A penalty of 10%.", chunk) == "off_topic"
    assert drop_reason("What does the rule say?", "The Harbour Warden is Ilsa Brannock.", chunk) == "off_topic"
    # A generator stuck in a loop, every word from the chunk (seen from the embedded model on the charter).
    looped = "The Harbour Warden is Ilsa Brannock, and the Harbour Warden is Ilsa Brannock, and the Harbour Warden is"
    assert drop_reason("Who is the Harbour Warden?", looped, chunk) == "repetitive"
    assert drop_reason("Who is the Harbour Warden?", "The Harbour Warden is Ilsa Brannock; the Harbour Warden "
                       "is Ilsa Brannock.", chunk) is None  # said twice is not a loop


def test_filter_pairs_counts_each_reason_and_keeps_order():
    pairs = [
        {"question": "Who is the Harbour Warden?", "answer": "Ilsa Brannock.", "chunk_id": "c"},
        {"question": "Who is the harbour warden ?", "answer": "Ilsa Brannock", "chunk_id": "c"},  # near duplicate
        {"question": "How long is lap 1?", "answer": "Lap 1 is 4.2 miles.", "chunk_id": "c"},
        {"question": "How long is lap 2?", "answer": "Lap 2 is 4.2 miles.", "chunk_id": "c"},  # other numbers: kept
        {"question": "What colour is the Kettle?", "answer": "Orange.", "chunk_id": "c"},
        {"question": "What colour is the Kettle?", "answer": "The Kettle.", "chunk_id": "c"},
        {"question": "How long is the course?", "answer": "Nineteen leagues of open ocean.", "chunk_id": "c"},
    ]
    kept, dropped = filter_pairs(pairs, {"c": CHUNK["text"] + " Each lap is 4.2 nautical miles."})
    assert [p["answer"] for p in kept] == ["Ilsa Brannock.", "Lap 1 is 4.2 miles.", "Lap 2 is 4.2 miles.", "Orange."]
    assert dropped == Counter(duplicate=1, answer_in_question=1, unsupported=1)


def test_replay_plan_makes_up_the_asked_share_of_turns():
    from memorize.replay import plan_replay, read_prompts

    assert len(read_prompts()) >= 100  # the shipped list
    turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    train = [turn * 3 for _ in range(30)]  # 30 rows of 3 turns: 90 assistant turns
    prompts = [f"p{i}" for i in range(7)]
    rows = plan_replay(prompts, train, 0.1, seed=1)
    picked = [p for row in rows for p in row]
    assert len(picked) == 10  # 10 / (90 + 10) = 10 %
    assert all(len(row) == 3 for row in rows[:-1])  # grouped like the training rows
    assert set(picked) == set(prompts)  # cycling through every prompt before repeating
    assert plan_replay(prompts, train, 0.0) == []
    with pytest.raises(ValueError, match="replay_ratio"):
        plan_replay(prompts, train, 1.0)


def test_questions_seen_in_training_are_found_despite_case_and_punctuation():
    training = ["What colour is the wax on Moonwell bottles?", "Who is the Treasurer?"]
    asked = ["what colour is the wax on moonwell bottles", "Which colour of wax seals the bottles leaving the cellar?",
             "Who is the treasurer of the Cooperative, according to the charter?"]
    assert seen_in_training(asked, training) == [True, False, False]
    assert seen_in_training(asked, []) == [False, False, False] and seen_in_training([], training) == []
