"""transformers generation backend with continuous batching (the batch itself: :mod:`.hf_batch`).

``model.generate`` decodes a batch until its longest sequence ends: a few long outputs
stall every finished row, and each row's padding is computed too. This backend keeps a
pool of active sequences instead:

* prompts are sorted by length, so rows prefilled together need little padding;
* a finished row leaves the batch at once (its KV-cache rows are dropped);
* freed slots are refilled with new prompts (prefilled separately, their KV cache
  left-padded to the running cache length and concatenated), so the batch stays full;
* n samples of a prompt share one prefill (the cache rows are repeated);
* each sequence samples from its own RNG seeded by ``(seed, prompt content, sample index)``,
  so what a prompt gets does not depend on batch composition or order (up to float rounding: a row's
  attention over a left-padded cache sums in another order with other padding, SDPA's kernel and
  :mod:`openrft.models.decode_attention` alike, so a draw within rounding of a boundary can differ).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence

import torch

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.models.backends.hf_batch import DecodeBatch, DecodeRow, family_order, share_prefixes_default
from openrft.models.decode_attention import decode_attention_default
from openrft.models.packed import packed_linears, prepack_default

#: a call decoding fewer row-tokens than this (rows x max_new_tokens) does not prepack: packing SmolLM2's weights
#: takes ~0.3 s, about what ten decode steps of 32 rows gain back
PREPACK_MIN_TOKENS = 1024


def render_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids of a prompt: chat messages through the chat template, raw strings as they are."""
    if isinstance(prompt, str):
        return tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if getattr(tokenizer, "chat_template", None) is None:
        text = "\n\n".join(m["content"] for m in prompt) + "\n\n"
        return tokenizer(text, add_special_tokens=True)["input_ids"]
    out = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def _prompt_keys(encoded: Sequence[Sequence[int]]) -> list[str]:
    """Each prompt's content hash plus how many identical prompts came before it in the call.

    Rows are seeded from this key rather than the prompt's position, so a prompt's samples do not depend on
    which other prompts share the call (a resumed run that generates only the unfinished items draws what
    the uninterrupted run drew), while repeats of one prompt in a call still get different samples.
    """
    seen: dict[str, int] = {}
    keys = []
    for ids in encoded:
        digest = hashlib.blake2b(",".join(map(str, ids)).encode(), digest_size=12).hexdigest()
        keys.append(f"{digest}/{seen.get(digest, 0)}")
        seen[digest] = seen.get(digest, 0) + 1
    return keys


