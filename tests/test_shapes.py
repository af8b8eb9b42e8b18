"""Teacher-free pairs on the shapes documents take: numbered clauses, lists, tables and steps.

Structure is not content: no answer opens with a clause number or list marker, and no question asks for a
clause number as if it were a fact."""
import re
from collections import Counter

from memorize.augment import augment_chunks
from memorize.chunking import chunk_document
from memorize.extract import extract

CONTEXT = "The rules of the Bramble Croquet League"
MARKER = re.compile(r"^\s*(?:\d+(?:\.\d+)*[.)]?|[-*+•]|\([a-z]\))\s")


def _pairs(tmp_path, text: str, name: str = "doc.md") -> list[dict]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return augment_chunks([c.to_dict() for c in chunk_document(extract(path))], CONTEXT)


def _natural(pairs: list[dict]) -> None:
    assert pairs
    assert not [p["answer"] for p in pairs if MARKER.match(p["answer"])]
    # a clause or step number is never the fact asked for, nor carried inside a span question
    assert not [p["question"] for p in pairs if p["kind"] in ("span", "cloze")
                and re.search(r"\b\d+\.\d+ [A-Z]|what number [A-Z]", p["question"])]


def test_numbered_clauses(tmp_path):
    pairs = _pairs(tmp_path, "## 1. Eligibility\n\n"
                   "1.1 The league is open to players aged sixteen or over.\n"
                   "1.2 The annual fee is 30 euros, payable to the Treasurer, Mara Quell.\n"
                   "1.3 A player may join one team only, as set out in rule 4.2.\n")
    _natural(pairs)
    clause = [p for p in pairs if p["kind"] == "clause"]
    assert len(clause) == 3
    assert {p["clause"] for p in pairs} == {"1.1", "1.2", "1.3"}
    assert {p["heading"] for p in pairs} == {"Eligibility"}  # the heading's own number is structure too
    q = {p["question"]: p["answer"] for p in clause}
    assert any(k.startswith("What") and "rule 1.2 of the rules of the Bramble Croquet League" in k for k in q)
    assert "The annual fee is 30 euros, payable to the Treasurer, Mara Quell." in q.values()
    # "rule 4.2" is a reference, not a number to ask about
    assert not [p for p in pairs if p["kind"] == "span" and "rule what" in p["question"]]
    spans = [p["question"] for p in pairs if p["kind"] == "span"]
    assert any("how many euros" in s for s in spans) and any("aged what number" in s for s in spans)


def test_a_clause_leading_into_a_list_is_one_fact(tmp_path):
    pairs = _pairs(tmp_path, "4.3 A player is sent off when:\n(a) they strike a ball twice;\n(b) they argue with "
                   "the referee.\n")
    _natural(pairs)
    clause = next(p for p in pairs if p["kind"] == "clause")
    assert clause["answer"] == "A player is sent off when: they strike a ball twice; they argue with the referee."
    assert all(p.get("clause") == "4.3" for p in pairs)


def test_a_list_keeps_its_lead_in(tmp_path):
    pairs = _pairs(tmp_path, "## Penalties\n\nThe following penalties apply:\n\n- Late arrival: the team loses 2 points.\n"
                   "- Wrong kit: a fine of 5 euros.\n- Striking the umpire's hoop: the turn ends.\n")
    _natural(pairs)
    lists = [p for p in pairs if p["kind"] == "list"]
    assert len(lists) == 4  # the whole list, then each "term: description" item
    whole = next(p for p in lists if "listed under" in p["question"] or "what follows" in p["question"])
    assert whole["answer"].startswith("The following penalties apply: late arrival: the team loses 2 points; ")
    assert any(p["question"].endswith("late arrival?") and p["answer"] ==
               "The following penalties apply: late arrival: the team loses 2 points." for p in lists)
    # a span question reads from the item, and its answer carries the lead-in
    assert any("loses how many points" in p["question"] and p["answer"].startswith("The following penalties")
               for p in pairs if p["kind"] == "span")


