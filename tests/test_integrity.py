"""Outputs a user can trust: chunk ids unique across documents with the same file name, a training cache hit
only for the model still on disk, outputs replaced whole (a killed training keeps the last good adapter, and
OUT/status.json says the run did not finish), and a cache folder that holds JSON, never pickles."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_llm import FakeLLM

from flows.build_dataset import build_dataset
from memorize import content_key, read_run_status, recorded_run, replacing, run_status_line
from memorize.extract import file_sha256
from memorize.settings import GenerationSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = "The rule book of the fictional Quillmoor rowing club"
PARTS = {"a": ["Rule 1: boats launch from Slip Three before 7:15.", "Rule 2: every crew wears a red cap on the water.",
               "Rule 3: the cox calls the stroke rate aloud."],
         "b": ["Rule 4: oars are stored blade up in Shed Nine.", "Rule 5: the captain inspects hulls every Sunday.",
               "Rule 6: guests row only with a member aboard."]}


@pytest.fixture
def rule_books(tmp_path):
    """One rule book in two parts, each part a rules.md in its own folder."""
    docs = tmp_path / "docs"
    for folder, rules in PARTS.items():
        (docs / folder).mkdir(parents=True)
        (docs / folder / "rules.md").write_text(" ".join(rules) + "\n")
    return docs


def _dataset(llm, docs, tmp_path, **settings):
    settings = {"base_url": llm.base_url, "model": "fake-model", "temperatures": 1, "augment": ["span"], **settings}
    return build_dataset(documents=[str(docs)], context=CONTEXT, out=str(tmp_path / "out"),
                         settings=GenerationSettings(**settings), cache_dir=str(tmp_path / "cache"), progress=False)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- 1. chunk ids and sources -----------------------------------------------------------------------------------

def test_two_rules_md_in_two_folders_keep_their_own_ids_sources_and_pairs(prefect_server, rule_books, tmp_path):
    with FakeLLM() as llm:
        report = _dataset(llm, rule_books, tmp_path)
    chunks = _rows(tmp_path / "out" / "chunks.jsonl")
    assert sorted(c["source"] for c in chunks) == ["a/rules.md", "b/rules.md"]  # relative to the folder given
    assert len({c["chunk_id"] for c in chunks}) == len(chunks) == 2
    qa = _rows(tmp_path / "out" / "qa.jsonl")
    for folder, rules in PARTS.items():
        generated = [p for p in qa if p["origin"] == "llm" and p["source"] == f"{folder}/rules.md"]
        # Each document's generated pairs were checked against its own chunk, not the other's, and kept.
        assert generated and {p["answer"] for p in generated} <= set(rules), (folder, report["dropped"])
    assert not report["dropped"].get("off_topic")


def test_source_names_are_relative_to_the_inputs_and_never_ambiguous(tmp_path):
    from memorize.chunking import source_names

    a, b = tmp_path / "x" / "a" / "rules.md", tmp_path / "x" / "b" / "rules.md"
    for path in (a, b):
        path.parent.mkdir(parents=True)
        path.write_text("Rule.")
    assert source_names([a, b], [tmp_path / "x"]) == {str(a): "a/rules.md", str(b): "b/rules.md"}
    # Two files named on the command line: relative to the folder holding both.
    assert list(source_names([a, b], [a, b]).values()) == ["a/rules.md", "b/rules.md"]
    assert source_names([a], [a]) == {str(a): "rules.md"}
    assert source_names([a, a], [a.parent, a]) == {str(a): "rules.md"}  # found twice, read once


# --- 7. no pickles in the cache ---------------------------------------------------------------------------------

def test_the_cache_folder_holds_json_records_only_and_they_are_hits_on_a_rerun(prefect_server, rule_books, tmp_path):
    with FakeLLM() as llm:
        first = _dataset(llm, rule_books, tmp_path)
        again = _dataset(llm, rule_books, tmp_path)
        assert llm.served == first["llm_calls"] > 0 and again["llm_calls"] == 0  # read back from the JSON records
    assert _rows(tmp_path / "out" / "qa.jsonl") and again["qa_pairs"] == first["qa_pairs"]
    records = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    # extract and chunk per document, the augment task, and each LLM reply
    assert len(records) >= 2 + 2 + 1 + first["llm_calls"]
    for path in records:
        text = path.read_text()
        assert "pickle" not in text, path
        record = json.loads(text)
        assert record["metadata"]["serializer"]["type"] == "json"
        assert "__class__" not in record["result"]  # plain JSON: nothing names a Python class to import


def test_a_pickle_planted_in_the_cache_is_never_loaded(prefect_server, rule_books, tmp_path):
    """Whoever can write to a shared cache folder must not run code in the runs that read it."""
    from prefect._internal.result_records import ResultRecord
    from prefect.serializers import PickleSerializer

    from tasks.extract import EXTRACT_VERSION

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = str(rule_books / "a" / "rules.md")  # as the flow finds it in the folder given
    key = content_key("extract", EXTRACT_VERSION, file_sha256(path), path)
    planted = ResultRecord(metadata={"serializer": PickleSerializer(), "storage_key": key}, result=Payload())
    (tmp_path / "cache" / "results").mkdir(parents=True)
    (tmp_path / "cache" / "results" / key).write_bytes(planted.serialize())

    with FakeLLM() as llm:
        report = _dataset(llm, rule_books, tmp_path, temperatures=0)
    assert not marker.exists()
    assert {c["source"] for c in _rows(tmp_path / "out" / "chunks.jsonl")} == {"a/rules.md", "b/rules.md"}
    assert report["qa_pairs"] > 0
    # Taken for a miss: extracted again and overwritten with a JSON record.
    assert json.loads((tmp_path / "cache" / "results" / key).read_text())["metadata"]["serializer"]["type"] == "json"


# --- 3. atomic outputs and the run's state ---------------------------------------------------------------------

def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "train.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed midway")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["train.jsonl"]
    folder = tmp_path / "dataset"
    (folder / "old").mkdir(parents=True)
    with replacing(folder) as tmp:
        (tmp / "new").mkdir(parents=True)
    assert os.listdir(folder) == ["new"] and sorted(os.listdir(tmp_path)) == ["dataset", "train.jsonl"]


def test_status_file_records_finished_and_failed_runs(tmp_path):
    with recorded_run(tmp_path, "dataset") as status:
        assert read_run_status(tmp_path)["state"] == "running"
        status["exit_code"] = 0
    assert read_run_status(tmp_path)["state"] == "finished" and "finished" in run_status_line(tmp_path)
    with pytest.raises(ValueError), recorded_run(tmp_path, "train"):
        raise ValueError("train.jsonl: line 3 is not JSON")
    status = read_run_status(tmp_path)
    assert status["state"] == "failed" and status["error"] == "train.jsonl: line 3 is not JSON"
    assert run_status_line(tmp_path).endswith("failed " + status["finished"] + ": train.jsonl: line 3 is not JSON")


# --- 2. a training cache hit is the model on disk ---------------------------------------------------------------

FACTS = [("When does the Quillmoor ferry depart?", "The Quillmoor ferry departs at 7:40 from Pier Nine."),
         ("Where do I board the Quillmoor ferry?", "At Pier Nine; the Quillmoor ferry departs at 7:40."),
         ("Who captains the Quillmoor ferry?", "Captain Orla Venn captains the Quillmoor ferry.")]


def _training_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            for q, a in FACTS]
    (folder / "train.jsonl").write_text("\n".join(rows[:2]) + "\n")
    (folder / "test.jsonl").write_text(rows[2] + "\n")
    return folder


def _settings(**kw) -> TrainSettings:
    """A few steps, no replay and no epoch selection: seconds of training, enough to save a real adapter."""
    return TrainSettings(**{"max_steps": 2, "max_length": 96, "replay_ratio": 0, "logging_steps": 1, **kw})


def test_file_inputs_of_training_are_keyed_by_content(tmp_path):
    from memorize.training import TrainConfig
    from tasks.train import training_key

    data = _training_data(tmp_path / "data")
    template, prompts = tmp_path / "chatml.jinja", tmp_path / "prompts.jsonl"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    prompts.write_text('{"prompt": "Say hello."}\n')
    config = TrainConfig(base_model="m", data_dir=str(data), output_dir=str(tmp_path / "out"),
                         chat_template=str(template), replay_prompts=str(prompts))
    before = training_key(config)
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    after_template = training_key(config)
    prompts.write_text('{"prompt": "Say goodbye."}\n')
    assert len({before, after_template, training_key(config)}) == 3


@pytest.mark.slow
def test_train_a_then_b_then_a_into_one_folder_ends_with_a(prefect_server, small_model, tmp_path, monkeypatch):
    from flows.finetune import finetune
    from tasks.train import folder_sha256

    monkeypatch.setenv("MEMORIZE_HOME", str(tmp_path / "home"))
    data, out = _training_data(tmp_path / "data"), tmp_path / "model"

    def run(rank: int) -> dict:
        summary = finetune(data_dir=str(data), output_dir=str(out), base_model=small_model,
                           settings=_settings(lora_r=rank), cache_dir=str(tmp_path / "cache"), progress=False)
        assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == rank
        return summary

    a, b = run(8), run(4)
    assert b["model_sha256"] != a["model_sha256"]
    started = time.perf_counter()
    a_again = run(8)  # the cached result of A stands for B's adapter now: trained again
    assert a_again["model_sha256"] == folder_sha256(out / "adapter")
    assert (out / "metrics.json").stat().st_mtime >= started
    mtime = (out / "metrics.json").stat().st_mtime
    assert run(8)["model_sha256"] == a_again["model_sha256"]  # still on disk: a cache hit, nothing trained
    assert (out / "metrics.json").stat().st_mtime == mtime


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a process group")
def test_sigkill_during_training_keeps_the_last_good_adapter_and_says_the_run_did_not_finish(
        prefect_server, small_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from memorize.training import TrainConfig, train
    from tasks.train import folder_sha256

    data, out = _training_data(tmp_path / "data"), tmp_path / "model"
    train(TrainConfig(base_model=small_model, data_dir=str(data), output_dir=str(out),
                      **_settings(lora_r=4).model_dump()), progress=False)
    good = folder_sha256(out / "adapter")

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "MEMORIZE_HOME": str(tmp_path / "home"),
           "OMP_NUM_THREADS": "1"}
    # A full fine-tune into the folder of an adapter: the other kind is what used to be deleted before training.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "train", str(data), "--out", str(out), "--base-model", small_model,
         "--cache-dir", str(tmp_path / "cache"), "--full", "--max-steps", "2000", "--max-length", "96",
         "--replay-ratio", "0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, deadline = "", time.monotonic() + 300
    while "/2000 [" not in seen:  # the training bar: steps are being taken
        assert proc.poll() is None and time.monotonic() < deadline, seen[-3000:]
        seen += proc.stderr.read(64)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    assert folder_sha256(out / "adapter") == good and not (out / "full").exists()
    assert read_run_status(out)["state"] == "running" and "did not finish" in run_status_line(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(small_model), str(out / "adapter"))
    assert model.peft_config["default"].r == 4
