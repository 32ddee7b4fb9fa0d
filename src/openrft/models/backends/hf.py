"""transformers generation backend with continuous batching.

``model.generate`` decodes a batch until its longest sequence ends: a few long outputs
stall every finished row, and each row's padding is computed too. This backend keeps a
pool of active sequences instead:

* prompts are sorted by length, so rows prefilled together need little padding;
* a finished row leaves the batch at once (its KV-cache rows are dropped);
* freed slots are refilled with new prompts (prefilled separately, their KV cache
  left-padded to the running cache length and concatenated), so the batch stays full;
* n samples of a prompt share one prefill (the cache rows are repeated);
* each sequence samples from its own RNG seeded by ``(seed, prompt index, sample index)``,
  so what a prompt gets does not depend on batch composition or order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.models.hf_internals import DynamicLayer, dynamic_cache_of


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


class GrowingLayer(DynamicLayer):
    """A KV-cache layer over a preallocated buffer that doubles when full.

    transformers' ``DynamicLayer`` concatenates every new token onto the whole cache, so
    each decode step copies all keys and values of every layer (O(T) bytes per token,
    O(T^2) over a sequence). Here a step writes one slot in place; ``keys``/``values``
    are views of the filled part.
    """

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._len = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        need = self._len + key_states.shape[-2]
        if self._k is None or need > self._k.shape[-2]:
            self._grow(max(need + 64, 2 * (0 if self._k is None else self._k.shape[-2])), key_states, value_states)
        self._k[:, :, self._len:need] = key_states
        self._v[:, :, self._len:need] = value_states
        self._len = need
        self.keys, self.values = self._k[:, :, :need], self._v[:, :, :need]
        return self.keys, self.values

    def _grow(self, capacity: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        b, h, _, dk = like_k.shape
        k = like_k.new_empty((b, h, capacity, dk))
        v = like_v.new_empty((b, h, capacity, like_v.shape[-1]))
        if self._len:
            k[:, :, :self._len] = self._k[:, :, :self._len]
            v[:, :, :self._len] = self._v[:, :, :self._len]
        self._k, self._v = k, v

    def adopt(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the contents (after rows were merged or leading columns trimmed)."""
        self._k = self._v = None
        self._len = 0
        self.update(keys, values)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized and self._k is not None:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]


def new_cache():
    """A DynamicCache whose layers are :class:`GrowingLayer`."""
    return dynamic_cache_of(GrowingLayer)


@dataclass
class _Row:
    prompt_idx: int
    sample_idx: int
    rng: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    eos_token: int | None = None


