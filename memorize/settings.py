"""Every setting of the three stages, declared once as a typed field with its default and help.

The flows take these models as parameters (Prefect draws a typed form from them), the stage code reads
them, and the CLI builds its flags from them (`flows.cli.add_settings`): a flag is `--` plus the field
name with dashes, unless the field names another `flag`. A `--config` file has one section per model
(`generation`, `training`, `evaluation`) with the field names as keys.

The training defaults are the memorization recipe, chosen from bench/memorization.py (README,
"Fine-tuning" and "Measured figures"; every run in bench/RESULTS.md).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memorize.augment import check_kinds
from memorize.dataset import DEFAULT_TEST_RATIO
from memorize.styles import check_styles


LORA_LEARNING_RATE = 1e-3
# LoRA's best learning rate runs about 10x full fine-tuning's (Schulman et al., "LoRA Without Regret", 2025).
FULL_LEARNING_RATE = 1e-4
# Sampling temperatures when none is asked. The embedded 135M model's pairs rarely survive the filters (charter:
# 38 parsed at 3 temperatures, none kept), while each temperature costs it about 4 minutes on 2 CPU cores.
ENDPOINT_TEMPERATURES = 3
EMBEDDED_TEMPERATURES = 1
# Answers are greedy and cut here: a fact fits in a sentence, and the base model otherwise rambles on (charter,
# 2 CPU cores: its 70 open-book answers took 1.2 min at 64 tokens, 2.1 at 128, with the same verdicts).
ANSWER_MAX_NEW_TOKENS = 64
# Questions answered at once, and padded prompt tokens per batch. On a CPU many short prompts in one batch
# share each decoding step's read of the weights (64 closed-book questions: 19 s at batch 64, 55 s at 8), but
# with long in-context prompts every step attends over each row's long cache (the quick start's 39 of ~1,200
# tokens, shared prefix computed once: 110 s in batches of 13, 215 s in one batch).
ANSWER_BATCH_SIZE, ANSWER_BATCH_TOKENS = 64, 16_384
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"  # where an endpoint's key is read from unless a setting names another


def flag(name: str, **extra) -> dict:
    """json_schema_extra of a field whose command-line flag is not its name."""
    return {"flag": name, **extra}


class _Settings(BaseModel):
    # Frozen: an instance can be a flow parameter's default without being shared-mutable.
    model_config = ConfigDict(frozen=True, extra="forbid")


class GenerationSettings(_Settings):
    """Question generation: documents -> chunks -> question/answer pairs -> chat dataset."""

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, "
                                 "transformers serve); none: serve a small local model on loopback")
    model: str | None = Field(None, description="model name at the endpoint (required with base_url)")
    api_key_env: str = Field(DEFAULT_API_KEY_ENV, description="environment variable holding the endpoint's key")
    temperatures: int | None = Field(None, ge=0, description="number of sampling temperatures, evenly spaced "
                                     f"0.01..1.2 (practice used 9; none: {ENDPOINT_TEMPERATURES} with an endpoint, "
                                     f"{EMBEDDED_TEMPERATURES} with the embedded model); 0: no LLM at all, "
                                     "teacher-free augmentations only")
    questions_per_chunk: int | None = Field(None, ge=1, description="pairs asked per request (none: one per 60 "
                                            "tokens of chunk)")
    styles: list[str] = Field(["mixed"], description="question styles, one request each: mixed simple nuanced "
                              "reversed")
    # `cloze` is opt-in: it repeats the span questions' answers and adds half again to CPU training time.
    augment: list[str] = Field(["passage", "span", "reverse", "clause", "list", "steps", "table"],
                               description="teacher-free pairs built from the documents' own text: passage span "
                               "reverse cloze (prose), clause list steps table (numbered clauses, lists, numbered "
                               "steps, tables), or none",
                               json_schema_extra={"metavar": "KIND"})
    abstain_share: float = Field(0.1, ge=0, lt=1, description="share of the training pairs that answer in-domain "
                                 "questions the documents leave open (a person's age, a place's founding year, a "
                                 "price never given) with one sentence, \"That is not stated in <context>.\", so "
                                 "that the model learns to say so (0: off)")
    chunk_tokens: int = Field(500, ge=32, description="chunk size in tokens")
    chunk_overlap: int = Field(40, ge=0, description="overlap between chunks in tokens")
    # One pair per row: at batch size 1, five times the optimizer steps of 5 pairs per row for the same
    # text; held-out accuracy 19 % -> 40 % on the reference set (twice the CPU time).
    pairs_per_row: int = Field(1, ge=1, description="question/answer pairs per chat row")
    test_ratio: float = Field(DEFAULT_TEST_RATIO, gt=0, lt=1, description="share of pairs held out for testing "
                              "(1/11: about 10:1)")
    seed: int = Field(0, description="seed of the train/test split")
    concurrency: int = Field(8, ge=1, description="LLM requests in flight at once")
    concurrency_limit: str | None = Field(None, description="name of a Prefect global concurrency limit to share "
                                          "with other runs (opt-in)")
    request_timeout: float = Field(120.0, gt=0, description="seconds per LLM request",
                                   json_schema_extra=flag("timeout"))
    retries: int = Field(4, ge=0, description="retries on 429/5xx/timeouts/connection errors")
    retry_delay: float = Field(2.0, ge=0, description="seconds before the first retry, doubling after")
    # Below 1: a run whose every request failed (a wrong key: 401 on each) always stops before training.
    max_failed_share: float = Field(0.5, ge=0, lt=1, description="share of the LLM requests sent that may fail "
                                    "(endpoint errors after retries; unparseable replies do not count) before the "
                                    "run stops with an error, writing no dataset and training nothing")
    structured: bool = Field(True, description="ask for replies as JSON of a fixed schema (structured output, "
                             "`response_format`); an endpoint that refuses it is asked for plain text")
    parse_attempts: int = Field(3, ge=1, description="times a request is asked when its reply cannot be parsed")
    price_per_1k: float = Field(0.0, ge=0, description="price per 1K tokens for the cost estimate")
    hub_repo: str | None = Field(None, description="push the dataset to this Hugging Face dataset repo "
                                 "(token from HF_TOKEN)")
    public: bool = Field(False, description="make what is pushed to the Hub public (default private)")

    @field_validator("styles")
    @classmethod
    def _styles(cls, v: list[str]) -> list[str]:
        return check_styles(v)

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: list[str]) -> list[str]:
        return [] if list(v) == ["none"] else check_kinds(v)


class TrainSettings(_Settings):
    """Fine-tuning: LoRA/QLoRA on a dataset folder's train.jsonl, keeping the epoch that answers best."""

    qlora: bool = Field(False, description="4-bit NF4 base weights + paged optimizer (needs CUDA)")
    # r64/alpha128 on the charter's strong set: paraphrased+reversed 67 % (r16: 53-60 %) but general -20 of 400.
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    # The attention and MLP projections of Llama-style models: what peft's "all-linear" picks there,
    # spelled out so the adapter config is explicit and works with vLLM's LoRA loader. The MLP alone
    # (gate/up/down) learned less and forgot less on the charter's strong set (2 seeds: paraphrased+reversed
    # 53 vs 57 %, general -1.8 vs -3.0 of 400), on the same trade-off line as the adapter scale.
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      description="LoRA target modules")
    # Charter benchmark, general knowledge on 400 questions: full fine-tunes of the 135M model lost 5-10 points
    # (5 models, mean 7.6) where LoRA adapters lost 3-7 (5 models, mean 4.7) for about the same held-out recall
    # through `memorize run` (40 % vs 33-40 %); full learns more from a strong teacher's data (73 vs 60-67 %).
    full: bool = Field(False, description="train every weight instead of a LoRA adapter, saved whole as full/ "
                       "(small models only: it holds 5-6x the model in memory)")
    # LoRA r16/alpha32: 1e-4 barely moved held-out answers. Every weight moving needs a smaller step.
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (none: "
                                        f"{LORA_LEARNING_RATE:g} for LoRA, {FULL_LEARNING_RATE:g} for full "
                                        "fine-tuning)")
    # 5 epochs forgot 12 points; 2 at lr 2e-3 recalled as much in 60 % of the time but forgot 8.3 of 400 (3 at 1e-3: ~4).
    epochs: float = Field(3.0, gt=0, description="passes over the training rows")
    batch_size: int = Field(1, ge=1, description="rows per step (small batches memorize better)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    lr_scheduler: str = Field("cosine", description="transformers learning-rate schedule")
    max_length: int = Field(512, ge=16, description="tokens per training row")
    neftune_alpha: float | None = Field(None, gt=0, description="NEFTune noise on embeddings (off by default)")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    bf16: bool | None = Field(None, description="bf16 weights and training (none: where the hardware supports it)")
    chat_template: str | None = Field(None, description="Jinja template (file or text) for tokenizers without one")
    merge: bool = Field(False, description="also save the adapter merged into a full model")
    seed: int = Field(42, description="training seed", json_schema_extra=flag("train_seed"))
    # A model soup (Wortsman et al., 2022). Charter, x0.9, 73 paraphrased or reversed questions, general n=400:
    # strong pairs, 3 seeds averaged 63 % at +1.0 (pairs 58-60 % at +1.0..-0.25; alone 53-58 % at -4.5..-0.75);
    # teacher-free rows, 3 seeds 33 % at -1.75 (alone 27 / 29 / 30 % at 0 / -4.3 / -4.3). Averaging one run's
    # epoch checkpoints gave nothing. Default 1: each seed is a whole training run (side by side on a CPU:
    # 2 seeds cost 1.3x one run on 2 cores, 3 seeds 2.3x).
    seeds: int = Field(1, ge=1, description="train this many times, from --train-seed, +1, ..., and keep the "
                       "average of the updates (a model soup: remembered more and forgot less on the charter; "
                       "on a CPU the runs train side by side, 2 in 1.3x one run's time on 2 cores; on a GPU "
                       "one after another)")
    eval_steps: int | None = Field(None, ge=1, description="steps between validation losses (none: each epoch)")
    select_epoch: bool = Field(True, description="keep the epoch whose adapter answers the test split's questions "
                               "best, closed-book (ignored with max_steps)")
    max_steps: int = Field(-1, description="stop after this many steps (smoke tests); overrides epochs")
    logging_steps: int = Field(5, ge=1, description="steps between logged training losses")
    hub_repo: str | None = Field(None, description="push the adapter with a model card to this Hub repo "
                                 "(token from HF_TOKEN)", json_schema_extra=flag("hub_model_repo"))
    hub_public: bool = Field(False, description="make what is pushed to the Hub public (default private)",
                             json_schema_extra=flag("public"))
    # Off, the strong set forgot 17 points (n=60); 0.3 (cycling the 160 prompts then shipped ~4 times) forgot
    # more than 0.2 (-6.0 of 400 at x0.8, against -1.3..-3.8). The 512 shipped now fill 0.2 without repeats.
    replay_ratio: float = Field(0.2, ge=0, lt=1, description="share of training turns replaying the base model's "
                                "own answers to general prompts, against forgetting (0: off)")
    # Scaling the update after training steps from the fine-tuned weights back toward the base, like
    # WiSE-FT's weight interpolation. Charter benchmark, 512-prompt replay list, three seeds each, x0.9 / x0.8:
    # reference-set pairs 57 / 52 % of 73 paraphrased or reversed questions, general (n=400) -2.6 / -0.8;
    # teacher-free pairs (what `memorize run` trains on offline) 29 / 26 %, -2.8 / -0.8; every run within 5 points.
    adapter_scale: float = Field(0.9, gt=0, le=2, description="keep this share of the trained update (the LoRA "
                                 "alpha; with --full, base + share x (tuned - base)): below 1 keeps less of what was "
                                 "learned and more of what the base knew")
    replay_prompts: str | None = Field(None, description="JSONL of {\"prompt\": ...} general instructions for "
                                       "replay (none: the shipped list)")

    @model_validator(mode="after")
    def _full(self):
        if self.full and self.qlora:
            raise ValueError("full (train every weight) and qlora (weights frozen in 4 bits) exclude each other")
        if self.full and self.merge:
            raise ValueError("merge has nothing to merge with full: full/ is already a whole model")
        return self


class EvalSettings(_Settings):
    """Evaluation: base vs fine-tuned vs in-context answers to held-out and your own questions."""

    questions: str | None = Field(None, description="your questions: JSONL or CSV with question, answer, optional "
                                  "must (list of alternative groups) and kind")
    judge_base_url: str | None = Field(None, description="OpenAI-compatible endpoint of an LLM judge for answers "
                                       "without `must` keys")
    judge_model: str | None = Field(None, description="model name of the judge")
    judge_api_key_env: str = Field(DEFAULT_API_KEY_ENV, description="environment variable holding the judge's key")
    top_k: int = Field(3, ge=1, description="chunks retrieved (BM25) for the in-context ceiling")
    max_test_questions: int = Field(50, ge=0, description="held-out generated pairs to ask")
    batch_size: int = Field(ANSWER_BATCH_SIZE, ge=1, description="questions answered at once (long in-context "
                            f"prompts in smaller batches: at most {ANSWER_BATCH_TOKENS:,} prompt tokens)",
                            json_schema_extra=flag("eval_batch_size"))
    max_new_tokens: int = Field(ANSWER_MAX_NEW_TOKENS, ge=1, description="longest answer in tokens")
    include_general: bool = Field(True, description="ask the general-knowledge questions that measure forgetting")
