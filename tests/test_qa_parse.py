import pytest

from memorize.qa_parse import ParseError, parse_pairs


@pytest.mark.parametrize("text", [
    "Q: What is A?\nA: It is a.\nQ: What is B?\nA: It is b.",
    "Question: What is A?\nAnswer: It is a.\n\nQuestion: What is B?\nAnswer: It is b.",
    "1. Q: What is A?\n   A: It is a.\n2. Q: What is B?\n   A: It is b.",
    "**Q1:** What is A?\n**A1:** It is a.\n**Q2:** What is B?\n**A2:** It is b.",
    "Here are the pairs:\nWhat is A?\nIt is a.\nWhat is B?\nIt is b.",
    '```json\n[{"question": "What is A?", "answer": "It is a."}, {"question": "What is B?", "answer": "It is b."}]\n```',
])
def test_formats(text):
    assert parse_pairs(text) == [("What is A?", "It is a."), ("What is B?", "It is b.")]


def test_multiline_answers_are_joined():
    assert parse_pairs("Q: Why?\nA: Because of\nthe rule.") == [("Why?", "Because of the rule.")]


def test_empty_and_duplicate_questions_dropped():
    text = "Q: What is A?\nA: a.\nQ: what is a\nA: again.\nQ: \nA: orphan.\nQ: What is C?\nA: c."
    assert parse_pairs(text) == [("What is A?", "a."), ("What is C?", "c.")]


def test_garbage_raises():
    with pytest.raises(ParseError):
        parse_pairs("I cannot help with that.")


def test_structured_reply_and_one_cut_off_by_its_token_limit():
    full = '{"pairs": [{"question": "What is A?", "answer": "a \\"quoted\\"."}, {"question": "What is B?", "answer": "b."}]}'
    assert parse_pairs(full) == [("What is A?", 'a "quoted".'), ("What is B?", "b.")]
    # max_tokens reached inside the second pair: the complete first pair is kept
    assert parse_pairs(full[:70]) == [("What is A?", 'a "quoted".')]
    assert parse_pairs('{"pairs": [{"question": "What is\tC?", "answer": "c."}, {"question": "D') == [("What is C?", "c.")]
    with pytest.raises(ParseError):  # broken JSON without one complete pair is not read as lines of text
        parse_pairs('{"pairs": [{"question": "What is A?",\n"answer": "a')
