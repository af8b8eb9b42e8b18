"""Batched answering: a prefix the prompts share is computed once and changes no answer; base answers are
kept per model and reused."""
import pytest

from memorize.answering import AnswerCache, Answerer, _batches, _shared_prefix, answer_cache_file, complete
from memorize.settings import ANSWER_BATCH_TOKENS


def test_shared_prefix_leaves_every_row_a_token_of_its_own():
    assert _shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert _shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # identical prompts: the last token is each row's own
    assert _shared_prefix([[7], [7, 8]]) == 0
    assert _shared_prefix([[1, 2, 3]]) == 2


def test_batches_budget_the_longest_row_wherever_it_stands():
    # Grouped by context, a long prompt can come before short ones: the budget still counts it.
    lengths = {0: 2_000, 1: 100, 2: 100, 3: 100, 4: 100, 5: 100, 6: 100, 7: 100, 8: 100, 9: 100}
    batches = _batches(list(lengths), lengths, batch_size=64)
    assert all(len(b) * max(lengths[i] for i in b) <= ANSWER_BATCH_TOKENS for b in batches)
    assert [i for b in batches for i in b] == list(lengths)


@pytest.mark.parametrize("damage", ['{"abc": "an answer", "de', "[1, 2]", "\udcff"])
def test_a_damaged_answer_cache_is_named_and_started_afresh(tmp_path, caplog, damage):
    path = tmp_path / "answers" / "base.json"
    path.parent.mkdir()
    path.write_bytes(damage.encode("utf-8", "surrogateescape"))  # cut mid-write, not an object, not UTF-8
    cache = AnswerCache(path, "some/model")  # a Hub id: fingerprinted by name, nothing loaded
    assert cache.entries == {}
    assert str(path) in caplog.text and "generated again" in caplog.text
    cache.entries[cache.key("What is 2 + 2?", 8)] = "4"
    cache.save()
    assert AnswerCache(path, "some/model").entries == cache.entries  # rewritten whole


@pytest.mark.slow
def test_a_shared_context_is_computed_once_and_changes_no_answer(small_model):
    answerer = Answerer.load(small_model)
    context = ("The Kettle buoy is painted red and stands nearest the harbour mouth. The Lantern Regatta starts "
               "forty minutes after sunset. Every boat carries a steady amber light. ") * 6
    questions = ["What colour is the Kettle buoy?", "When does the regatta start?", "What light does a boat carry?"]
    prompts = [answerer.prompt(q, context) for q in questions]
    seen = []  # tokens every forward pass of the model reads
    hook = answerer.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].numel()), with_kwargs=True)
    try:
        shared = complete(answerer.model, answerer.tokenizer, prompts, [24] * 3)
        read_shared, seen[:] = sum(seen), []
        apart = complete(answerer.model, answerer.tokenizer, prompts, [24] * 3, share_prefix=False)
        read_apart = sum(seen)
    finally:
        hook.remove()
    assert [c.text for c in shared] == [c.text for c in apart]
    prefix = _shared_prefix([answerer.tokenizer(p, add_special_tokens=False).input_ids for p in prompts])
    assert prefix > len(answerer.tokenizer(context).input_ids)  # the whole context and the instruction before it
    assert read_apart - read_shared == 2 * prefix  # the prefix was read once instead of three times


@pytest.mark.slow
def test_base_answers_are_kept_with_the_model_and_reused_by_any_later_evaluation(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMORIZE_HOME", str(tmp_path))
    answerer = Answerer.load(small_model)
    generated = []
    generate = answerer._generate
    monkeypatch.setattr(answerer, "_generate", lambda model, prompts, n: generated.extend(prompts) or
                        generate(model, prompts, n))
    questions = ["What is the capital of France?", "How many legs does a spider have?"]
    path = answer_cache_file(small_model)
    assert path.parent == tmp_path / "answers"  # beside the models, not in a project's --cache-dir

    def ask(qs, n=8):  # each call reads the file afresh, as a later evaluation of another project would
        return answerer.answer(qs, max_new_tokens=n, progress=False, cache=AnswerCache(path, small_model))

    first = ask(questions)
    assert len(generated) == 2 and ask(questions) == first and len(generated) == 2
    ask(questions[:1], n=4)  # another length is another answer
    assert len(generated) == 3
