"""Settings of the augment stage (:class:`AugmentConfig`) and the part of them that makes its identity."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from openrft.augment.rewrite import PROMPTS, STRICT_INSTRUCTION, ValidationRules
from openrft.core.rundir import without_legacy_values
from openrft.models.backends.base import HTTP_LIMITS, HTTPLimits, SamplingParams, http_limit

#: the model-free rewriter of arithmetic questions (openrft.augment.template)
TEMPLATE = "template"
#: settings out of the stage's identity: how the replies are fetched (endpoints, batch size, HTTP limits), not what
_NOT_IN_IDENTITY = ("batch_size", "base_url", "teacher_base_url", *HTTP_LIMITS)


def _f(default: Any, help: str) -> Any:  # noqa: A002 - the help string of a config field
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConfig:
    """Settings of ``openrft augment``. Defaults follow OpenRFT's DA rows: original + 5 rewrites, options shuffled."""

    k: int = _f(5, "variants asked from the rewriter per question (0: no rewriting, shuffle only)")
    mode: str = _f("joint", "joint: one reply holds all k variants separated by <sep> (as in the paper); "
                            "single: one variant per reply, k sampled replies (easier for small models)")
    prompt: str = _f("paper", "instruction of mode joint: paper (OpenRFT Fig. 2: the paragraph in k different "
                              "expressions, meaning unchanged, separated by <sep>) or strict (openrft's own: also "
                              "keep every number, unit, formula and name; add no hints, options or answers)")
    expansion: int = _f(6, "most samples emitted per question, original included (paper: 6 = original + 5)")
    keep_original: bool = _f(True, "emit the original question too (it is kept anyway when no variant survives)")
    shuffle: bool = _f(True, "shuffle the options of multiple-choice samples, gold letter remapped")
    shuffle_original: bool = _f(True, "shuffle the original's options too (else it keeps its order)")
    balance_gold: bool = _f(False, "spread the gold letters of a question's copies round-robin (balanced letters)")
    fill_with_shuffles: bool = _f(False, "fill the slots of missing variants with shuffled copies of the original")
    teacher_check: bool = _f(False, "a teacher answers each variant with the original options; drop it unless correct")
    similarity_threshold: float = _f(0.9, "near-duplicate threshold (word-level similarity of normalized texts)")
    min_length_ratio: float = _f(0.5, "drop variants shorter than this times the original")
    max_length_ratio: float = _f(2.0, "drop variants longer than this times the original (short originals count as "
                                      "80 characters)")
    require_tokens: bool = _f(True, "drop variants losing numbers, units, formulas, LaTeX, SMILES/IUPAC, sequences")
    forbid_new_numbers: bool = _f(True, "drop variants that introduce numbers the original does not have")
    seed: int = _f(0, "seed of the rewriter's sampling and of every option shuffle")
    backend: str = _f("transformers", "rewriter backend: transformers, openai (any OpenAI-compatible server), vllm, "
                                      "or template (no model: verified renumbered and reworded variants of "
                                      "arithmetic questions with meta.expression; see openrft.augment.template)")
    model: str | None = _f(None, "rewriter model: bundled name, local path, hub id, or the server's model name "
                              "(the CLI loads the bundled smollm2-135m when none is named)")
    base_url: str | None = _f(None, "OpenAI-compatible endpoint for --backend openai, e.g. http://127.0.0.1:8000/v1")
    teacher_backend: str | None = _f(None, "teacher backend for --teacher-check (default: the rewriter's)")
    teacher_model: str | None = _f(None, "teacher model for --teacher-check (default: the rewriter)")
    teacher_base_url: str | None = _f(None, "teacher endpoint (default: --base-url)")
    temperature: float = _f(0.7, "rewriter sampling temperature (0 = greedy)")
    top_p: float = _f(1.0, "rewriter nucleus sampling mass")
    max_new_tokens: int = _f(512, "rewriter generation budget per reply (all k variants)")
    teacher_max_new_tokens: int = _f(1024, "teacher generation budget per answer (greedy)")
    retries: int = _f(2, "re-asks per question for missing variants after an empty, malformed or short reply")
    retry_temperature: float = _f(0.8, "temperature of re-asks at least (a greedy re-ask would repeat the reply)")
    batch_size: int = _f(16, "questions per generate call; rewrites.jsonl is checkpointed after each batch")
    timeout: float = http_limit("timeout")
    concurrency: int = http_limit("concurrency")
    max_retries: int = http_limit("max_retries")

    #: option values that reproduce the stage from before the option existed (kept out of its identity)
    LEGACY: ClassVar[dict[str, Any]] = {"prompt": "strict"}

    def __post_init__(self) -> None:
        if self.k < 0 or self.expansion < 1 or self.retries < 0 or self.batch_size < 1:
            raise ValueError("need k >= 0, expansion >= 1, retries >= 0, batch_size >= 1")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)  # validates
        if self.teacher_max_new_tokens < 1 or self.retry_temperature < 0:
            raise ValueError(f"need teacher_max_new_tokens >= 1 and retry_temperature >= 0, got "
                             f"{self.teacher_max_new_tokens} and {self.retry_temperature}")
        if not 0 < self.similarity_threshold <= 1:
            raise ValueError(f"similarity_threshold must be in (0, 1], got {self.similarity_threshold}")
        if not 0 <= self.min_length_ratio < self.max_length_ratio:
            raise ValueError("need 0 <= min_length_ratio < max_length_ratio")
        if self.mode not in ("joint", "single"):
            raise ValueError(f"unknown mode {self.mode!r}; valid: joint, single")
        if self.prompt not in PROMPTS:
            raise ValueError(f"unknown prompt {self.prompt!r}; valid: {', '.join(PROMPTS)}")
        if self.mode == "single" and self.temperature == 0 and self.k > 1:
            raise ValueError("mode 'single' samples k replies per question: it needs temperature > 0")
        HTTPLimits.of(self)  # validates timeout, concurrency, max_retries
        if self.backend == TEMPLATE and self.teacher_check:
            raise ValueError("the template rewriter's variants are verified by evaluating them; teacher_check "
                             "does not apply (use an LLM backend for teacher-checked rewrites)")

    @property
    def rules(self) -> ValidationRules:
        return ValidationRules(similarity_threshold=self.similarity_threshold, min_length_ratio=self.min_length_ratio,
                               max_length_ratio=self.max_length_ratio, require_tokens=self.require_tokens,
                               forbid_new_numbers=self.forbid_new_numbers)

    def rewrite_settings(self) -> dict[str, Any]:
        """The settings a stored rewrite depends on (shuffle settings and batch size excluded)."""
        keys = ("k", "mode", "teacher_check", "similarity_threshold", "min_length_ratio", "max_length_ratio",
                "require_tokens", "forbid_new_numbers", "seed", "temperature", "top_p", "max_new_tokens",
                "teacher_max_new_tokens", "retries", "retry_temperature")
        # single mode asks with its own instruction whatever the prompt: it keeps the key it had before prompts
        instruction = PROMPTS[self.prompt] if self.mode == "joint" else STRICT_INSTRUCTION
        return {k: getattr(self, k) for k in keys} | {"instruction": instruction}

    def identity(self) -> dict[str, Any]:
        """The settings the stage's manifest holds and compares: no batch size, endpoints or HTTP limits; ``prompt``
        only where it is read (an LLM rewriter in joint mode) and not at its :attr:`LEGACY` value."""
        settings = {k: v for k, v in asdict(self).items() if k not in _NOT_IN_IDENTITY}
        if self.backend == TEMPLATE or self.mode != "joint" or self.k == 0:
            settings.pop("prompt")
        return without_legacy_values(settings, self.LEGACY)


def config_help() -> dict[str, str]:
    """Field name -> help string, for CLIs and docs."""
    return {f.name: f.metadata.get("help", "") for f in fields(AugmentConfig)}
