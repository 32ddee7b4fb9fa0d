"""A running decode batch over a transformers causal LM: sequences join and leave it between steps.

:class:`DecodeBatch` holds the active rows of a left-padded batch and their KV cache:

* :meth:`~DecodeBatch.add` prefills new rows (the samples of one prompt share one prefill; a row that already
  sampled tokens, e.g. one taken out to make room, is prefilled with them) and merges their cache into the
  running one, the shorter side padded on the left. Prompts that start with the same tokens (the step prefixes of
  one reply that PRM labelling continues, few-shot prompts with the same shots) prefill that common part once:
  :func:`shared_prefixes` groups them, the group's prefix runs once, its cache is copied to the members, and
  each member's own remainder runs on it (``OPENRFT_SHARE_PREFIXES=0`` prefills every prompt whole);
* :meth:`~DecodeBatch.step` samples one token for every row, each with its own sampling parameters and RNG,
  finishes rows on an end-of-sequence token, a stop string or their token budget (``max_new_tokens``,
  clamped to the model's context), drops them, and runs the model one position forward for the rest (an fp32
  model on CPU attends there with two matrix products, :mod:`openrft.models.decode_attention`;
  ``OPENRFT_DECODE_ATTENTION=0`` keeps SDPA);
* :meth:`~DecodeBatch.discard` drops rows (a cancelled request, a row preempted to make room).

``TransformersGenerator.generate`` drives one batch per call; ``openrft serve`` drives one across requests
(continuous batching). Rows that ask for them record each sampled token's log-probability under the model's
distribution (before temperature and top-p) and the top alternatives, or the last-layer hidden state each token was
sampled from (the input of the LM head: what a value head on the policy reads, so RL's shared critic needs no
second forward over the rollout).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from openrft.models.backends.base import Completion, SamplingParams
from openrft.models.decode_attention import decode_attention
from openrft.models.hf_internals import DynamicLayer, dynamic_cache_of
from openrft.models.loading import lm_head_of

#: a sampled token's log-probability and the top alternatives, ``((token_id, logprob), ...)``
TokenLogprob = tuple[float, tuple[tuple[int, float], ...]]


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


#: environment variable: ``0`` prefills every prompt whole (no shared prefixes)
SHARE_ENV = "OPENRFT_SHARE_PREFIXES"

#: prompts share a prefill only of a common prefix at least this long (a short one, such as a chat template's
#: system prompt, saves less than the second forward costs)
MIN_SHARED_PREFIX = 64


def share_prefixes_default() -> bool:
    """On unless ``OPENRFT_SHARE_PREFIXES`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(SHARE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefixes(seqs: Sequence[Sequence[int]], min_len: int = MIN_SHARED_PREFIX) -> list[tuple[int, list[int]]]:
    """Groups of ``seqs`` (indices) that start alike, each with the length of the prefix its members share.

    Every sequence is in one group. A group's prefix is at least ``min_len`` tokens and shorter than each member
    (each keeps a token of its own, whose forward gives its next-token logits); a sequence that shares no such
    prefix is a group of its own with prefix ``len - 1``. The groups are runs of the sorted sequences, chosen to
    save the most prefill tokens (``(members - 1) x prefix``) by dynamic programming over the runs, so one
    question's step prefixes group at their long common prompt, not with every prompt at a short system prompt.

    >>> shared_prefixes([[1, 2, 3, 4], [9, 9], [1, 2, 3, 5, 6]], min_len=2)
    [(3, [0, 2]), (1, [1])]
    """
    order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
    lcp = [_common_length(seqs[a], seqs[b]) for a, b in zip(order, order[1:])]
    n = len(order)
    best = [0] * (n + 1)  # best[j]: most tokens saved by grouping order[:j]
    cut = [0] * (n + 1)  # where the last run of order[:j] starts
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], j - 1  # order[j - 1] alone
        common = len(seqs[order[j - 1]]) - 1
        for i in range(j - 2, -1, -1):  # the run order[i:j]
            common = min(common, lcp[i], len(seqs[order[i]]) - 1)
            if common < min_len:
                break
            if best[i] + (j - 1 - i) * common > best[j]:
                best[j], cut[j] = best[i] + (j - 1 - i) * common, i
    groups = []
    j = n
    while j > 0:
        run = order[cut[j]:j]
        common = min([len(seqs[k]) - 1 for k in run] + lcp[cut[j]:j - 1])
        groups.append((common, sorted(run)))
        j = cut[j]
    return sorted(groups, key=lambda g: g[1][0])


#: sharing must save at least this many padded positions, and this fraction of them: below, the second forward and
#: the cache copies cost what they save (bench/README.md, "shared-prefix prefill")
MIN_SAVED_POSITIONS, MIN_SAVED_FRACTION = 256, 0.3


def _heads(seqs: Sequence[Sequence[int]], groups: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    """``groups`` with each lone sequence's prefix cut to at most the longest shared one: the prefixes run padded to
    the longest, so a long lone prompt runs the rest of itself with the remainders instead."""
    shared = [common for common, members in groups if len(members) > 1]
    if not shared:
        return groups
    return [(common if len(members) > 1 else min(max(shared), common), members) for common, members in groups]


def _pays(seqs: Sequence[Sequence[int]], groups: list[tuple[int, list[int]]]) -> bool:
    """Whether prefilling ``groups``' prefixes once, then every remainder, computes enough fewer (padded) positions
    than prefilling every sequence whole; a group without a prefix (a one-token prompt) never shares."""
    if not any(len(members) > 1 for _, members in groups) or any(common == 0 for common, _ in groups):
        return False
    tail = max(len(seqs[m]) - common for common, members in groups for m in members)
    whole = len(seqs) * max(map(len, seqs))
    saved = whole - len(groups) * max(common for common, _ in groups) - len(seqs) * tail
    return saved >= max(MIN_SAVED_POSITIONS, MIN_SAVED_FRACTION * whole)


def family_order(seqs: Sequence[Sequence[int]], min_len: int = MIN_SHARED_PREFIX) -> list[int] | None:
    """An order of ``seqs`` that keeps those sharing a prefix (:func:`shared_prefixes`) side by side, so the rows a
    decode batch takes in at once share their prefill: families by their longest member, longest first, each
    longest first. None when no two share one (the caller keeps its own order)."""
    groups = shared_prefixes(seqs, min_len)
    if all(len(members) == 1 for _, members in groups):
        return None
    families = [sorted(members, key=lambda i: -len(seqs[i])) for _, members in groups]
    families.sort(key=lambda f: -len(seqs[f[0]]))
    return [i for family in families for i in family]


def new_cache():
    """A DynamicCache whose layers are :class:`GrowingLayer`."""
    return dynamic_cache_of(GrowingLayer)


@dataclass(eq=False)
class DecodeRow:
    """One sequence: which prompt and sample it is, its RNG (None when greedy), prompt tokens, sampling
    parameters, and what it sampled so far.

    ``prefill_key``: rows with equal keys and no tokens yet share one prefill (the samples of one prompt).
    ``top_logprobs``: None records no log-probabilities; k records ``logprobs[i]`` for ``tokens[i]`` with k
    alternatives.
    ``hidden``: None records no hidden states; a list receives, for each sampled token (the end-of-sequence
    token too), the LM head's input ``[H]`` its logits came from.
    """

    prompt_idx: int
    sample_idx: int
    rng: torch.Generator | None
    prompt_ids: Sequence[int] = ()
    params: SamplingParams = field(default_factory=SamplingParams)
    prefill_key: Hashable = None
    top_logprobs: int | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    eos_token: int | None = None
    hidden: list[torch.Tensor] | None = None


def sample_next(logits: torch.Tensor, rows: Sequence[DecodeRow], params: SamplingParams) -> torch.Tensor:
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


def _sampling_key(params: SamplingParams) -> tuple[float, float]:
    return (0.0, 1.0) if params.greedy else (params.temperature, params.top_p)


class DecodeBatch:
    """The rows being decoded together and their KV cache (see the module docstring)."""

    def __init__(self, model, tokenizer, eos_ids: set[int], pad_id: int, max_positions: int | None,
                 share_prefixes: bool = True, fast_attention: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.share_prefixes, self.fast_attention = share_prefixes, fast_attention
        self.eos_ids, self.pad_id, self.max_positions = eos_ids, pad_id, max_positions
        self.device = next(model.parameters()).device
        self.rows: list[DecodeRow] = []
        self._cache = self._mask = self._positions = self._logits = self._hidden = None

    def budget(self, row: DecodeRow) -> int:
        """Tokens the row may sample: ``max_new_tokens``, clamped to what the context leaves after its prompt."""
        if self.max_positions:
            return max(1, min(row.params.max_new_tokens, self.max_positions - len(row.prompt_ids)))
        return row.params.max_new_tokens

    @torch.inference_mode()
    def add(self, rows: Sequence[DecodeRow]) -> None:
        """Prefill ``rows`` and append them to the batch; their next token is sampled by the next :meth:`step`."""
        rows = list(rows)
        if not rows:
            return
        keys = [row.prefill_key if not row.tokens else row for row in rows]
        ids_of = {k: list(row.prompt_ids) + row.tokens for k, row in zip(keys, rows)}
        distinct = sorted(set(keys), key=lambda k: -len(ids_of[k]))
        record = any(row.hidden is not None for row in (*self.rows, *rows))
        cache, mask, positions, logits, hidden = self._prefill([ids_of[k] for k in distinct], record)
        where = {k: r for r, k in enumerate(distinct)}
        index = torch.tensor([where[k] for k in keys], device=self.device)
        if len(rows) != len(distinct) or not torch.equal(index, torch.arange(len(distinct), device=self.device)):
            cache.batch_select_indices(index)
        mask, positions, logits = mask[index], positions[index], logits[index]
        hidden = hidden[index] if hidden is not None else None
        if self.rows:
            self._mask = self._merge(self._cache, self._mask, cache, mask)
            self._positions = torch.cat([self._positions, positions])
            self._logits = torch.cat([self._logits, logits])
            if record:  # rows already in the batch that record nothing hold zeros (never read)
                old = self._hidden if self._hidden is not None else hidden.new_zeros(len(self.rows), hidden.shape[1])
                self._hidden = torch.cat([old, hidden])
            self.rows = self.rows + rows
        else:
            self.rows, self._cache, self._mask, self._positions, self._logits = rows, cache, mask, positions, logits
            self._hidden = hidden

    @torch.inference_mode()
    def step(self) -> tuple[list[DecodeRow], int]:
        """Sample one token for every row; returns the rows that finished (now out of the batch) and how many
        tokens were added to rows' text."""
        next_tokens = self._sample()
        logprobs = self._token_logprobs(next_tokens)
        keep: list[int] = []
        finished: list[DecodeRow] = []
        new_tokens = 0
        for i, (row, tok) in enumerate(zip(self.rows, next_tokens.tolist())):
            if row.hidden is not None:
                row.hidden.append(self._hidden[i])
            if tok in self.eos_ids:
                row.finish_reason = "stop"
                row.eos_token = tok
            else:
                row.tokens.append(tok)
                new_tokens += 1
                if i in logprobs:
                    row.logprobs.append(logprobs[i])
                stops = row.params.stop
                if stops and any(s in self.tokenizer.decode(row.tokens[-32:]) for s in stops):
                    row.finish_reason = "stop"
                elif len(row.tokens) >= self.budget(row):
                    row.finish_reason = "length"
            if row.finish_reason is None:
                keep.append(i)
            else:
                finished.append(row)
        if not keep:
            self._reset()
            return finished, new_tokens
        if len(keep) < len(self.rows):
            next_tokens = next_tokens[self._select(keep)]
        self._positions = self._positions + 1
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
        with decode_attention(self.model) if self.fast_attention else contextlib.nullcontext():
            self._logits, self._hidden = self._forward(
                self._hidden is not None, input_ids=next_tokens.view(-1, 1), attention_mask=self._mask,
                position_ids=self._positions.view(-1, 1), past_key_values=self._cache, use_cache=True)
        return finished, new_tokens

    @torch.inference_mode()
    def discard(self, rows: Sequence[DecodeRow]) -> None:
        """Take ``rows`` out of the batch; they keep what they sampled (:meth:`add` can bring them back)."""
        gone = set(rows)
        keep = [i for i, row in enumerate(self.rows) if row not in gone]
        if not keep:
            self._reset()
        elif len(keep) < len(self.rows):
            self._select(keep)

    def completion(self, row: DecodeRow) -> Completion:
        """A finished row's completion: its text up to the first stop string, and its tokens."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        stops = row.params.stop
        if stops:
            cut = min((text.find(s) for s in stops if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        ids = tuple(row.tokens) + ((row.eos_token,) if row.eos_token is not None else ())
        hidden = torch.stack(row.hidden) if row.hidden else None
        return Completion(text=text, num_tokens=len(row.tokens), finish_reason=row.finish_reason or "stop",
                          token_ids=ids, hidden_states=hidden)

    # ---------------------------------------------------------------- internals
    def _left_padded(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` of ``seqs`` padded on the left to the longest."""
        width = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, x in enumerate(seqs):
            ids[r, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[r, width - len(x):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prefill(self, seqs: Sequence[Sequence[int]], record: bool):
        """Run ``seqs`` into a new cache: ``(cache, mask, positions, last-position logits, hidden or None)``.
        A prefix that several share (:func:`shared_prefixes`) runs once and its cache is copied to them; then
        each one's remainder runs on it, and the cache is packed to the right as a whole prompt's would be."""
        groups = _heads(seqs, shared_prefixes(seqs)) if self.share_prefixes and len(seqs) > 1 else []
        cache = new_cache()
        if not _pays(seqs, groups):
            ids, mask = self._left_padded(seqs)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits, hidden = self._forward(record, input_ids=ids, attention_mask=mask, position_ids=positions,
                                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            return cache, mask, positions[:, -1], logits, hidden
        group_of = [0] * len(seqs)
        for g, (_, members) in enumerate(groups):
            for m in members:
                group_of[m] = g
        heads = [seqs[members[0]][:common] for common, members in groups]
        ids, head_mask = self._left_padded(heads)
        self.model(input_ids=ids, attention_mask=head_mask, position_ids=(head_mask.cumsum(-1) - 1).clamp(min=0),
                   past_key_values=cache, use_cache=True, logits_to_keep=1)
        index = torch.tensor(group_of, device=self.device)
        cache.batch_select_indices(index)
        ids, tail_mask = self._left_padded([x[groups[group_of[r]][0]:] for r, x in enumerate(seqs)])
        mask = torch.cat([head_mask[index], tail_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, hidden = self._forward(record, input_ids=ids, attention_mask=mask,
                                       position_ids=positions[:, head_mask.shape[1]:], past_key_values=cache,
                                       use_cache=True, logits_to_keep=1)
        # close the padding between prefix and remainder (keys carry their rotary positions, so moving them changes
        # nothing): the rows then attend over as many columns as whole prompts would give them
        order = torch.sort(mask, dim=1, stable=True).indices
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            layer.adopt(k.gather(2, order[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])),
                        v.gather(2, order[:, None, :, None].expand(-1, v.shape[1], -1, v.shape[3])))
        mask = self._trim(cache, mask.gather(1, order))
        return cache, mask, positions[:, -1], logits, hidden

    def _forward(self, record: bool, **inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's next-token logits ``[B, V]`` at the last position, and (``record``) the LM head's input
        there ``[B, H]``, caught on its way into the head."""
        if not record:
            return self.model(**inputs).logits[:, -1, :], None
        seen: list[torch.Tensor] = []
        handle = lm_head_of(self.model).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            logits = self.model(**inputs).logits[:, -1, :]
        finally:
            handle.remove()
        return logits, seen[-1][:, -1, :]

    def _reset(self) -> None:
        self.rows = []
        self._cache = self._mask = self._positions = self._logits = self._hidden = None

    def _select(self, keep: list[int]) -> torch.Tensor:
        """Keep only rows ``keep`` (and their cache); returns their index tensor."""
        index = torch.tensor(keep, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask, self._positions, self._logits = self._mask[index], self._positions[index], self._logits[index]
        if self._hidden is not None:
            self._hidden = self._hidden[index]
        self.rows = [self.rows[i] for i in keep]
        self._mask = self._trim(self._cache, self._mask)
        return index

    def _sample(self) -> torch.Tensor:
        """One token per row; rows are sampled in groups of equal temperature and top-p (one group usually)."""
        groups: dict[tuple[float, float], list[int]] = {}
        for i, row in enumerate(self.rows):
            groups.setdefault(_sampling_key(row.params), []).append(i)
        if len(groups) == 1:
            return sample_next(self._logits, self.rows, self.rows[0].params)
        out = torch.empty(len(self.rows), dtype=torch.long, device=self._logits.device)
        for members in groups.values():
            index = torch.tensor(members, device=self._logits.device)
            out[index] = sample_next(self._logits[index], [self.rows[i] for i in members],
                                     self.rows[members[0]].params)
        return out

    def _token_logprobs(self, tokens: torch.Tensor) -> dict[int, TokenLogprob]:
        """For each row that records them, the sampled token's log-probability and its top alternatives."""
        want = [i for i, row in enumerate(self.rows) if row.top_logprobs is not None]
        if not want:
            return {}
        index = torch.tensor(want, device=self._logits.device)
        lp = torch.log_softmax(self._logits[index].float(), dim=-1)
        chosen = lp.gather(1, tokens[index].view(-1, 1)).squeeze(1).tolist()
        k = max(self.rows[i].top_logprobs for i in want)
        top_v, top_i = lp.topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0].long())
        top_v, top_i = top_v.tolist(), top_i.tolist()
        out = {}
        for j, i in enumerate(want):
            kk = self.rows[i].top_logprobs
            out[i] = (chosen[j], tuple(zip(top_i[j][:kk], top_v[j][:kk])))
        return out

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
