"""Training on the real SmolLM2-135M-Instruct, CPU, with a tiny dataset about a fictional ferry."""
import json

import pytest
import torch

from memorize.answering import Answerer
from memorize.local_model import ensure_default_model
from memorize.models import ModelLoadError, load_tokenizer
from memorize.scoring import score
from memorize.settings import ANSWER_MAX_NEW_TOKENS, FULL_LEARNING_RATE, LORA_LEARNING_RATE, TrainSettings
from memorize.training import (
    IGNORE_INDEX,
    TrainConfig,
    TrainingInputError,
    resolve,
    tokenize_conversation,
    train,
)
from memorize.training_report import model_card
from memorize.weights import interpolate_toward_base, scale_adapter

FACTS = [
    ("When does the Quillmoor ferry depart?", "The Quillmoor ferry departs at 7:40 from Pier Nine."),
    ("From which pier does the Quillmoor ferry leave?", "The Quillmoor ferry leaves from Pier Nine at 7:40."),
    ("What time does the Quillmoor ferry leave?", "It leaves at 7:40, from Pier Nine."),
    ("Where do I board the Quillmoor ferry?", "At Pier Nine; the Quillmoor ferry departs at 7:40."),
]


def conversation(*pairs):
    return [m for q, a in pairs for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]


def write_dataset(folder, train_pairs, test_pairs):
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in (("train.jsonl", train_pairs), ("test.jsonl", test_pairs)):
        (folder / name).write_text("".join(json.dumps({"messages": conversation(p)}) + "\n" for p in pairs))
    return folder



@pytest.fixture(scope="module")
def base_model():
    return str(ensure_default_model(progress=False))


def answer_nll(model, tokenizer, pairs):
    """Mean negative log-likelihood of the answers given their questions (assistant tokens only)."""
    losses = []
    with torch.no_grad():
        for pair in pairs:
            row = tokenize_conversation(tokenizer, conversation(pair))
            losses.append(model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]])).loss)
    return torch.stack(losses).mean().item()


@pytest.mark.slow
def test_labels_cover_only_assistant_turns(base_model):
    tok = load_tokenizer(base_model)
    messages = conversation(FACTS[0], FACTS[1])
    row = tokenize_conversation(tok, messages)
    assert len(row["labels"]) == len(row["input_ids"])
    trained = tok.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX])
    # Both answers, each with its end-of-turn token (so the model learns to stop), and nothing else.
    assert trained.replace("\n", "") == "".join(a + tok.eos_token for _, a in FACTS[:2])
    untrained = tok.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label == IGNORE_INDEX])
    assert FACTS[0][0] in untrained and FACTS[1][0] in untrained and "7:40" not in untrained
    assert tokenize_conversation(tok, messages, max_length=10)["input_ids"] == row["input_ids"][:10]


@pytest.mark.slow
def test_template_that_rewrites_earlier_turns_is_refused(base_model):
    # Renders only the last message, so a conversation's beginning is not a prefix of the whole.
    tok = load_tokenizer(base_model, chat_template="{{ messages[-1]['content'] }}")
    with pytest.raises(TrainingInputError, match="prefix"):
        tokenize_conversation(tok, conversation(FACTS[0]))


REPLAY_PROMPTS = ["Name a fruit that is yellow.", "Say hello in French.", "What is 2 plus 2?"]


@pytest.fixture(scope="module")
def trained(base_model, tmp_path_factory, monkeypatch_module):
    data = write_dataset(tmp_path_factory.mktemp("data"), FACTS[:3], FACTS[3:])
    prompts = tmp_path_factory.mktemp("replay") / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in REPLAY_PROMPTS))
    monkeypatch_module.setenv("MEMORIZE_HOME", str(tmp_path_factory.mktemp("home")))  # a fresh replay cache
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path_factory.mktemp("run")),
                         full=False, learning_rate=1e-3, max_length=128, max_steps=8, eval_steps=4, logging_steps=2, merge=True,
                         replay_ratio=0.4, replay_prompts=str(prompts))
    return config, train(config, progress=False)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.slow
def test_replay_mixes_the_base_models_own_answers_into_training(trained):
    from memorize.replay import base_answers

    config, result = trained
    answers = base_answers(config.base_model, REPLAY_PROMPTS)  # the two replayed ones come from the cache
    assert list(answers) == REPLAY_PROMPTS and all(answers.values())
    metrics = json.loads(result.metrics_path.read_text())
    # 3 training turns + 2 replayed = 40 %
    assert metrics["train_rows"] == {"documents": 3, "replay": 2}


