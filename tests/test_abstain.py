"""'The documents do not say': abstention rows, unanswerable questions and how they are scored."""
import json
import re

import pytest

from memorize.abstain import abstains, abstention, abstention_pairs, candidates
from memorize.coverage import coverage, locate, sections
from memorize.evaluation import QuestionFileError, load_questions, summarize
from memorize.scoring import score

CONTEXT = "The rules of the Saltmere Lantern Regatta"
CHUNKS = [
    {"chunk_id": "rules.md#0", "source": "docs/rules.md", "page_start": 1, "page_end": 1,
     "text": "## Officials\nThe Harbour Warden, Ilsa Brannock, fires a blue flare from Gannet Quay.\n"
             "Ilsa Brannock is fifty-two years old.\nThe Kettle is painted orange and was built in 1887."},
    {"chunk_id": "rules.md#1", "source": "docs/rules.md", "page_start": 1, "page_end": 1,
     "text": "## Penalties\nA boat that touches the Kettle sails one circle around it.\n"
             "The Race Judge, Corwin Ashgrove, watches the finish from Gannet Quay."},
    {"chunk_id": "rules.md#2", "source": "docs/rules.md", "page_start": 1, "page_end": 1,
     "text": "## Entry\nThe entry fee is twelve shillings per boat.\n## Prizes\nThe winning crew receives the Wrenfield "
             "Lamp, a brass lantern."},
]


def test_the_abstention_sentence_names_the_documents_and_is_recognised():
    sentence = abstention(CONTEXT)
    assert sentence == "That is not stated in the rules of the Saltmere Lantern Regatta."
    assert abstains(sentence)
    assert abstains("The charter does not say how old she is.") and abstains("I don't know.")
    assert not abstains("A lantern that flashes is not allowed.")
    assert not abstains("The entry fee is twelve shillings.")


def test_abstention_questions_are_never_answerable_from_a_chunk():
    found = candidates(CHUNKS, CONTEXT)
    questions = [c["question"] for c in found]
    assert questions and all(CONTEXT[4:] in q for q in questions)
    # the age of Ilsa Brannock is given, the Kettle's colour and year too: never asked as unanswerable
    assert not [q for q in questions if "Ilsa Brannock" in q and ("old" in q or "born" in q)]
    assert not [q for q in questions if "Kettle" in q and ("colour" in q or "year" in q)]
    # a role's holder may be named elsewhere with an age: a role is asked only what no rule book gives
    assert not [q for q in questions if "Harbour Warden" in q and re.search(r"old|born|live|married|built", q)]
    # what is not given is asked about, entity names intact
    assert any("Corwin Ashgrove" in q and "how old" in q.lower() for q in questions)
    assert any("telephone number of the Kettle" in q for q in questions)
    # every question names one of the documents' own entities
    names = ("Harbour Warden", "Ilsa Brannock", "Gannet Quay", "Kettle", "Race Judge", "Corwin Ashgrove", "Wrenfield Lamp")
    assert all(any(n in q for n in names) for q in questions)


def test_abstention_pairs_take_their_share():
    pairs = abstention_pairs(CHUNKS, CONTEXT, share=0.2, answerable=16)
    assert len(pairs) == 4  # 4 of 20 pairs
    assert {p["answer"] for p in pairs} == {abstention(CONTEXT)} and {p["kind"] for p in pairs} == {"abstain"}
    assert abstention_pairs(CHUNKS, CONTEXT, share=0, answerable=16) == []
    assert len(abstention_pairs(CHUNKS, CONTEXT, share=0.9, answerable=1000)) == len(candidates(CHUNKS, CONTEXT))
    with pytest.raises(ValueError, match="abstain share"):
        abstention_pairs(CHUNKS, CONTEXT, share=1.0, answerable=16)


def test_unanswerable_scoring_and_selective_accuracy():
    unanswerable = {"question": "How old is Corwin Ashgrove?", "answer": "", "kind": "unanswerable"}
    answerable = {"question": "What colour is the Kettle?", "answer": "It is orange.", "must": [["orange"]]}
    right_abstain = score(unanswerable, abstention(CONTEXT))
    invented = score(unanswerable, "Corwin Ashgrove is 61 years old.")
    assert right_abstain["correct"] is True and right_abstain["method"] == "abstain"
    assert invented["correct"] is False
    wrong_abstain = score(answerable, "That is not stated in the rules.")
    assert wrong_abstain["correct"] is False and wrong_abstain["abstained"] is True
    right = score(answerable, "The Kettle is orange.")
    summary = summarize([right_abstain, invented, wrong_abstain, right])
    assert summary["accuracy"] == 0.5
    assert summary["unanswerable"] == {"n": 2, "abstained": 0.5}
    assert summary["answerable"] == {"n": 2, "accuracy": 0.5, "abstained": 0.5}
    # answered 2 of 4 (the invented answer and the right one), right in 1 of them
    assert summary["selective"] == {"answered": 0.5, "accuracy": 0.5}


def test_question_files_take_unanswerable_questions(tmp_path):
    good = tmp_path / "q.jsonl"
    good.write_text(json.dumps({"question": "How old is Corwin Ashgrove?", "answer": "", "kind": "unanswerable"}) + "\n"
                    + json.dumps({"question": "Who fires the flare?", "answer": "Ilsa Brannock.", "kind": "direct"}) + "\n")
    rows = load_questions(good)
    assert rows[0] == {"kind": "unanswerable", "question": "How old is Corwin Ashgrove?", "answer": ""}
    missing_kind = tmp_path / "m.jsonl"
    missing_kind.write_text(json.dumps({"question": "How old is he?", "answer": ""}) + "\n")
    with pytest.raises(QuestionFileError, match=r"m.jsonl, line 1: field 'answer' is empty.*\"kind\": \"unanswerable\""):
        load_questions(missing_kind)
    contradicting = tmp_path / "c.csv"
    contradicting.write_text('question,answer,must,kind\nHow old is he?,,"[[""52""]]",unanswerable\n')
    with pytest.raises(QuestionFileError, match=r"c.csv, row 2: a question of kind 'unanswerable' has an empty"):
        load_questions(contradicting)


def test_coverage_places_each_question_in_its_section():
    assert [(s["source"], s["label"]) for s in sections(CHUNKS)] == [
        ("docs/rules.md", label) for label in ("Officials", "Penalties", "Entry", "Prizes")]
    records = [
        {"question": "Who fires the blue flare?", "reference": "The Harbour Warden, Ilsa Brannock.",
         "base": {"correct": False}, "fine_tuned": {"correct": True}},
        {"question": "What colour is the Kettle?", "reference": "Orange.",
         "base": {"correct": False}, "fine_tuned": {"correct": False}},
        {"question": "What happens to a boat that touches a buoy?", "reference": "It sails one circle around it.",
         "base": {"correct": True}, "fine_tuned": {"correct": True}},
        {"question": "How old is Corwin Ashgrove?", "reference": "", "kind": "unanswerable",
         "base": {"correct": False}, "fine_tuned": {"correct": True}},
    ]
    locate(records, CHUNKS)
    assert [r.get("where") for r in records] == ["rules.md — Officials", "rules.md — Officials", "rules.md — Penalties",
                                                 None]
    assert coverage(records, ["base", "fine_tuned"]) == [
        {"where": "rules.md — Officials", "n": 2, "accuracy": {"base": 0.0, "fine_tuned": 0.5}},
        {"where": "rules.md — Penalties", "n": 1, "accuracy": {"base": 1.0, "fine_tuned": 1.0}},
    ]
