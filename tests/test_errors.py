"""Failures a user meets through the CLI: each is one `error:` line naming the file or setting, a non-zero
exit and nothing lost; a run whose endpoint refuses every request trains nothing; secrets and local paths
stay out of outputs, logs and what is pushed."""
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fake_llm import FakeLLM

from flows.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = "Rules of the fictional Quillmoor ferry"
DOC = "The Quillmoor ferry leaves Pier Nine at 7:40. Its captain is Orla Venn. The fare is four crowns.\n"
KEY = "sk-memorize-test-5f1c0d9e8b7a6c5d4e3f2a1b"  # recognizable: found anywhere, it leaked


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def one_error(capsys) -> str:
    """The only `error:` line of a command run in this process (main() returned: nothing raised; the tests that
    run the command in its own process check its whole output for tracebacks)."""
    (line,) = error_lines(capsys.readouterr().err)
    return line


def cli(args: list[str], prefect_server: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """The real `memorize` command in its own process: everything Prefect logs is in its output."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "MEMORIZE_HOME": str(tmp_path / "home"), **env}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "docs" / "ferry.md"
    path.parent.mkdir()
    path.write_text(DOC)
    return path


@pytest.fixture
def refusing_endpoint():
    """An endpoint that answers 401 to every request and, as some do, quotes the key it was given."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


# --- 4. an endpoint that fails every request ------------------------------------------------------------------

def test_a_401_on_every_request_stops_run_before_training_and_the_key_is_nowhere(prefect_server, doc, tmp_path,
                                                                                 refusing_endpoint):
    host, seen = refusing_endpoint
    out = tmp_path / "out"
    done = cli(["run", str(doc), "--context", CONTEXT, "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                "--base-url", f"http://{host}/v1", "--model", "gpt-x", "--temperatures", "2", "--retry-delay", "0"],
               prefect_server, tmp_path, OPENAI_API_KEY=KEY)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert seen and all(auth == f"Bearer {KEY}" for auth in seen)  # the real client sent the key, and got 401s
    (line,) = error_lines(done.stderr)
    assert "2 of 2 LLM requests failed" in line and "401" in line and "$OPENAI_API_KEY" in line
    assert not (out / "model").exists() and not (out / "data" / "train.jsonl").exists()  # nothing trained or written
    assert "Traceback" not in output
    written = [p for p in out.rglob("*") if p.is_file()]
    assert out / "config.yaml" in written
    for text in [output, *(p.read_text(errors="replace") for p in written)]:
        assert KEY not in text and KEY[3:] not in text


def test_dataset_stops_when_more_than_max_failed_share_of_requests_fail(prefect_server, tmp_path, capsys):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a", "b"):
        (docs / f"{name}.md").write_text(f"Rule {name}: the {name}-boat leaves at 9:1{len(name)}. " * 3)
    args = ["dataset", str(docs), "--context", CONTEXT, "--temperatures", "2", "--model", "fake-model",
            "--concurrency", "1", "--retry-delay", "0"]
    with FakeLLM() as llm:
        llm.inject("401", "401", "401")  # 3 of the 4 requests
        assert main([*args, "--base-url", llm.base_url, "--out", str(tmp_path / "strict"),
                     "--cache-dir", str(tmp_path / "cache")]) == 1
        line = one_error(capsys)
        assert "3 of 4 LLM requests failed (more than --max-failed-share 0.5)" in line and "invalid api key" in line
        assert not (tmp_path / "strict" / "report.json").exists()
        # Allowed to fail that much, the same run writes its dataset and names each failure.
        llm.inject("401", "401", "401")
        assert main([*args, "--base-url", llm.base_url, "--out", str(tmp_path / "lenient"),
                     "--max-failed-share", "0.8", "--cache-dir", str(tmp_path / "cache2")]) == 1
    report = json.loads((tmp_path / "lenient" / "report.json").read_text())
    assert len(report["failures"]) == 3 and report["qa_pairs"] > 0
    assert len(error_lines(capsys.readouterr().err)) == 3


def test_an_empty_folder_is_an_error_not_an_empty_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["dataset", str(tmp_path / "empty"), "--context", CONTEXT, "--out", str(tmp_path / "out")]) == 2
    assert one_error(capsys) == f"error: {tmp_path / 'empty'}: no document to read (the folder is empty)"
    assert not (tmp_path / "out").exists()


# --- 5. bad inputs: one line, non-zero, nothing lost ---------------------------------------------------------

def test_a_missing_document_names_it(doc, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("kept: true\n")  # an earlier run's
    missing = tmp_path / "docs" / "missing.pdf"
    assert main(["run", str(doc), str(missing), "--context", CONTEXT, "--out", str(out)]) == 2
    assert one_error(capsys) == f"error: {missing}: no such file or folder"
    assert (out / "config.yaml").read_text() == "kept: true\n"


def test_a_broken_questions_row_is_found_before_anything_runs(doc, tmp_path, capsys):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"question": "Who is the captain?", "answer": "Orla Venn"}\n{"question": "Fare?"\n')
    with FakeLLM() as llm:
        assert main(["run", str(doc), "--context", CONTEXT, "--out", str(tmp_path / "run"), "--questions",
                     str(questions), "--base-url", llm.base_url, "--model", "fake-model"]) == 2
        assert llm.requests == 0
    assert one_error(capsys).startswith(f"error: {questions}, line 2: invalid JSON")
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "eval"), "--questions", str(questions)]) == 2
    assert one_error(capsys).startswith(f"error: {questions}, line 2: invalid JSON")
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "eval"), "--questions", str(tmp_path / "none.csv")]) == 2
    assert one_error(capsys) == f"error: {tmp_path / 'none.csv'}: cannot read the questions file (No such file or directory)"