def sample_next(logits: torch.Tensor, rows: Sequence[_Row], params: SamplingParams) -> torch.Tensor:
    """Next token per row: argmax when greedy, else temperature + nucleus sampling with each row's RNG.

    Sampling is one batched inverse-CDF draw: each row's generator (a CPU ``torch.Generator`` seeded per
    sequence) gives one uniform number ``u``, and the row's token is the first whose cumulative probability
    exceeds ``u`` times the row's total. That is an exact draw from the categorical distribution (tokens of
    zero probability are never picked), costs one cumulative sum over the batch instead of one
    ``torch.multinomial`` per row (which drew an exponential variate for every vocabulary entry of every
    row), and works for logits on any device: only the uniforms come from the CPU generators.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < params.top_p  # always keeps the top token
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    u = torch.cat([torch.rand(1, generator=row.rng, dtype=torch.float64) for row in rows])
    cdf = probs.double().cumsum(dim=-1)
    target = (u.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class TransformersGenerator(Generator):
    """Generator over a transformers causal LM (and peft-wrapped ones).

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer (chat template used for chat prompts).
        batch_size: most sequences decoded together.
        refill_fraction: refill free slots once fewer than this fraction of ``batch_size`` rows are active.
    """

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size: int = 32, refill_fraction: float = 0.75):
        self.model = model
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

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Completion]]:
        return self._generate(prompts, params, progress, None)

    def generate_each(self, prompts, params, on_item, progress=None) -> list[list[Completion]]:
        return self._generate(prompts, params, progress, on_item)

    def too_long(self, prompts: Sequence[Prompt]) -> dict[int, str]:
        if not self.max_positions:
            return {}
        lengths = {i: len(render_prompt(self.tokenizer, p)) for i, p in enumerate(prompts)}
        return {i: f"{n} tokens, context {self.max_positions}" for i, n in lengths.items() if n >= self.max_positions}

    @torch.inference_mode()
    def _generate(self, prompts, params, progress, on_item) -> list[list[Completion]]:
        encoded = [render_prompt(self.tokenizer, p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty (0 tokens); give it some text")
            if self.max_positions and len(ids) >= self.max_positions:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens, at or beyond the model's context of "
                    f"{self.max_positions}; shorten it (fewer few-shot examples) or use a longer-context model"
                )
        queue = [(p, s) for p in sorted(range(len(encoded)), key=lambda i: -len(encoded[i])) for s in range(params.n)]
        results: list[list[Completion | None]] = [[None] * params.n for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            self._run(encoded, queue, params, results, progress, on_item)
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals
    def _budget(self, prompt_len: int, params: SamplingParams) -> int:
        if self.max_positions:
            return max(1, min(params.max_new_tokens, self.max_positions - prompt_len))
        return params.max_new_tokens

    def _prefill(self, encoded, keys, chunk, params):
        """Prefill the distinct prompts of ``chunk``; returns (rows, cache, mask, positions, logits)."""
        distinct = sorted({p for p, _ in chunk}, key=lambda p: -len(encoded[p]))
        width = len(encoded[distinct[0]])
        ids = torch.full((len(distinct), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for r, p in enumerate(distinct):
            ids[r, width - len(encoded[p]):] = torch.tensor(encoded[p])
            mask[r, width - len(encoded[p]):] = 1
        dev = self.device
        ids, mask = ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        where = {p: r for r, p in enumerate(distinct)}
        index = torch.tensor([where[p] for p, _ in chunk], device=dev)
        if len(chunk) != len(distinct) or not torch.equal(index, torch.arange(len(distinct), device=dev)):
            cache.batch_select_indices(index)
        rows = [
            _Row(p, s, None if params.greedy else torch.Generator().manual_seed(_row_seed(params.seed or 0, keys[p], s)))
            for p, s in chunk
        ]
        return rows, cache, mask[index], positions[index, -1], out.logits[index, -1, :]

    @staticmethod
    def _merge(cache, mask, extra_cache, extra_mask):
        """Concatenate two left-padded KV caches along the batch, padding the shorter on the left."""
        t_old, t_new = mask.shape[1], extra_mask.shape[1]
        width = max(t_old, t_new)

        def pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for a, b in zip(cache.layers, extra_cache.layers):
            a.adopt(torch.cat([pad(a.keys, width - t_old, 2), pad(b.keys, width - t_new, 2)], dim=0),
                    torch.cat([pad(a.values, width - t_old, 2), pad(b.values, width - t_new, 2)], dim=0))
        return torch.cat([pad(mask, width - t_old, 1), pad(extra_mask, width - t_new, 1)], dim=0)

    @staticmethod
    def _trim(cache, mask):
        """Drop leading columns that are padding for every row."""
        lead = int((mask.cumsum(-1) == 0).sum(-1).min())
        if lead == 0:
            return mask
        for layer in cache.layers:
            layer.adopt(layer.keys[:, :, lead:], layer.values[:, :, lead:])
        return mask[:, lead:]

    def _run(self, encoded, queue, params, results, progress, on_item=None):
        keys = _prompt_keys(encoded)
        dev = self.device
        rows: list[_Row] = []
        cache = mask = positions = logits = None
        pos = 0
        stops = params.stop
        while pos < len(queue) or rows:
            # refill free slots
            if pos < len(queue) and len(rows) < max(1, int(self.batch_size * self.refill_fraction)):
                chunk = queue[pos: pos + self.batch_size - len(rows)]
                pos += len(chunk)
                new_rows, new_cache, new_mask, new_pos, new_logits = self._prefill(encoded, keys, chunk, params)
                if rows:
                    mask = self._merge(cache, mask, new_cache, new_mask)
                    positions = torch.cat([positions, new_pos])
                    logits = torch.cat([logits, new_logits])
                    rows = rows + new_rows
                else:
                    rows, cache, mask, positions, logits = new_rows, new_cache, new_mask, new_pos, new_logits
            next_tokens = sample_next(logits, rows, params)
            keep: list[int] = []
            done_now = 0
            new_tokens = 0
            for i, (row, tok) in enumerate(zip(rows, next_tokens.tolist())):
                budget = self._budget(len(encoded[row.prompt_idx]), params)
                if tok in self.eos_ids:
                    row.finish_reason = "stop"
                    row.eos_token = tok
                else:
                    row.tokens.append(tok)
                    new_tokens += 1
                    if stops and any(s in self.tokenizer.decode(row.tokens[-32:]) for s in stops):
                        row.finish_reason = "stop"
                    elif len(row.tokens) >= budget:
                        row.finish_reason = "length"
                if row.finish_reason is None:
                    keep.append(i)
                else:
                    results[row.prompt_idx][row.sample_idx] = self._finish(row, stops)
                    done_now += 1
                    if on_item is not None and all(c is not None for c in results[row.prompt_idx]):
                        on_item(row.prompt_idx, results[row.prompt_idx])
            if progress is not None:
                progress(done_now, new_tokens)
            if not keep:
                rows, cache = [], None
                continue
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=dev)
                cache.batch_select_indices(index)
                mask, positions, next_tokens = mask[index], positions[index], next_tokens[index]
                rows = [rows[i] for i in keep]
                mask = self._trim(cache, mask)
            positions = positions + 1
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            out = self.model(input_ids=next_tokens.view(-1, 1), attention_mask=mask, position_ids=positions.view(-1, 1),
                             past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]

    def _finish(self, row: _Row, stops: Sequence[str]) -> Completion:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if stops:
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        ids = tuple(row.tokens) + ((row.eos_token,) if row.eos_token is not None else ())
        return Completion(text=text, num_tokens=len(row.tokens), finish_reason=row.finish_reason or "stop",
                          token_ids=ids)