def test_a_table_gives_one_fact_per_cell_with_its_headers(tmp_path):
    pairs = _pairs(tmp_path, "## Hire prices\n\n| Boat | Half day | Full day |\n|---|---|---|\n"
                   "| Laser | 40 euros | 65 euros |\n| Wayfarer | 55 euros | 90 euros |\n| Topper | 25 euros | 40 euros |\n")
    _natural(pairs)
    table = [p for p in pairs if p["kind"] == "table"]
    cells = [p for p in table if p["question"].startswith("In the") and "what is the" in p["question"]
             and "for each" not in p["question"]]
    assert len(cells) == 6  # 3 rows x 2 columns
    assert {"question": 'In the "Hire prices" table of the rules of the Bramble Croquet League, what is the half day '
            "for Laser?", "answer": "The half day for Laser is 40 euros."} in [
        {"question": p["question"], "answer": p["answer"]} for p in cells]
    rows = [p for p in table if "give for" in p["question"]]
    assert [p["answer"] for p in rows][0] == "Laser: half day 40 euros; full day 65 euros."
    columns = {p["question"]: p["answer"] for p in table if "for each boat" in p["question"]}
    assert len(columns) == 2 and columns['In the "Hire prices" table of the rules of the Bramble Croquet League, what is '
                                         'the half day for each boat?'] == \
        "For each boat, the half day is: Laser, 40 euros; Wayfarer, 55 euros; Topper, 25 euros."
    # a value asked back: only where it names one row ("40 euros" stands in two rows' cells, once per column)
    back = [p["question"] for p in table if "which boat has" in p["question"]]
    assert len(back) == 6 and any("which boat has a half day of 55 euros" in q for q in back)
    assert not [p for p in pairs if p["kind"] in ("span", "cloze") and "|" in p["question"]]


def test_a_column_header_keeps_a_name_of_the_prose(tmp_path):
    pairs = _pairs(tmp_path, "## Fares\n\nBoats sail to Skellin daily.\n\n| Ticket | Skellin single | Half day |\n"
                   "|---|---|---|\n| Adult | 9.50 | 11.00 |\n")
    questions = {p["question"] for p in pairs if p["kind"] == "table"}
    assert 'In the "Fares" table of the rules of the Bramble Croquet League, what is the Skellin single for Adult?' \
        in questions
    assert 'In the "Fares" table of the rules of the Bramble Croquet League, what is the half day for Adult?' in questions


def test_a_table_split_across_chunks_keeps_its_header(tmp_path):
    rows = "".join(f"| Item {i} | {i} euros |\n" for i in range(120))
    path = tmp_path / "prices.md"
    path.write_text("## Prices\n\n| Item | Price |\n|---|---|\n" + rows, encoding="utf-8")
    chunks = [c.to_dict() for c in chunk_document(extract(path), max_tokens=200, overlap=20)]
    assert len(chunks) > 2
    pairs = augment_chunks(chunks, CONTEXT)
    cells = {p["question"] for p in pairs if "what is the price for Item" in p["question"]}
    assert len(cells) == 120  # every row, with the header read in the first chunk


def test_numbered_steps_in_order(tmp_path):
    pairs = _pairs(tmp_path, "## Starting the mill\n\n1. Open the sluice gate by turning the red wheel three times.\n"
                   "2. Wait 10 minutes for the wheel pit to fill.\n3. Release the brake lever.\n\nThen tell the miller.\n")
    _natural(pairs)
    steps = {p["question"]: p["answer"] for p in pairs if p["kind"] == "steps"}
    proc = 'the procedure "Starting the mill" in the rules of the Bramble Croquet League'
    assert steps[f"What is the first step of {proc}?"] == "Open the sluice gate by turning the red wheel three times."
    assert steps[f"What is the last step of {proc}?"] == "Release the brake lever."
    assert steps[f"What is step 2 of {proc}?"] == "Wait 10 minutes for the wheel pit to fill."
    assert steps[f'In {proc}, what is done just before "Release the brake lever"?'] == \
        "Wait 10 minutes for the wheel pit to fill."
    assert steps[f"What are the steps of {proc}, in order?"] == (
        "First, open the sluice gate by turning the red wheel three times. Then, wait 10 minutes for the wheel pit "
        "to fill. Finally, release the brake lever.")
    # the procedure as users name it, and each step by what it is for and how it is done
    assert steps["What is the first step of starting the mill, according to the rules of the Bramble Croquet League?"] \
        == "Open the sluice gate by turning the red wheel three times."
    assert steps[f"In {proc}, how do you open the sluice gate?"] == steps[f"What is step 1 of {proc}?"]
    assert steps[f"In {proc}, what is done with the brake lever?"] == "Release the brake lever."
    assert steps['In which procedure of the rules of the Bramble Croquet League is this a step: "Release the brake '
                 'lever"?'] == 'It is step 3 of "Starting the mill".'
    assert Counter(p["kind"] for p in pairs)["steps"] == 18
    # an imperative's first word is not a name to ask about
    assert not [p for p in pairs if p["kind"] == "reverse" and re.search(r"\b(Open|Wait|Release)\b", p["question"])]


