"""The build-dataset flow end to end against a real loopback HTTP endpoint and a real Prefect server."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from datasets import load_from_disk
from fake_llm import FakeLLM
from office_docs import write_docx, write_html
from pdfs import write_encrypted_pdf, write_pdf

from flows.build_dataset import build_dataset
from memorize.settings import GenerationSettings

CONTEXT = "Rules of the fictional Quillmoor ferry service"
PAGES = [[f"On page {p} the ferry rule number {i} says boats leave at {i}:{p}0." for i in range(12)] for p in range(1, 4)]


@pytest.fixture
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    write_pdf(d / "rules.pdf", PAGES)
    (d / "notes.md").write_text("# Notes\n\nThe ferry captain is Orla Venn. She has served since 1998.\n")
    return d


def _run(llm, docs, tmp_path, dry_run=False, **settings):
    settings = {"base_url": llm.base_url, "model": "fake-model", "chunk_tokens": 120, "temperatures": 2,
                "retry_delay": 0.05, **settings}
    return build_dataset(documents=[str(docs)], context=CONTEXT, out=str(tmp_path / "out"),
                         settings=GenerationSettings(**settings), cache_dir=str(tmp_path / "cache"), dry_run=dry_run,
                         progress=False)


def test_rerun_makes_zero_calls_and_edit_regenerates_only_changed_chunks(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        first = _run(llm, docs, tmp_path)
        assert first["failures"] == []
        assert first["llm_calls"] == first["requests"] == llm.served > 0
        assert first["cache_hits"] == 0

        again = _run(llm, docs, tmp_path)
        assert llm.served == first["llm_calls"]  # zero new calls
        assert again["llm_calls"] == 0 and again["cache_hits"] == first["requests"]
        assert again["qa_pairs"] == first["qa_pairs"]

        edited = [list(p) for p in PAGES]
        edited[1][0] = "On page 2 the ferry rule number 0 was changed: boats now leave at noon."
        write_pdf(docs / "rules.pdf", edited)
        chunks_before = {json.loads(line)["sha256"]: json.loads(line) for line in open(tmp_path / "out" / "chunks.jsonl")}
        third = _run(llm, docs, tmp_path)
        chunks_after = [json.loads(line) for line in open(tmp_path / "out" / "chunks.jsonl")]
        changed = [c for c in chunks_after if c["sha256"] not in chunks_before]
        assert changed and all(c["page_start"] == 2 for c in changed)
        assert third["llm_calls"] == len(changed) * 2  # two temperatures per changed chunk
        assert third["cache_hits"] == third["requests"] - third["llm_calls"]
        assert llm.served == first["llm_calls"] + third["llm_calls"]


def test_transient_faults_are_retried_and_nothing_is_lost(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        llm.inject("429", "500", "timeout", "429")
        report = _run(llm, docs, tmp_path, request_timeout=1.0, concurrency=2)
        assert report["failures"] == []
        assert llm.requests == report["requests"] + 4 and llm.served == report["requests"]
        assert report["llm_calls"] == report["requests"] and report["qa_pairs"] > 0


def test_a_permanent_fault_is_reported_once_not_retried(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        llm.inject("401")
        report = _run(llm, docs, tmp_path, concurrency=1)
        assert llm.requests == report["requests"]  # the 401 was asked once; every other request once
        assert [f["stage"] for f in report["failures"]] == ["generate"]
        assert "AuthenticationError" in report["failures"][0]["reason"] and "invalid api key" in report["failures"][0]["reason"]
        assert report["llm_calls"] == report["requests"] and report["qa_pairs"] > 0  # the rest went on
        again = _run(llm, docs, tmp_path, concurrency=1)  # a re-run asks only the failed request
        assert again["llm_calls"] == 1 and again["failures"] == []


def test_unparseable_chunk_is_recorded_without_sinking_the_run(prefect_server, docs, tmp_path):
    with FakeLLM(garbage_when="Orla Venn") as llm:
        report = _run(llm, docs, tmp_path, parse_attempts=2)
        failed = report["failures"]
        assert len(failed) == 2 and {f["temperature"] for f in failed} == {0.01, 1.2}
        assert all(f["file"].endswith("notes.md") and "unparseable" in f["reason"] for f in failed)
        assert report["qa_pairs"] > 0 and report["llm_calls"] == report["requests"] - 2 + 2 * 2
        assert llm.requests == report["requests"] + 2  # each garbage chunk asked twice
        saved = json.loads((tmp_path / "out" / "report.json").read_text())
        assert saved["failures"] == failed
        # failures are not cached: the next run asks again for exactly those
        llm.garbage_when = None
        again = _run(llm, docs, tmp_path)
        assert again["failures"] == [] and again["llm_calls"] == 2


def test_bad_pdfs_reported_while_other_documents_go_through(prefect_server, docs, tmp_path):
    write_encrypted_pdf(docs / "locked.pdf", [["Secret."]])
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    write_pdf(docs / "scan.pdf", [None])
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path)
    reasons = {os.path.basename(f["file"]): f["reason"] for f in report["failures"]}
    assert set(reasons) == {"locked.pdf", "broken.pdf", "scan.pdf"}
    assert "encrypted" in reasons["locked.pdf"] and "corrupt" in reasons["broken.pdf"] and "no text layer" in reasons["scan.pdf"]
    assert sorted(os.path.basename(d) for d in report["documents"]) == ["notes.md", "rules.pdf"]
    assert report["qa_pairs"] > 0


def test_outputs_agree_and_record_provenance(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path, pairs_per_row=4, test_ratio=0.25)
    out = tmp_path / "out"
    qa = [json.loads(line) for line in open(out / "qa.jsonl")]
    assert len(qa) == report["qa_pairs"]
    assert {"question", "answer", "chunk_id", "source", "page_start", "page_end", "temperature", "style", "split"} <= set(qa[0])
    ds = load_from_disk(str(out / "dataset"))
    for split in ("train", "test"):
        rows = [json.loads(line)["messages"] for line in open(out / f"{split}.jsonl")]
        assert rows == list(ds[split]["messages"]) and len(rows) == report[f"{split}_rows"]
        assert sum(len(r) // 2 for r in rows) == sum(p["split"] == split for p in qa)
    saved = json.loads((out / "report.json").read_text())
    for key in ("documents", "chunks", "llm_calls", "cache_hits", "qa_pairs", "train_rows", "test_rows", "failures"):
        assert saved[key] == report[key]


def test_failed_hub_push_keeps_the_dataset_and_reports_why(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path, hub_repo="me/quillmoor-qa")  # no HF_TOKEN in the tests
    assert [f["stage"] for f in report["failures"]] == ["publish"] and "HF_TOKEN" in report["failures"][0]["reason"]
    assert (tmp_path / "out" / "dataset" / "dataset_dict.json").exists() and report["qa_pairs"] > 0


def test_dry_run_estimates_and_calls_nothing(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path, dry_run=True, price_per_1k=0.5)
    assert llm.requests == 0 and report["dry_run"]
    assert report["requests"] == report["chunks"] * 2
    assert report["estimated_cost"] == pytest.approx((report["prompt_tokens"] + report["completion_tokens"]) / 1000 * 0.5, abs=1e-3)
    assert not (tmp_path / "out" / "qa.jsonl").exists()


def test_killed_run_keeps_completed_calls(prefect_server, docs, tmp_path):
    """The CLI is killed (SIGKILL) half way; the re-run only asks for what was not finished."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    with FakeLLM(delay=0.4) as llm:
        cmd = [sys.executable, "-m", "flows.cli", "dataset", str(docs), "--context", CONTEXT,
               "--out", str(tmp_path / "out"), "--base-url", llm.base_url, "--model", "fake-model",
               "--cache-dir", str(tmp_path / "cache"), "--chunk-tokens", "120", "--temperatures", "3", "--concurrency", "2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while llm.served < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let the finished results land on disk
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # requests in flight at the kill still finish on the server side
        served_before = llm.served
        assert 4 <= served_before
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert served_before < report["requests"]
        assert report["cache_hits"] >= served_before - 2  # at most the calls in flight at the kill are lost
        assert report["cache_hits"] + report["llm_calls"] == report["requests"]
        assert llm.served == served_before + report["llm_calls"]


@pytest.mark.slow
def test_embedded_default_serves_the_local_model_on_loopback(prefect_server, small_model, tmp_path):
    """No --base-url: the real SmolLM2 model behind the embedded server (memorize.serve), through the openai client."""
    doc = tmp_path / "bakery.md"
    doc.write_text("The Plumtree Bakery opens at six in the morning. Its owner is Marta Quell.\n")
    report = build_dataset(documents=[str(doc)], context="Facts about the fictional Plumtree Bakery",
                           out=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                           settings=GenerationSettings(temperatures=1, questions_per_chunk=2), progress=False)
    assert report["llm_calls"] >= 1
    # The one request ends with pairs (kept, or counted per reason when the filters drop a 135M model's
    # junk) or as a named failure, never silently.
    parsed = report["pairs_by_origin"].get("llm", 0) + sum(report["dropped"].values()) > 0
    assert report["requests"] == 1 and parsed + len(report["failures"]) == 1
    assert parsed or "unparseable" in report["failures"][0]["reason"]
    log = (tmp_path / "out" / "logs" / "generator-server.log").read_text()
    assert "POST /v1/chat/completions HTTP/1.1\" 200" in log


def test_report_counts_pairs_by_origin_and_drops(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path, temperatures=2)
    origins = report["pairs_by_origin"]
    assert origins["llm"] > 0 and {"augment:span", "augment:reverse", "augment:passage"} <= set(origins)  # the defaults
    assert sum(origins.values()) == report["qa_pairs"]
    # The fake quotes the first 40 characters of a sentence in its question: notes.md's two short sentences
    # are answered inside their questions (at both temperatures); the second temperature repeats the rest.
    assert report["dropped"]["answer_in_question"] == 4 and report["dropped"]["duplicate"] > 0
    qa = [json.loads(line) for line in open(tmp_path / "out" / "qa.jsonl")]
    assert any(p["origin"] == "augment:reverse" and "Orla Venn" in p["question"] and p["source"].endswith("notes.md")
               for p in qa)


def test_no_temperatures_builds_the_teacher_free_dataset_without_any_llm(prefect_server, docs, tmp_path):
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path, temperatures=0, augment=["span", "reverse"], abstain_share=0.1)
        assert llm.requests == 0 and report["requests"] == 0
        assert set(report["pairs_by_origin"]) == {"augment:span", "augment:reverse", "abstain"}
        assert report["train_rows"] > 0
        # the abstention pairs are abstain_share of them all, as far as the documents allow
        assert 0 < report["pairs_by_origin"]["abstain"] <= round(0.1 / 0.9 * (report["qa_pairs"] - report[
            "pairs_by_origin"]["abstain"]))
        with pytest.raises(ValueError, match="unknown augmentation"):
            _run(llm, docs, tmp_path, augment=["paraphrase"])
        assert llm.requests == 0  # refused before any call


def test_office_and_web_files_give_pairs_and_unknown_files_are_named(prefect_server, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_docx(docs / "fares.docx", [("Fares", ["A single Quillmoor ferry ticket costs 4 crowns. Children ride free."])])
    write_html(docs / "crew.html", [("Crew", "The Quillmoor ferry captain is Orla Venn. She has served since 1998.")])
    (docs / "diagram.vsdx").write_bytes(b"PK")
    with FakeLLM() as llm:
        report = _run(llm, docs, tmp_path)
    qa = [json.loads(line) for line in open(tmp_path / "out" / "qa.jsonl")]
    sources = {os.path.basename(p["source"]) for p in qa}
    assert {"fares.docx", "crew.html"} <= sources
    assert {p["section"] for p in qa if p["source"].endswith("fares.docx")} == {"Fares"}
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(os.path.basename(s["file"]), s["reason"].split(";")[0]) for s in saved["skipped"]] == [
        ("diagram.vsdx", "unsupported file type .vsdx")]
    assert report["failures"] == []