def _row_seed(seed: int, prompt_key: str, sample_idx: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{prompt_key}:{sample_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class TransformersGenerator(Generator):
    """Generator over a transformers causal LM (and peft-wrapped ones).

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (chat template used for chat prompts).
        batch_size: most sequences decoded together.
        refill_fraction: refill free slots once fewer than this fraction of ``batch_size`` rows are active.
        prepack: decode with oneDNN-prepacked fp32 linear layers on CPU (:mod:`openrft.models.packed`; same products
            in another summation order); default on unless ``OPENRFT_PREPACK=0``.
        share_prefixes: prompts of a call that start with the same tokens (64 or more) prefill them once
            (:func:`~openrft.models.backends.hf_batch.shared_prefixes`; the same maths in other shapes); default on
            unless ``OPENRFT_SHARE_PREFIXES=0``.
        fast_attention: one-token queries of an fp32 model on CPU attend with two matrix products instead of
            SDPA's kernel (:mod:`openrft.models.decode_attention`; the same softmax in another summation order);
            default on unless ``OPENRFT_DECODE_ATTENTION=0``.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 32, refill_fraction: float = 0.75,
                 prepack: bool | None = None, share_prefixes: bool | None = None, fast_attention: bool | None = None):
        self.model = model
        self.fast_attention = decode_attention_default() if fast_attention is None else fast_attention
        self.prepack = prepack_default() if prepack is None else prepack
        self.share_prefixes = share_prefixes_default() if share_prefixes is None else share_prefixes
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.refill_fraction = refill_fraction
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids or {0})
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, name_or_path: str, dtype="auto", device=None, adapter=None,
                        **kwargs) -> "TransformersGenerator":
        """The model (bundled name, local directory or hub id), with a LoRA ``adapter`` merged in when given:
        the policy a stage samples from."""
        from openrft.models.lora import load_model_with_adapter

        model, tokenizer = load_model_with_adapter(name_or_path, adapter, dtype=dtype, device=device)
        return cls(model, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision(self) -> str | None:
        dtype = next(self.model.parameters()).dtype
        return None if dtype == torch.float32 else str(dtype).removeprefix("torch.")

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        progress: Callable[[int, int], None] | None = None,
        *,
        hidden_states: bool = False,
    ) -> list[list[Completion]]:
        """:meth:`Generator.generate`; ``hidden_states``: each completion also holds the last-layer hidden state
        (the LM head's input) each of its tokens was sampled from (``Completion.hidden_states``)."""
        return self._generate(prompts, [params], progress, None, hidden_states)

    def generate_each(self, prompts, params, on_item, progress=None) -> list[list[Completion]]:
        return self._generate(prompts, [params], progress, on_item)

    def generate_settings(self, prompts, settings, on_item, progress=None) -> list[list[Completion]]:
        """:func:`~openrft.models.backends.base.generate_settings` in one pass: a prompt's rows of every setting
        share one prefill (its key), and each row keeps the seed it has in a call of its setting alone."""
        if not settings:
            raise ValueError("generate_settings needs at least one SamplingParams")
        return self._generate(prompts, list(settings), progress, on_item)

    def too_long(self, prompts: Sequence[Prompt]) -> dict[int, str]:
        if not self.max_positions:
            return {}
        lengths = {i: len(render_prompt(self.tokenizer, p)) for i, p in enumerate(prompts)}
        return {i: f"{n} tokens, context {self.max_positions}" for i, n in lengths.items() if n >= self.max_positions}

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Each prompt's token ids; ``ValueError`` naming the first prompt that is empty or fills the context."""
        encoded = [render_prompt(self.tokenizer, p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty (0 tokens); give it some text")
            if self.max_positions and len(ids) >= self.max_positions:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens, at or beyond the model's context of "
                    f"{self.max_positions}; shorten it (fewer few-shot examples) or use a longer-context model"
                )
        return encoded

    def new_batch(self) -> DecodeBatch:
        """An empty running batch over this model (the caller puts the model in eval mode)."""
        return DecodeBatch(self.model, self.tokenizer, self.eos_ids, self.pad_id, self.max_positions,
                           share_prefixes=self.share_prefixes, fast_attention=self.fast_attention)

    @staticmethod
    def rows_for(encoded: Sequence[Sequence[int]], params: SamplingParams, top_logprobs: int | None = None,
                 key_base: int = 0, hidden: bool = False) -> list[DecodeRow]:
        """``params.n`` rows per encoded prompt, prompt-major. Each sampling row's RNG is seeded from the seed,
        the prompt's content (and how many identical prompts came before it) and the sample index.
        ``key_base`` offsets the prefill keys, so rows of different calls sharing a batch never share a prefill.
        ``hidden``: the rows record their hidden states."""
        keys = _prompt_keys(encoded)
        return [DecodeRow(p, s, None if params.greedy else torch.Generator().manual_seed(
                              _row_seed(params.seed or 0, keys[p], s)),
                          prompt_ids=ids, params=params, prefill_key=key_base + p, top_logprobs=top_logprobs,
                          hidden=[] if hidden else None)
                for p, ids in enumerate(encoded) for s in range(params.n)]

    @torch.inference_mode()
    def _generate(self, prompts, settings: list[SamplingParams], progress, on_item,
                  hidden: bool = False) -> list[list[Completion]]:
        encoded = self.encode(prompts)
        # a prompt's rows under every setting, its samples numbered on from the previous setting's
        by_prompt: list[list[DecodeRow]] = [[] for _ in prompts]
        offset = 0
        for params in settings:
            for row in self.rows_for(encoded, params, hidden=hidden):
                row.sample_idx += offset
                by_prompt[row.prompt_idx].append(row)
            offset += params.n
        order = (self.share_prefixes and family_order(encoded)) or sorted(range(len(encoded)),
                                                                          key=lambda i: -len(encoded[i]))
        queue = [row for p in order for row in by_prompt[p]]
        results: list[list[Completion | None]] = [[None] * offset for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        pack = self.prepack and sum(row.params.max_new_tokens or 0 for row in queue) >= PREPACK_MIN_TOKENS
        try:
            with packed_linears(self.model, min(self.batch_size, len(queue))) if pack else contextlib.nullcontext():
                self._run(queue, results, progress, on_item)
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _run(self, queue: list[DecodeRow], results, progress, on_item) -> None:
        """Decode ``queue`` in one batch of at most ``batch_size`` rows, refilled as rows finish."""
        batch = self.new_batch()
        pos = 0
        while pos < len(queue) or batch.rows:
            if pos < len(queue) and len(batch.rows) < max(1, int(self.batch_size * self.refill_fraction)):
                chunk = queue[pos: pos + self.batch_size - len(batch.rows)]
                pos += len(chunk)
                batch.add(chunk)
            finished, new_tokens = batch.step()
            for row in finished:
                results[row.prompt_idx][row.sample_idx] = batch.completion(row)
                if on_item is not None and all(c is not None for c in results[row.prompt_idx]):
                    on_item(row.prompt_idx, results[row.prompt_idx])
            if progress is not None:
                progress(len(finished), new_tokens)