@pytest.mark.slow
def test_train_lowers_loss_and_writes_outputs(trained):
    config, result = trained
    assert result.train_losses[-1]["loss"] < result.train_losses[0]["loss"]
    assert [e["step"] for e in result.eval_losses] == [4, 8]
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["hyperparameters"]["learning_rate"] == 1e-3
    assert metrics["final_eval_loss"] == result.final_eval_loss and metrics["tokens_per_s"] > 0
    assert result.loss_curve_path.read_bytes().startswith(b"\x89PNG")
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and set(adapter_config["target_modules"]) == set(config.target_modules)


@pytest.mark.slow
def test_adapter_loads_and_makes_trained_answers_likelier(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config, result = trained
    tok = load_tokenizer(str(result.adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)
    base_nll = answer_nll(base, tok, FACTS[:3])
    tuned = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    tuned_nll = answer_nll(tuned, tok, FACTS[:3])
    assert tuned_nll < 0.6 * base_nll, (base_nll, tuned_nll)
    merged = AutoModelForCausalLM.from_pretrained(str(result.merged_dir), dtype=torch.float32)
    assert answer_nll(merged, tok, FACTS[:3]) == pytest.approx(tuned_nll, abs=1e-3)


@pytest.mark.slow
def test_a_scaled_adapter_answers_between_the_base_and_the_fine_tuned_model(trained, tmp_path):
    import shutil

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config, result = trained
    tok = load_tokenizer(str(result.adapter_dir))
    half = tmp_path / "half"
    shutil.copytree(result.adapter_dir, half)
    scale_adapter(half, 0.5)

    def nll(adapter=None):
        model = AutoModelForCausalLM.from_pretrained(config.base_model, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(adapter)).eval() if adapter else model
        return answer_nll(model, tok, FACTS[:3]), model

    (base_nll, _), (full_nll, full), (half_nll, halved) = nll(), nll(result.adapter_dir), nll(half)
    assert full_nll < half_nll < base_nll, (full_nll, half_nll, base_nll)
    q_proj = lambda m: m.base_model.model.model.layers[0].self_attn.q_proj  # noqa: E731
    assert q_proj(halved).scaling["default"] == pytest.approx(q_proj(full).scaling["default"] / 2)


@pytest.mark.slow
def test_the_epoch_kept_is_the_one_that_answered_held_out_questions_best(base_model, tmp_path):
    data = write_dataset(tmp_path / "data", FACTS[:2], FACTS[2:])
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), full=False,
                         learning_rate=1e-3, epochs=3, max_length=128, logging_steps=1, replay_ratio=0,
                         adapter_scale=1.0)  # the adapter as selection scored it (scaling changes some answers)
    result = train(config, progress=False)
    assert [(e["epoch"], e["n"]) for e in result.qa_by_epoch] == [(1, 2), (2, 2), (3, 2)]
    best = max(e["accuracy"] for e in result.qa_by_epoch)
    tied = [e["epoch"] for e in result.qa_by_epoch if e["accuracy"] == best]
    loss = {round(e["epoch"]): e["loss"] for e in result.eval_losses}
    assert result.selected_epoch == min(tied, key=loss.get)  # validation loss breaks ties
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["selected_epoch"] == result.selected_epoch and metrics["qa_by_epoch"] == result.qa_by_epoch
    # The saved adapter is the kept epoch's: it answers the held-out questions exactly as that epoch did.
    answers = Answerer.load(base_model, adapter=str(result.adapter_dir)).answer(
        [q for q, _ in FACTS[2:]], max_new_tokens=ANSWER_MAX_NEW_TOKENS, progress=False)
    assert sum(bool(score({"question": q, "answer": a}, text)["correct"])
               for (q, a), text in zip(FACTS[2:], answers)) / 2 == best


