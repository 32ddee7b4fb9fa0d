"""Rollout batches: prompts and sampled completions laid out for the update passes.

Layout ``[left-padded prompt | right-padded response]``: every response starts at the same column
``P`` (the widest prompt), so the hidden states that predict the response tokens are the columns
``P-1 .. P+T-2`` for all rows at once, and the per-token tensors (log-probs, values, advantages)
are ``[B, T]`` over response tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch


@dataclass
class RolloutBatch:
    """Token tensors of a rollout batch, plus the per-token quantities the update needs."""

    input_ids: torch.Tensor  # [B, P+T]
    attention_mask: torch.Tensor  # [B, P+T]
    position_ids: torch.Tensor  # [B, P+T]
    response_ids: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] float 0/1
    prompt_width: int
    group_ids: torch.Tensor  # [B] long
    scores: torch.Tensor  # [B] scalar reward per completion
    step_rewards: torch.Tensor | None = None  # [B, T] dense process rewards at step-end tokens
    step_mask: torch.Tensor | None = None  # [B, T] bool
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    values: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def response_width(self) -> int:
        return self.response_ids.shape[1]

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "RolloutBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    def select(self, rows: Sequence[int] | torch.Tensor) -> "RolloutBatch":
        """Rows ``rows``, trimmed to the columns they use (less padding in each micro-batch)."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.input_ids.device)
        sub = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in sub.items():
            if isinstance(value, torch.Tensor):
                sub[name] = value.index_select(0, idx)
        P = self.prompt_width
        prompt_mask = sub["attention_mask"][:, :P]
        lead = int((prompt_mask.cumsum(-1) == 0).sum(-1).min()) if len(idx) else 0
        lead = min(lead, P - 1)  # keep at least one prompt column
        t = int(sub["response_mask"].sum(-1).max()) if len(idx) else 0
        t = max(t, 1)
        for name in ("input_ids", "attention_mask", "position_ids"):
            sub[name] = sub[name][:, lead: P + t]
        for name, value in sub.items():
            if isinstance(value, torch.Tensor) and value.dim() == 2 and name not in (
                    "input_ids", "attention_mask", "position_ids"):
                sub[name] = value[:, :t]
        sub["prompt_width"] = P - lead
        return RolloutBatch(**sub)


def build_batch(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]],
                group_ids: Sequence[int], scores: Sequence[float], pad_id: int) -> RolloutBatch:
    """Pack prompts (left-padded) and responses (right-padded) into a :class:`RolloutBatch`.

    >>> b = build_batch([[5, 6], [7]], [[1, 2, 3], [4]], [0, 0], [1.0, 0.0], pad_id=0)
    >>> b.input_ids.tolist()
    [[5, 6, 1, 2, 3], [0, 7, 4, 0, 0]]
    >>> b.position_ids.tolist()[1], b.response_mask.tolist()[1]
    ([0, 0, 1, 1, 1], [1.0, 0.0, 0.0])
    """
    if not (len(prompt_ids) == len(response_ids) == len(group_ids) == len(scores)):
        raise ValueError("prompts, responses, groups and scores must have the same length")
    B = len(prompt_ids)
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(r) for r in response_ids))
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + T), dtype=torch.long)
    resp = torch.full((B, T), pad_id, dtype=torch.long)
    rmask = torch.zeros((B, T), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if not p:
            raise ValueError(f"rollout {i} has an empty prompt")
        input_ids[i, P - len(p): P] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p): P] = 1
        if r:
            input_ids[i, P: P + len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, P: P + len(r)] = 1
            resp[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            rmask[i, : len(r)] = 1.0
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return RolloutBatch(input_ids=input_ids, attention_mask=attn, position_ids=position_ids, response_ids=resp,
                        response_mask=rmask, prompt_width=P, group_ids=torch.tensor(list(group_ids), dtype=torch.long),
                        scores=torch.tensor(list(scores), dtype=torch.float32))


def char_to_token_ends(tokenizer, token_ids: Sequence[int], char_ends: Sequence[int]) -> list[int]:
    """For each character offset in the decoded ``token_ids``, the index of the token that completes it.

    Used to place a step's process reward at the step's last token (dense rewards). Binary search over
    decoded prefixes, so multi-byte characters split across tokens are handled exactly.
    """
    n = len(token_ids)
    out: list[int] = []
    cache: dict[int, int] = {}

    def decoded_len(k: int) -> int:
        """Characters the first ``k`` tokens complete: a trailing partial character (the first bytes of a
        multi-byte one, which decodes to U+FFFD) is not complete yet."""
        if k not in cache:
            cache[k] = len(tokenizer.decode(list(token_ids[:k]), skip_special_tokens=True).rstrip("\ufffd"))
        return cache[k]

    for end in char_ends:
        lo, hi = 1, n
        while lo < hi:
            mid = (lo + hi) // 2
            if decoded_len(mid) >= end:
                hi = mid
            else:
                lo = mid + 1
        out.append(max(0, min(lo, n) - 1))
    return out


def place_step_rewards(tokenizer, responses: Sequence[Sequence[int]], step_rewards: Sequence[Sequence[tuple[int, float]]],
                       width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards [B, T], mask [B, T])`` with each step's reward at the step's last token.

    Two steps ending on the same token add up there.
    """
    B = len(responses)
    rewards = torch.zeros((B, width), dtype=torch.float32)
    mask = torch.zeros((B, width), dtype=torch.bool)
    for i, (ids, steps) in enumerate(zip(responses, step_rewards)):
        if not steps or not ids:
            continue
        ends = char_to_token_ends(tokenizer, ids, [e for e, _ in steps])
        for pos, (_, r) in zip(ends, steps):
            rewards[i, pos] += float(r)
            mask[i, pos] = True
    return rewards, mask