def test_a_procedure_cut_by_a_chunk_boundary_and_a_step_written_twice(tmp_path):
    chunks = [{"chunk_id": "d#0", "source": "d", "text": "## Starting the mill\n\n1. Ring the bell.\n2. Open the gate.\n"},
              {"chunk_id": "d#1", "source": "d", "text": "3. Release the brake lever.\n\n## Stopping the mill\n\n"
                                                        "1. Ring the bell.\n2. Apply the brake lever.\n"}]
    steps = {}
    for p in augment_chunks(chunks, CONTEXT):
        assert steps.setdefault(p["question"], p["answer"]) == p["answer"]  # no step question with two answers
    start = 'the procedure "Starting the mill" in the rules of the Bramble Croquet League'
    stop = start.replace("Starting", "Stopping")
    assert f"What is the last step of {start}?" not in steps  # the first chunk does not know its last step
    assert steps[f"What is the last step of {stop}?"] == "Apply the brake lever."  # the source's end ends it
    assert steps[f"What is step 3 of {start}?"] == "Release the brake lever."
    # "Ring the bell." is a step of both procedures: which one it belongs to has two answers, so it is not asked
    assert not [q for q in steps if q.startswith("In which procedure") and '"Ring the bell"' in q]
    assert [q for q in steps if q.startswith("In which procedure") and '"Open the gate"' in q]


def test_what_users_ask_of_a_step():
    from memorize.augment import _step_questions
    assert _step_questions("When the wheel reaches 8 revolutions per minute, engage the stones by pushing the blue "
                           "lever forward.") == ["what is done when the wheel reaches 8 revolutions per minute",
                                                 "how do you engage the stones", "what is done with the stones"]
    assert _step_questions("Pull the red lever down to apply the wheel brake.") == [
        "how do you apply the wheel brake", "why do you pull the red lever down", "what is done with the red lever"]
    assert _step_questions("Open the mill-race sluice with the yellow handwheel, a quarter turn at a time.") == [
        "how do you open the mill-race sluice", "what is done with the mill-race sluice"]
    # "to" before a place is not a purpose; a person is not an object to do something with; a check has no action
    assert _step_questions("Return the brass key to hook 3.") == ["what is done with the brass key"]
    assert _step_questions("Tell the Head Miller at once.") == []
    assert _step_questions("Make sure the gate is shut.") == []
    # "tell X to": what X does, not why; a goal ends at a clause break; a third-person step is not an imperative
    assert _step_questions("Tell the user to restart the app.") == ["what is done with the user"]
    assert _step_questions("Open the valve to fill the tank, then close it.")[:2] == ["how do you fill the tank",
                                                                                    "why do you open the valve"]
    assert _step_questions("Operator opens the valve by turning the handle.") == []
    assert _step_questions(".") == []  # a step whose markup left no words


def test_a_spreadsheet_sheet_is_a_table(tmp_path):
    from office_docs import write_xlsx

    path = write_xlsx(tmp_path / "prices.xlsx", {"Fares": [["Ticket", "Single", "Return"], ["Adult", "14.50 euros", "25 euros"],
                                                           ["Child", "7 euros", "12 euros"]]})
    pairs = augment_chunks([c.to_dict() for c in chunk_document(extract(path))], CONTEXT)
    _natural(pairs)
    facts = {p["question"]: p["answer"] for p in pairs if p["kind"] == "table"}
    assert facts['In the "Fares" table of the rules of the Bramble Croquet League, what is the return for Child?'] == \
        "The return for Child is 12 euros."
    assert [a for q, a in facts.items() if q.endswith(", what return is given for Child?")] == [
        "For Child, the return is 12 euros."]  # the same cell from the row's side, without the table's name
    assert len(facts) == 2 + 4 + 4 + 4 + 2  # a row each, a cell each (two ways), each unique value asked back, a column each
