"""Every setting of the three stages, declared once as a typed field with its default and help.

The flows take these models as parameters (Prefect draws a typed form from them), the stage code reads
them, and the CLI builds its flags from them (`flows.cli_options.add_settings`): a flag is `--` plus the field
name with dashes, unless the field names another `flag`. A `--config` file has one section per model
(`generation`, `training`, `evaluation`) with the field names as keys. A setting whose default is none is
decided when the settings are read (`resolved()`); OUT/config.yaml records the decided value.

docs/configuration.md is generated from this file (scripts/config_docs.py); the measurements behind the
defaults are in docs/results.md.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memorize.augment import check_kinds
from memorize.dataset import DEFAULT_TEST_RATIO
from memorize.styles import check_styles

# Peak learning rates when none is given: LoRA's best rate runs about ten times full fine-tuning's.
LORA_LEARNING_RATE = 1e-3
FULL_LEARNING_RATE = 1e-4
# Sampling temperatures when none is given: an endpoint, or the embedded model (slow, and its pairs are weak).
ENDPOINT_TEMPERATURES = 3
EMBEDDED_TEMPERATURES = 1
# Answers are greedy and cut here: a fact fits in a sentence.
ANSWER_MAX_NEW_TOKENS = 64
# Questions answered at once, and padded prompt tokens per batch (long in-context prompts go in smaller batches).
ANSWER_BATCH_SIZE, ANSWER_BATCH_TOKENS = 64, 16_384
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"  # where an endpoint's key is read from unless a setting names another


def flag(name: str, **extra) -> dict:
    """json_schema_extra of a field whose command-line flag is not its name."""
    return {"flag": name, **extra}


class _Settings(BaseModel):
    # Frozen: an instance can be a flow parameter's default without being shared-mutable.
    model_config = ConfigDict(frozen=True, extra="forbid")

    def resolved(self):
        """These settings with every value that is decided at run time decided (none here)."""
        return self


class GenerationSettings(_Settings):
    """Question generation: documents -> chunks -> question/answer pairs -> chat dataset."""

    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, "
                                 "transformers serve); none: serve a small local model on loopback")
    model: str | None = Field(None, description="model name at the endpoint (required with base_url)")
    api_key_env: str = Field(DEFAULT_API_KEY_ENV, description="environment variable holding the endpoint's key")
    temperatures: int | None = Field(None, ge=0, description="how many sampling temperatures, evenly spaced "
                                     "0.01..1.2, each chunk is asked at (more angles on every fact, one request "
                                     f"each; none: {ENDPOINT_TEMPERATURES} with an endpoint, {EMBEDDED_TEMPERATURES} "
                                     "with the embedded model); 0: no LLM at all, teacher-free augmentations only")
    questions_per_chunk: int | None = Field(None, ge=1, description="pairs asked per request (none: one per 60 "
                                            "tokens of chunk)")
    styles: list[str] = Field(["mixed"], description="question styles, one request each: mixed simple nuanced "
                              "reversed")
    augment: list[str] = Field(["passage", "span", "reverse", "clause", "list", "steps", "table"],
                               description="teacher-free pairs built from the documents' own text: passage span "
                               "reverse cloze (prose; cloze is opt-in), clause list steps table (numbered clauses, "
                               "lists, numbered steps, tables), or none",
                               json_schema_extra={"metavar": "KIND"})
    abstain_share: float = Field(0.0, ge=0, lt=1, description="share of the training pairs that answer in-domain "
                                 "questions the documents leave open (a person's age, a place's founding year, a "
                                 "price never given) with one sentence, \"That is not stated in <context>.\", so "
                                 "that the model learns to say so (0: off; 0.1 is the measured opt-in setting: "
                                 "see docs/results.md for what it costs a small model)")
    chunk_tokens: int = Field(500, ge=32, description="largest chunk in tokens; documents are cut at sentence "
                              "boundaries, never across a page, slide, sheet or top-level section")
    chunk_overlap: int = Field(40, ge=0, description="tokens a chunk repeats from the end of the one before")
    pairs_per_row: int = Field(1, ge=1, description="question/answer pairs per chat row (one pair per row gives "
                               "the most optimizer steps for the same text)")
    test_ratio: float = Field(DEFAULT_TEST_RATIO, gt=0, lt=1, description="share of pairs held out for testing "
                              "(1/11: about 10:1)")
    seed: int = Field(0, description="seed of the train/test split (each pair's side is decided from a hash "
                      "of the pair and this seed)")
    concurrency: int = Field(8, ge=1, description="LLM requests in flight at once")
    concurrency_limit: str | None = Field(None, description="name of a Prefect global concurrency limit to share "
                                          "with other runs (opt-in)")
    request_timeout: float = Field(120.0, gt=0, description="seconds per LLM request",
                                   json_schema_extra=flag("timeout"))
    retries: int = Field(4, ge=0, description="retries on 429/5xx/timeouts/connection errors")
    retry_delay: float = Field(2.0, ge=0, description="seconds before the first retry, doubling after")
    # Below 1: a run whose every request failed (a wrong key: 401 on each) always stops.
    max_failed_share: float = Field(0.5, ge=0, lt=1, description="share of the LLM requests sent that may fail "
                                    "(endpoint errors after retries; unparseable replies do not count) before the "
                                    "run stops with an error, writing no dataset and training nothing")
    structured: bool = Field(True, description="ask for replies as JSON of a fixed schema (structured output, "
                             "`response_format`); an endpoint that refuses it is asked for plain text")
    parse_attempts: int = Field(3, ge=1, description="times a request is asked when its reply cannot be parsed")
    price_per_1k: float = Field(0.0, ge=0, description="price per 1K tokens, for the cost estimate printed "
                                "before any request")
    hub_repo: str | None = Field(None, description="push the dataset to this Hugging Face dataset repo "
                                 "(token from HF_TOKEN)")
    public: bool = Field(False, description="make what is pushed to the Hub public (default private)")

    def resolved(self) -> GenerationSettings:
        """These settings with the temperature count decided: what a run uses and config.yaml records."""
        if self.temperatures is not None:
            return self
        return self.model_copy(update={"temperatures": EMBEDDED_TEMPERATURES if self.base_url is None
                                       else ENDPOINT_TEMPERATURES})

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
    lora_r: int = Field(16, ge=1, description="LoRA rank: the size of the trained update matrices (a larger rank "
                        "learns more and forgets more)")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha: the update is scaled by alpha / r")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA layers' input while training")
    # The attention and MLP projections of Llama-style models: what peft's "all-linear" picks there,
    # spelled out so the adapter config is explicit and works with vLLM's LoRA loader.
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      description="the base model's linear layers that get a LoRA adapter "
                                      "(default: the attention and MLP projections of Llama-style models)")
    full: bool = Field(False, description="train every weight instead of a LoRA adapter, saved whole as full/ "
                       "(small models only: it holds 5-6x the model in memory)")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (none: "
                                        f"{LORA_LEARNING_RATE:g} for LoRA, {FULL_LEARNING_RATE:g} for full "
                                        "fine-tuning)")
    epochs: float = Field(3.0, gt=0, description="passes over the training rows (the best epoch is kept, see "
                          "select_epoch)")
    batch_size: int = Field(1, ge=1, description="rows per optimizer step (small batches memorize better)")
    grad_accum: int = Field(1, ge=1, description="batches whose gradients are added up before each optimizer step")
    lr_scheduler: str = Field("cosine", description="learning-rate schedule: a transformers scheduler name "
                              "(cosine, linear, constant, ...)")
    max_length: int = Field(512, ge=16, description="longest training row in tokens; longer rows are cut (must fit "
                            "the model's context)")
    neftune_alpha: float | None = Field(None, gt=0, description="NEFTune: noise of this strength added to the "
                                        "embeddings while training (none: off)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less "
                                         "memory, more compute")
    bf16: bool | None = Field(None, description="train in bf16 (none: bf16 on a GPU that supports it, else fp16 "
                              "on a GPU, fp32 on a CPU)")
    chat_template: str | None = Field(None, description="Jinja chat template (a file or the text) for tokenizers "
                                      "without one; evaluation and ask/serve need the same")
    merge: bool = Field(False, description="also save the adapter merged into the base model, as merged/ (a plain "
                        "Transformers folder)")
    seed: int = Field(42, description="seed of training (initialisation, order of the rows, replay sample)",
                      json_schema_extra=flag("train_seed"))
    seeds: int = Field(1, ge=1, description="train this many times, from --train-seed, +1, ..., and save the "
                       "average of the updates (a model soup: remembers more and forgets less than one run; on a "
                       "CPU the runs train side by side, on a GPU one after another)")
    eval_steps: int | None = Field(None, ge=1, description="steps between validation losses (none: at the end of "
                                   "each epoch)")
    select_epoch: bool = Field(True, description="keep the epoch whose adapter answers the test split's questions "
                               "best, closed-book (ignored with max_steps)")
    max_steps: int = Field(-1, description="stop after this many optimizer steps, overriding epochs (for smoke "
                           "tests; -1: off)")
    logging_steps: int = Field(5, ge=1, description="steps between logged training losses")
    hub_repo: str | None = Field(None, description="push the adapter with a model card to this Hub repo "
                                 "(token from HF_TOKEN)", json_schema_extra=flag("hub_model_repo"))
    hub_public: bool = Field(False, description="make what is pushed to the Hub public (default private)",
                             json_schema_extra=flag("public"))
    replay_ratio: float = Field(0.2, ge=0, lt=1, description="share of training turns replaying the base model's "
                                "own answers to general prompts, against forgetting (0: off)")
    # Scaling the update after training steps from the fine-tuned weights back toward the base, like
    # WiSE-FT's weight interpolation.
    adapter_scale: float = Field(0.9, gt=0, le=2, description="keep this share of the trained update (the LoRA "
                                 "alpha; with --full, base + share x (tuned - base)): below 1 keeps less of what was "
                                 "learned and more of what the base knew")
    replay_prompts: str | None = Field(None, description="JSONL of {\"prompt\": ...} general instructions whose "
                                       "base-model answers are replayed (none: the 512 shipped)")

    def resolved(self):
        """These settings with the learning rate decided by the kind of training: what a run uses and
        config.yaml records."""
        if self.learning_rate is not None:
            return self
        return self.model_copy(update={"learning_rate": FULL_LEARNING_RATE if self.full else LORA_LEARNING_RATE})

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
    top_k: int = Field(3, ge=1, description="chunks retrieved (BM25) for the systems with retrieval: base in "
                       "context and fine-tuned + retrieval")
    max_test_questions: int = Field(50, ge=0, description="held-out generated pairs asked, besides your questions")
    batch_size: int = Field(ANSWER_BATCH_SIZE, ge=1, description="questions answered at once (long in-context "
                            f"prompts in smaller batches: at most {ANSWER_BATCH_TOKENS:,} prompt tokens)",
                            json_schema_extra=flag("eval_batch_size"))
    max_new_tokens: int = Field(ANSWER_MAX_NEW_TOKENS, ge=1, description="longest answer in tokens")
    include_general: bool = Field(True, description="ask the 400 general-knowledge questions that measure "
                                  "forgetting (base vs fine-tuned)")