@pytest.mark.parametrize("flags, message", [
    (["--judge-base-url", "http://127.0.0.1:9/v1"], "--judge-base-url and --judge-model go together"),
    (["--judge-model", "judge", "--judge-base-url", "localhost:9"], "--judge-base-url: expected an http:// or https:// URL"),
])
def test_judge_settings_are_checked_at_start_up(tmp_path, capsys, flags, message):
    assert main(["eval", str(tmp_path), "--out", str(tmp_path / "eval"), *flags]) == 2
    assert message in one_error(capsys)


def test_an_unknown_scheduler_is_refused_before_generation(doc, tmp_path, capsys):
    with FakeLLM() as llm:
        assert main(["run", str(doc), "--context", CONTEXT, "--out", str(tmp_path / "o"), "--lr-scheduler", "cosin",
                     "--base-url", llm.base_url, "--model", "fake-model"]) == 2
        assert llm.requests == 0
    line = one_error(capsys)
    assert line.startswith("error: --lr-scheduler: 'cosin' is not a learning-rate schedule") and "cosine" in line


@pytest.mark.parametrize("command, flag", [("train", "--batch-size"), ("eval", "--eval-batch-size")])
def test_a_bad_setting_names_its_own_flag(tmp_path, capsys, command, flag):
    # batch_size is a field of the training and the evaluation settings, each with its own flag
    assert main([command, str(tmp_path), "--out", str(tmp_path / "o"), flag, "0"]) == 2
    assert one_error(capsys).startswith(f"error: {flag}: Input should be greater than or equal to 1")


def test_a_flag_is_never_guessed_from_its_start(tmp_path, capsys):
    # `--seed` is not a flag of train: it must not be read as --seeds (three trainings instead of one)
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path), "--out", str(tmp_path / "o"), "--seed", "3"])
    assert "unrecognized arguments: --seed" in capsys.readouterr().err


def test_a_folder_without_train_jsonl_and_a_serve_folder_without_a_model(tmp_path, capsys):
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "model")]) == 2
    assert one_error(capsys) == (f"error: {tmp_path}: no train.jsonl; pass the output folder of `memorize dataset` "
                                 "(or the data/ folder of `memorize run`)")
    assert not (tmp_path / "model").exists()
    assert main(["serve", str(tmp_path)]) == 2
    assert one_error(capsys).startswith(f"error: {tmp_path}: no adapter")


@pytest.mark.parametrize("bad, message", [
    ({"out": None}, "out: null is not allowed here"),
    ({"generation": {"temperatures": 2.9}}, "generation.temperatures: 2.9 is not a valid int"),
    ({"generation": {"concurrency": True}}, "generation.concurrency: True is not a valid int"),
    ({"generation": {"retry_delay": False}}, "generation.retry_delay: False is not a valid float"),
])
def test_a_config_value_of_the_wrong_kind_names_the_file_and_key(doc, tmp_path, capsys, bad, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"documents": [str(doc)], "context": CONTEXT, "out": str(tmp_path / "o"), **bad}))
    assert main(["dataset", "--config", str(config)]) == 2
    assert one_error(capsys).startswith(f"error: {config}: {message}")


def test_null_is_accepted_where_a_setting_may_be_left_out(prefect_server, doc, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"documents": [str(doc)], "context": CONTEXT, "out": str(tmp_path / "o"),
                                      "generation": {"questions_per_chunk": None, "base_url": None}}))
    assert main(["dataset", "--config", str(config), "--dry-run", "--temperatures", "0"]) == 0


