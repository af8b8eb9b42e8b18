import pytest

from memorize.hub import HubError
from memorize.publish import dataset_card, push_dataset
from memorize.watch import changes, snapshot


def test_dataset_card_says_how_it_was_made():
    card = dataset_card("me/rules-qa", {"documents": ["/x/rules.pdf"], "chunks": 3, "qa_pairs": 40, "train_rows": 7,
                                         "test_rows": 1}, {"chunk_tokens": 500, "temperatures": [0.01, 0.6, 1.2],
                                                           "pairs_per_row": 5, "model": "gpt-x"})
    assert "`rules.pdf`" in card and "3 sampling temperatures" in card and "| model | gpt-x |" in card
    assert "| QA pairs | 40 |" in card


def test_push_without_token_is_a_clear_error_before_any_network(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubError, match="HF_TOKEN"):
        push_dataset(tmp_path, "me/rules-qa", "card")


def test_changes_are_detected_by_content_not_mtime(tmp_path):
    (tmp_path / "a.md").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")
    first = snapshot(tmp_path)
    assert changes({}, first) == {str((tmp_path / "a.md").resolve()): "created", str((tmp_path / "b.txt").resolve()): "created"}
    (tmp_path / "a.md").write_text("alpha")  # rewritten, same content: no change
    (tmp_path / "b.txt").write_text("BETA")  # same size, new content
    (tmp_path / "c.md").write_text("gamma")
    second = snapshot(tmp_path)
    assert changes(first, second) == {str((tmp_path / "b.txt").resolve()): "modified", str((tmp_path / "c.md").resolve()): "created"}
    (tmp_path / "a.md").unlink()
    assert changes(second, snapshot(tmp_path)) == {str((tmp_path / "a.md").resolve()): "deleted"}


def test_training_data_a_worker_cannot_see_is_a_clear_error(tmp_path):
    from flows.finetune import SharedStorageError, finetune

    with pytest.raises(SharedStorageError, match=r"does not exist on this worker.*Shared storage"):
        finetune.fn(data_dir=str(tmp_path / "elsewhere"), output_dir=str(tmp_path / "model"))
