import csv
import json

from datasets import load_from_disk

from memorize.dataset import assign_split, chat_rows, ensure_test_pair, write_dataset


def _pairs(n):
    return [{"question": f"Question {i}?", "answer": f"Answer {i}.", "split": assign_split(f"Question {i}?", f"Answer {i}.", 0.2)}
            for i in range(n)]


def test_split_is_stable_and_near_ratio():
    splits = [assign_split(f"q{i}", "a", 1 / 11, seed=3) for i in range(2000)]
    assert 0.06 < splits.count("test") / 2000 < 0.12
    assert splits == [assign_split(f"q{i}", "a", 1 / 11, seed=3) for i in range(2000)]
    assert splits != [assign_split(f"q{i}", "a", 1 / 11, seed=4) for i in range(2000)]


def test_chat_rows_alternate_roles_k_pairs_per_row():
    rows = chat_rows(_pairs(12), pairs_per_row=5)
    assert [len(r["messages"]) for r in rows] == [10, 10, 4]
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * (len(r["messages"]) // 2)
        for q, a in zip(r["messages"][0::2], r["messages"][1::2]):
            assert q["content"].replace("Question", "Answer").replace("?", ".") == a["content"]


def test_csv_jsonl_and_datasetdict_agree(tmp_path):
    qa = _pairs(40)
    counts = write_dataset(tmp_path, qa, pairs_per_row=3)
    ds = load_from_disk(str(tmp_path / "dataset"))
    for split in ("train", "test"):
        jsonl = [json.loads(line)["messages"] for line in open(tmp_path / f"{split}.jsonl")]
        with open(tmp_path / f"{split}.csv", newline="") as f:
            csv_rows = [json.loads(r["messages"]) for r in csv.DictReader(f)]
        assert jsonl == csv_rows == list(ds[split]["messages"])
        assert counts[f"{split}_rows"] == len(jsonl)
        pairs_in_split = sum(len(m) // 2 for m in jsonl)
        assert pairs_in_split == sum(p["split"] == split for p in qa)
    assert [json.loads(line) for line in open(tmp_path / "qa.jsonl")] == qa


def test_empty_split_is_left_out_of_the_datasetdict(tmp_path):
    qa = [dict(p, split="train") for p in _pairs(3)]
    assert write_dataset(tmp_path, qa, pairs_per_row=5) == {"train_rows": 1, "test_rows": 0}
    assert list(load_from_disk(str(tmp_path / "dataset"))) == ["train"]
    assert (tmp_path / "test.jsonl").read_text() == ""


def test_a_small_dataset_always_gets_a_test_pair():
    pairs = [dict(p, split="train") for p in _pairs(5)]
    ensure_test_pair(pairs, 1 / 11)
    assert [p["split"] for p in pairs].count("test") == 1
    again = [dict(p, split="train") for p in _pairs(5)]
    ensure_test_pair(again, 1 / 11)
    assert again == pairs  # deterministic
    alone = [dict(p, split="train") for p in _pairs(1)]
    ensure_test_pair(alone, 1 / 11)
    assert alone[0]["split"] == "train"  # one pair stays for training