INJECT_PDF_FAULT = '''
import pypdf

class _Broken(pypdf.PdfReader):
    def __init__(self, stream, *args, **kwargs):
        if str(stream).endswith("bad.pdf"):
            raise RecursionError("maximum recursion depth exceeded while parsing")
        super().__init__(stream, *args, **kwargs)

pypdf.PdfReader = _Broken
'''


def test_a_pdf_error_of_any_type_is_one_line_and_the_other_documents_go_through(prefect_server, doc, tmp_path):
    """pypdf raises a type outside the ones it documents (here RecursionError, injected at its boundary)."""
    from pdfs import write_pdf

    write_pdf(doc.parent / "bad.pdf", [["Boats leave at nine."]])
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT_PDF_FAULT)
    out = tmp_path / "out"
    done = cli(["dataset", str(doc.parent), "--context", CONTEXT, "--out", str(out), "--temperatures", "0",
                "--cache-dir", str(tmp_path / "cache")], prefect_server, tmp_path, PYTHONPATH=str(inject))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    (line,) = error_lines(done.stderr)
    assert line == (f"error: {doc.parent / 'bad.pdf'}: corrupt or unreadable PDF (RecursionError: maximum recursion "
                    "depth exceeded while parsing)")
    report = json.loads((out / "report.json").read_text())
    assert report["documents"] == [str(doc)] and report["train_rows"] > 0


# --- 8. secrets and paths ------------------------------------------------------------------------------------

def test_redact_masks_keys_tokens_and_url_credentials():
    from memorize.llm import redact

    assert redact(f"Incorrect API key provided: {KEY}.") == "Incorrect API key provided: sk-***."
    assert redact("Authorization: Bearer abc.DEF-123") == "Authorization: Bearer ***"
    assert redact("https://alice:s3cret@llm.example/v1") == "https://***@llm.example/v1"
    assert redact("got Basic YWxpY2U6czNjcmV0, basic information") == "got Basic ***, basic information"
    assert redact("token 0f3a9c2b7d1e4f5a6b8c9d0e1f2a3b4c given") == "token *** given"
    assert redact('{"key": "QWxhZGRpbjpvcGVuIHNlc2FtZQ1234567890abcd"}') == '{"key": "***"}'
    kept = "Model Qwen2.5-Coder-1.5B-Instruct not found at http://127.0.0.1:8000/v1 (error 404)"
    assert redact(kept) == kept


def test_base_url_credentials_are_masked_in_config_yaml(prefect_server, doc, tmp_path):
    with FakeLLM() as llm:
        url = llm.base_url.replace("http://", "http://alice:s3cret-pass@")
        assert main(["dataset", str(doc), "--context", CONTEXT, "--out", str(tmp_path / "o"), "--base-url", url,
                     "--model", "fake-model", "--temperatures", "0", "--cache-dir", str(tmp_path / "cache")]) == 0
    config = (tmp_path / "o" / "config.yaml").read_text()
    assert "s3cret-pass" not in config and "http://***@127.0.0.1:" in config


def test_the_embedded_generator_gets_no_key(tmp_path, monkeypatch):
    import memorize.local_server as local_server

    seen = {}

    class Exited:
        returncode = 1

        def __init__(self, cmd, env, **kwargs):
            seen.update(env)

        def poll(self):
            return 1

        def terminate(self):
            pass

        def wait(self, timeout=None):
            return 1

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 30)
    monkeypatch.setattr(local_server.subprocess, "Popen", Exited)
    with pytest.raises(local_server.ServerError):
        with local_server.serve("model", tmp_path / "server.log"):
            pass
    assert seen and "OPENAI_API_KEY" not in seen and "HF_TOKEN" not in seen and KEY not in seen.values()
    assert seen["HF_HUB_OFFLINE"] == "1" and seen["PATH"] == os.environ["PATH"]


def test_symlinks_in_a_documents_folder_are_skipped_and_listed(tmp_path):
    from memorize.extract import find_documents

    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.md").write_text("The vault code is 4711.")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rules.md").write_text("Boats leave at nine.")
    (docs / "notes.md").symlink_to(outside / "secret.md")
    (docs / "more").symlink_to(outside, target_is_directory=True)
    found, skipped = find_documents([docs])
    assert found == [docs / "rules.md"]
    assert {s["file"] for s in skipped} == {str(docs / "more"), str(docs / "notes.md")}
    assert all("symbolic link" in s["reason"] for s in skipped)
    assert find_documents([docs / "notes.md"])[0] == [docs / "notes.md"]  # named on the command line: read


