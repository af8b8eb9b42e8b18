"""The evidence behind an answer (memorize.evidence): the supporting sentence with its file, section and
clause, and none when the answer's content is found nowhere in the documents."""
from memorize.evidence import EvidenceIndex, evidence_line

CHUNKS = [
    {"chunk_id": "rules-0000", "source": "/data/club/rules.md", "page_start": 1, "page_end": 1, "section": "",
     "text": "# Rulebook of the Kestlewick League\n\n## Part 1 — Membership\n"
             "1.2 Any club with at least eight registered players may apply to join. The annual affiliation fee "
             "is 65 euros per club, payable to the Treasurer by 1 September.\n"
             "1.3 Transfers between clubs are allowed only from 1 to 21 January."},
    {"chunk_id": "rules-0001", "source": "/data/club/rules.md", "page_start": 1, "page_end": 1, "section": "",
     "text": "1.3 Transfers between clubs are allowed only from 1 to 21 January.\n\n## Penalties\n"
             "5.1 A team that fails to turn up forfeits the match and pays a fine of forty euros.\n"
             "5.2 A player who leaves the hall during play loses the game."},
    {"chunk_id": "slides-0000", "source": "/data/club/briefing.pptx", "page_start": 3, "page_end": 3,
     "section": "slide 3", "text": "The cellar bottles are sealed with blue wax.\nEvery jar carries a yellow label."},
    {"chunk_id": "report-0004", "source": "/data/club/report.pdf", "page_start": 4, "page_end": 4, "section": "",
     "text": "The league had 212 registered players at the end of the season."},
]


def test_the_evidence_names_the_file_section_and_clause_of_the_supporting_sentence():
    index = EvidenceIndex(CHUNKS)
    found = index.find("A club pays 65 euros.", "What is the annual affiliation fee of a club?")
    assert found["source"] == "rules.md" and found["section"] == "Part 1 — Membership" and found["clause"] == "1.2"
    assert found["sentence"].startswith("The annual affiliation fee is 65 euros") and 0.5 <= found["score"] <= 1
    assert evidence_line(found) == ('evidence: rules.md, section "Part 1 — Membership", clause 1.2: "The annual '
                                    'affiliation fee is 65 euros per club, payable to the Treasurer by 1 September."')
    # A number written out in the document ("forty") supports the same number in digits, and the heading in
    # effect carries over to the next chunk of the same file.
    fine = index.find("The team pays a 40 euro fine.", "What happens to a team that does not turn up?")
    assert (fine["section"], fine["clause"]) == ("Penalties", "5.1")
    assert evidence_line(index.find("Blue.", "What colour is the wax on the cellar bottles?")).startswith(
        'evidence: briefing.pptx, slide 3: "The cellar bottles')
    assert evidence_line(index.find("212 players.", "How many players were registered?")).startswith(
        'evidence: report.pdf, page 4: "The league')


def test_an_answer_whose_content_the_documents_do_not_hold_has_no_evidence():
    index = EvidenceIndex(CHUNKS)
    asked = "What is the annual affiliation fee of a club?"
    assert index.find("The annual affiliation fee is 80 euros per club.", asked) is None  # a number found nowhere
    assert index.find("The fee is paid to Marcus Oakhill, the league's banker.", asked) is None  # invented names
    # "Yellow" is in the documents, but about labels, not wax: the sentence shares nothing with the question.
    assert index.find("The wax is yellow.", "What colour is the wax on the cellar bottles?") is None
    assert index.find("", asked) is None and index.find("Yes.", asked) is None
    assert evidence_line(None) == "evidence: none — no passage of the documents supports this answer"


def test_a_long_sentence_is_shortened_in_the_evidence_line():
    items = ", ".join(f"item {i} at {i} crowns" for i in range(80))
    long = {**CHUNKS[0], "text": f"The tariff table lists {items}."}
    line = evidence_line(EvidenceIndex([long]).find("Item 7 costs 7 crowns.", "What does item 7 cost?"))
    assert line.endswith('…"') and len(line) < 400