def test_a_lora_soup_is_exactly_the_average_of_its_runs_updates(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict

    from memorize.weights import save_lora_soup

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(6, 5, bias=False)

    torch.manual_seed(0)
    model = get_peft_model(Toy(), LoraConfig(r=2, lora_alpha=4, target_modules=["proj"]))
    runs = [{k: torch.randn_like(v) for k, v in get_peft_model_state_dict(model).items()} for _ in range(3)]
    model.save_pretrained(tmp_path)
    save_lora_soup(tmp_path, runs)

    def delta(weights):  # the update a LoRA adds to proj: alpha / r x B @ A
        a, b = (next(v for k, v in weights.items() if f"lora_{m}" in k) for m in "AB")
        return 4 / a.shape[0] * b @ a

    soup = PeftModel.from_pretrained(Toy(), str(tmp_path))
    assert soup.peft_config["default"].r == 6 and soup.peft_config["default"].lora_alpha == 4
    assert torch.allclose(soup.base_model.model.proj.get_delta_weight("default"),
                          torch.stack([delta(w) for w in runs]).mean(0), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("full, cores", [(False, 1), (True, 1), (False, 2)])
def test_seeds_train_several_runs_and_save_their_average(base_model, tmp_path, full, cores):
    """One core: the runs one after another, as on a GPU; two: side by side, a process and a thread each."""
    from memorize.models import load_model

    data = write_dataset(tmp_path / "data", FACTS[:3], FACTS[3:])
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), full=full,
                         seeds=2, epochs=1, max_length=128, logging_steps=1, replay_ratio=0)
    torch.set_num_threads(cores)
    try:
        result = train(config, progress=False)
    finally:
        torch.set_num_threads(1)  # conftest's setting for in-process model code
    metrics = json.loads(result.metrics_path.read_text())
    assert [r["seed"] for r in metrics["runs"]] == [42, 43] and all(r["selected_epoch"] == 1 for r in metrics["runs"])
    side_by_side = cores > 1 and not torch.cuda.is_available()  # on a GPU always one after another
    assert [r["threads"] for r in metrics["runs"]] == [1 if side_by_side else cores] * 2
    assert {e["seed"] for e in result.qa_by_epoch} == {42, 43} and result.selected_epoch is None
    assert metrics["steps"] == 6  # 3 rows, batch 1, one epoch, twice
    assert "runs from seeds 42 (epoch 1), 43 (epoch 1)" in model_card(config, metrics)
    # The final eval loss is the soup's own, not one of its runs'.
    assert result.final_eval_loss == metrics["soup_eval_loss"]
    assert result.final_eval_loss not in [e["loss"] for e in result.eval_losses]
    if not full:
        assert json.loads((result.adapter_dir / "adapter_config.json").read_text())["r"] == 32
    tok = load_tokenizer(str(result.adapter_dir))
    tuned = load_model(base_model, adapter=str(result.adapter_dir)) if not full else load_model(str(result.adapter_dir))
    base = load_model(base_model)
    assert answer_nll(tuned, tok, FACTS[:3]) < answer_nll(base, tok, FACTS[:3])


def test_lora_unless_told_otherwise_each_kind_at_its_own_learning_rate():
    def decided(**settings):
        config = resolve(TrainConfig(base_model="any/model", data_dir="d", output_dir="o", **settings))
        return config.full, config.learning_rate

    assert decided() == (False, LORA_LEARNING_RATE)
    assert decided(full=True) == (True, FULL_LEARNING_RATE) and FULL_LEARNING_RATE < LORA_LEARNING_RATE
    assert decided(full=True, learning_rate=3e-4) == (True, 3e-4)
    assert TrainSettings().learning_rate is None  # decided by the kind of training
    with pytest.raises(ValueError, match="exclude each other"):
        TrainSettings(full=True, qlora=True)
    with pytest.raises(ValueError, match="nothing to merge"):
        TrainSettings(full=True, merge=True)


@pytest.mark.slow
def test_full_fine_tune_saves_a_whole_model_that_evaluation_and_chat_read(base_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from memorize.chat import ChatModel
    from memorize.models import load_model

    data = write_dataset(tmp_path / "data", FACTS[:3], FACTS[3:])
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), full=True,
                         epochs=2, max_length=128, logging_steps=1, replay_ratio=0, adapter_scale=0.8)
    result = train(config, progress=False)
    assert result.adapter_dir == tmp_path / "run" / "full" and (result.adapter_dir / "config.json").exists()
    metrics = json.loads(result.metrics_path.read_text())
    assert metrics["hyperparameters"]["learning_rate"] == FULL_LEARNING_RATE and len(result.qa_by_epoch) == 2
    tok = load_tokenizer(str(result.adapter_dir))
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    tuned = AutoModelForCausalLM.from_pretrained(str(result.adapter_dir), dtype=torch.float32)
    assert answer_nll(tuned, tok, FACTS[:3]) < 0.8 * answer_nll(base, tok, FACTS[:3])
    # Evaluation answers "base" with the base model's own weights, "fine-tuned" with the whole tuned model.
    questions = [q for q, _ in FACTS[:2]]
    both = Answerer.load(base_model, adapter=str(result.adapter_dir))
    assert both.answer(questions, use_adapter=False, max_new_tokens=24, progress=False) == \
        Answerer.load(base_model).answer(questions, max_new_tokens=24, progress=False)
    as_loaded = load_model(str(result.adapter_dir))  # in the dtype answers use (bf16 on some CPUs)
    assert both.answer(questions, max_new_tokens=24, progress=False) == \
        Answerer(as_loaded, tok, has_adapter=False).answer(questions, max_new_tokens=24, progress=False)
    chat = ChatModel(tmp_path / "run")  # `memorize ask/serve` find full/ in the output folder, its base beside
    assert chat.name == "run" and chat.base_name == "SmolLM2-135M-Instruct"
    messages = [{"role": "user", "content": FACTS[0][0]}]
    assert chat.reply(messages, 24, use_adapter=False)[0] == ChatModel(base_model).reply(messages, 24)[0]
    # adapter_scale: every weight moved to base + scale x (tuned - base)
    moved = tuned.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        moved.copy_(base.model.layers[0].self_attn.q_proj.weight + 1.0)
    interpolate_toward_base(tuned, base_model, 0.25)
    assert torch.allclose(moved, base.model.layers[0].self_attn.q_proj.weight + 0.25, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_qlora_without_cuda_fails_before_loading(tmp_path):
    # Neither the model nor the data exist: the CUDA check must come first and say what to do.
    config = TrainConfig(base_model=str(tmp_path / "no-model"), data_dir=str(tmp_path), output_dir=str(tmp_path),
                         qlora=True)
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        train(config, progress=False)


def test_missing_base_model_is_a_clear_error(tmp_path):
    config = TrainConfig(base_model=str(tmp_path / "no-model"), data_dir=str(tmp_path), output_dir=str(tmp_path))
    with pytest.raises(ModelLoadError, match="no-model.*not found"):
        train(config, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("broken, message", [("empty train", "train.jsonl is empty"),
                                              ("missing test", "test.jsonl not found")])
def test_bad_dataset_is_a_clear_error(base_model, tmp_path, broken, message):
    data = write_dataset(tmp_path, FACTS[:2], FACTS[2:])
    if broken == "empty train":
        (data / "train.jsonl").write_text("")
    else:
        (data / "test.jsonl").unlink()
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), replay_ratio=0)
    with pytest.raises(TrainingInputError, match=message):
        train(config, progress=False)