def test_cards_pushed_to_the_hub_carry_no_local_paths(tmp_path):
    from memorize.publish import dataset_card
    from memorize.training import TrainConfig
    from memorize.training_report import model_card

    config = TrainConfig(base_model=str(tmp_path / "models" / "SmolLM2-135M-Instruct"), data_dir=str(tmp_path / "data"),
                         output_dir=str(tmp_path / "model"), hub_repo="me/ferry")
    metrics = {"hyperparameters": config.model_dump(), "final_train_loss": 0.5, "final_eval_loss": 0.7,
               "selected_epoch": None, "qa_by_epoch": []}
    card = model_card(config, metrics)
    assert str(tmp_path) not in card and "`SmolLM2-135M-Instruct`" in card and "`data`" in card
    report = {"documents": [str(tmp_path / "docs" / "rules.pdf")], "chunks": 1}
    card = dataset_card("me/ferry-qa", report, {"model": str(tmp_path / "models" / "qwen"), "chunk_tokens": 500})
    assert str(tmp_path) not in card and "`rules.pdf`" in card and "| model | qwen |" in card


def test_a_worker_reads_only_the_key_variables_it_allows(monkeypatch):
    from memorize.checks import InputError
    from memorize.llm import client_for

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for runs")
    client_for("http://127.0.0.1:9/v1", "AWS_SECRET_ACCESS_KEY")  # a CLI run: the user's own environment
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "0b9a3c1e-0000-4000-8000-000000000000")  # set by a worker
    with pytest.raises(InputError, match="'AWS_SECRET_ACCESS_KEY' is not allowed on this worker.*MEMORIZE_ALLOWED_KEY_ENVS"):
        client_for("http://127.0.0.1:9/v1", "AWS_SECRET_ACCESS_KEY")
    client_for("http://127.0.0.1:9/v1", "OPENAI_API_KEY")  # the default
    monkeypatch.setenv("MEMORIZE_ALLOWED_KEY_ENVS", "OPENAI_API_KEY, JUDGE_KEY")
    client_for("http://127.0.0.1:9/v1", "JUDGE_KEY")


# --- 9. smaller ----------------------------------------------------------------------------------------------

def test_a_training_run_no_worker_picks_up_is_cancelled_with_a_clear_error(prefect_server):
    from uuid import uuid4

    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.finetune import finetune
    from flows.pipeline import PoolTimeoutError, train_remotely

    pool = f"idle-{uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        deployment = client.create_deployment(client.create_flow(finetune), pool, work_pool_name=pool,
                                              entrypoint="flows/finetune.py:finetune")
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError, match=f"no worker of the '{pool}' pool picked up training run .* "
                                                   f"within 0.0005 h; it was cancelled.*prefect worker start --pool {pool}"):
            train_remotely(pool, {"data_dir": "data", "output_dir": "model"}, pickup_timeout_h=0.0005, poll_s=0.2)
        assert time.monotonic() - started < 30
        (run,) = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment])))
        assert run.state.is_cancelled()


def test_two_first_runs_build_the_default_model_once(tmp_path, monkeypatch):
    from memorize import local_model

    builds = []

    def build(tmp: Path) -> Path:  # stands in for the download and conversion (~1 min)
        builds.append(tmp)
        time.sleep(0.5)
        staging = tmp / "hf"
        staging.mkdir()
        (staging / "config.json").write_text("{}")
        (staging / "model.safetensors").write_bytes(b"weights")
        return staging

    monkeypatch.setenv("MEMORIZE_HOME", str(tmp_path))
    monkeypatch.setattr(local_model, "_build", build)
    with ThreadPoolExecutor(2) as pool:
        folders = list(pool.map(lambda _: local_model.ensure_default_model(progress=False), range(2)))
    assert len(builds) == 1 and folders[0] == folders[1]
    assert (folders[0] / "model.safetensors").read_bytes() == b"weights"


def test_watch_refuses_a_non_positive_interval_and_survives_a_damaged_state(tmp_path, monkeypatch, capsys):
    from memorize.watch import Watcher

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "rules.md").write_text("Boats leave at nine.")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached: the interval is refused first
    args = ["watch", str(tmp_path / "docs"), "--context", CONTEXT, "--out", str(tmp_path / "o"),
            "--state", str(tmp_path / "state.json")]
    for interval in ("0", "-5"):
        assert main([*args, "--interval", interval]) == 2
        assert one_error(capsys).startswith("error: --interval: must be more than 0 seconds")
    state = tmp_path / "state.json"
    emitted = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **event: emitted.append(event))
    rules = str((tmp_path / "docs" / "rules.md").resolve())
    for damage in ('{"cut short', '["a list"]', '{"x.md": 3}'):
        state.write_text(damage)
        assert Watcher(tmp_path / "docs", state, {}).poll() == {rules: "created"}  # announced again
        assert list(json.loads(state.read_text())) == [rules]  # and the state whole again
    assert len(emitted) == 3