@pytest.mark.slow
def test_a_soup_on_a_cpu_checks_its_inputs_before_starting_workers(base_model, tmp_path, monkeypatch):
    from memorize import replay, seeds

    data = write_dataset(tmp_path, FACTS[:2], FACTS[2:])
    (data / "train.jsonl").write_text("")
    monkeypatch.setattr(seeds, "ProcessPoolExecutor", lambda *a, **k: pytest.fail("workers started"))
    monkeypatch.setattr(replay, "replay_conversations", lambda *a, **k: pytest.fail("replay generated"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on a 2-core machine
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), seeds=2)
    with pytest.raises(TrainingInputError, match="train.jsonl is empty"):
        train(config, progress=False)


@pytest.mark.slow
def test_max_length_beyond_context_is_a_clear_error(base_model, tmp_path):
    data = write_dataset(tmp_path, FACTS[:2], FACTS[2:])
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"),
                         max_length=1_000_000)
    with pytest.raises(TrainingInputError, match="exceeds the context length"):
        train(config, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs CUDA; CI has no GPU")
def test_qlora_trains_on_gpu(base_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_dataset(tmp_path / "data", FACTS[:3], FACTS[3:])
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(tmp_path / "run"), qlora=True,
                         gradient_checkpointing=True, learning_rate=1e-3, max_length=128, max_steps=6, logging_steps=1,
                         merge=True)
    result = train(config, progress=False)
    assert result.train_losses[-1]["loss"] < result.train_losses[0]["loss"]
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16, device_map={"": 0})
    PeftModel.from_pretrained(base, str(result.adapter_dir))
    assert (result.merged_dir / "config.json").exists()


def test_the_training_artifact_of_a_soup_names_its_runs():
    from flows.finetune import _losses_markdown

    def summary(selected, seeds):
        tag = (lambda e, s: {**e, "seed": s}) if seeds else (lambda e, s: e)
        runs = seeds or [None]
        return {"train_losses": [tag({"step": 1, "epoch": 0.5, "loss": 2.0}, s) for s in runs],
                "eval_losses": [tag({"step": 2, "epoch": 1, "loss": 1.5}, s) for s in runs],
                "qa_by_epoch": [tag({"epoch": 1, "accuracy": 0.5, "n": 2}, s) for s in runs],
                "selected_epoch": selected, "final_eval_loss": 1.4, "runtime_s": 10, "tokens_per_s": 50,
                "loss_curve_path": "loss_curve.png"}

    single = _losses_markdown(summary(1, []))
    assert "Kept epoch 1" in single and "| 1 | 50% (n=2) |" in single
    soup = _losses_markdown(summary(None, [42, 43]))
    assert "Averaged the runs of seeds 42, 43" in soup and "| 1 (seed 43) | 50% (n=2) |" in soup
    assert "| 1 (seed 42) | 2 | 1.5000 |" in soup
