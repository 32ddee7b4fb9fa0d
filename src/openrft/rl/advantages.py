"""Advantage estimators: pure tensor functions over response tokens, registered by name.

Shapes are batch-first ``[B, T]`` over response tokens only. ``mask`` (bool or 0/1 float) marks the
valid tokens: right padding, valid tokens contiguous from position 0, and a row may be empty.
Statistics are computed in fp32 (fp64 stays fp64) and every estimator returns fp32 advantages that
are exactly 0 at masked positions, with no NaN for empty rows, single-response groups or groups
whose rewards are all equal.

Every estimator has the same keyword-only signature::

    fn(*, scores, mask, group_ids, config=None, values=None,
       step_rewards=None, step_mask=None, token_penalty=None) -> AdvantageOutput

``scores [B]`` sequence reward per response; ``group_ids [B]`` responses with the same id were
sampled from the same prompt; ``step_rewards [B, T]`` process rewards at each step's last token,
the positions marked by ``step_mask [B, T]`` (a step reward may be 0, so the mask is needed);
``token_penalty [B, T]`` a per-token reward term such as ``-beta * KL``; ``values [B, T]`` critic
values (``gae`` only). Estimators never build autograd graphs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from openrft.rl.registry import Registry

__all__ = [
    "ESTIMATORS", "AdvantageSettings", "AdvantageOutput", "compute_advantages", "gae", "get_estimator", "grpo",
    "last_token_index", "masked_mean", "masked_sum", "masked_var", "masked_whiten", "place_at_last_token",
    "register_estimator", "reinforce_pp", "rloo",
]


# ---- masked statistics --------------------------------------------------------------------------


def _stat_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is set, in fp32. Values under the mask are ignored
    (even NaN/inf). ``dim=None`` sums everything.

    >>> masked_sum(torch.tensor([[1., 2., 9.]]), torch.tensor([[1, 1, 0]]))
    tensor(3.)
    """
    x = torch.where(mask.bool(), x.to(_stat_dtype(x)), 0.0)
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over masked positions; 0 (not NaN) where the mask is empty.

    >>> masked_mean(torch.tensor([[1., 3.], [5., 7.]]), torch.tensor([[1, 1], [0, 0]]), dim=-1)
    tensor([2., 0.])
    """
    valid = torch.broadcast_to(mask.bool(), x.shape)
    count = valid.sum() if dim is None else valid.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp_min(1)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of all masked values (Bessel-corrected when ``unbiased``); 0 when there are too few
    values (none, or one with ``unbiased``) rather than NaN."""
    mean = masked_mean(x, mask)
    count = torch.broadcast_to(mask.bool(), x.shape).sum()
    denom = (count - 1) if unbiased else count
    return masked_sum((x.to(mean.dtype) - mean) ** 2, mask) / denom.clamp_min(1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` with mean and unbiased variance over the masked values
    (as TRL/OpenRLHF whiten advantages); with ``shift_mean=False`` the mean is added back. Masked
    positions are 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x.to(mean.dtype) - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, 0.0)


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last valid token of each row (``LongTensor[B]``), ``-1`` for empty rows.

    >>> last_token_index(torch.tensor([[1, 1, 0], [0, 0, 0], [1, 1, 1]]))
    tensor([ 1, -1,  2])
    """
    B, T = mask.shape
    if T == 0:
        return torch.full((B,), -1, dtype=torch.long, device=mask.device)
    pos = torch.arange(T, device=mask.device).expand(B, T)
    return torch.where(mask.bool(), pos, -1).amax(dim=-1)


def place_at_last_token(scores: Tensor, mask: Tensor) -> Tensor:
    """A ``[B, T]`` fp32 tensor holding ``scores[b]`` at row b's last valid token and 0 elsewhere
    (all zeros for an empty row)."""
    idx = last_token_index(mask)
    out = torch.zeros(mask.shape, dtype=_stat_dtype(scores), device=mask.device)
    if mask.shape[1] == 0:
        return out
    src = torch.where(idx >= 0, scores.to(out.dtype), 0.0)
    return out.scatter_(1, idx.clamp_min(0)[:, None], src[:, None])


# ---- config and output --------------------------------------------------------------------------


@dataclass
class AdvantageSettings:
    """Settings shared by the estimators; each estimator reads the fields it needs."""

    gamma: float = field(default=1.0, metadata={"help": "discount (gae, reinforce_pp)"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (gae)"})
    norm_by_std: bool = field(default=True, metadata={
        "help": "grpo: divide by the group std (GRPO); False subtracts the group mean only (Dr.GRPO)"})
    step_credit: str = field(default="local", metadata={
        "help": "dense rewards in grpo/rloo: 'local' (a token gets the normalized reward of its own step) | "
                "'cumulative' (DeepSeekMath process supervision: sum of normalized step rewards at or after it)"})
    whiten: bool = field(default=True, metadata={"help": "whiten advantages over the batch (gae, reinforce_pp)"})
    rpp_baseline: bool = field(default=False, metadata={
        "help": "reinforce_pp: subtract the group mean score first (REINFORCE++-baseline)"})
    eps: float = field(default=1e-6, metadata={
        "help": "added to the group std (grpo) and to the variance when whitening"})

    def __post_init__(self) -> None:
        if self.step_credit not in ("local", "cumulative"):
            raise ValueError(f"step_credit must be 'local' or 'cumulative', got {self.step_credit!r}")
        for name in ("gamma", "lam"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@dataclass
class AdvantageOutput:
    """``advantages [B, T]`` (0 at masked positions); ``returns [B, T]`` (value targets for gae,
    return-to-go for reinforce_pp, None otherwise); ``stats`` Python floats for logging."""

    advantages: Tensor
    returns: Tensor | None
    stats: dict[str, float]


# ---- registry -----------------------------------------------------------------------------------

Estimator = Callable[..., AdvantageOutput]
_ESTIMATORS: Registry[Estimator] = Registry("advantage estimator",
                                           wrap=lambda fn: functools.wraps(fn)(torch.no_grad()(fn)))
#: estimators by name (run under ``no_grad``)
ESTIMATORS: dict[str, Estimator] = _ESTIMATORS.items


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator adding an estimator to :data:`ESTIMATORS` under ``name``; it runs under ``no_grad``. A name
    already registered is an error (a plug-in cannot silently replace a built-in)."""
    return _ESTIMATORS.register(name)


def get_estimator(name: str) -> Estimator:
    """An estimator by registry name or dotted path ``package.module:function``.

    >>> get_estimator("grpo").__name__
    'grpo'
    """
    return _ESTIMATORS.get(name)


def compute_advantages(name: str, **kwargs) -> AdvantageOutput:
    """``get_estimator(name)(**kwargs)``; ``config`` defaults to ``AdvantageSettings()``."""
    return get_estimator(name)(**kwargs)


# ---- shared pieces ------------------------------------------------------------------------------


def _check(name: str, scores: Tensor, mask: Tensor, group_ids: Tensor | None, **dense: Tensor | None) -> Tensor:
    """Validate shapes; return the bool mask."""
    if mask.dim() != 2:
        raise ValueError(f"{name}: mask must be [B, T], got shape {tuple(mask.shape)}")
    B = mask.shape[0]
    if tuple(scores.shape) != (B,):
        raise ValueError(f"{name}: scores must have shape ({B},) (one per response), got {tuple(scores.shape)}")
    if group_ids is not None and tuple(group_ids.shape) != (B,):
        raise ValueError(f"{name}: group_ids must have shape ({B},), got {tuple(group_ids.shape)}")
    for key, t in dense.items():
        if t is not None and t.shape != mask.shape:
            raise ValueError(f"{name}: {key} must have the mask's shape {tuple(mask.shape)}, got {tuple(t.shape)}")
    return mask.bool()


def _groups(group_ids: Tensor) -> tuple[Tensor, int]:
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, len(uniq)


def _group_center(values: Tensor, inv: Tensor, n_groups: int, *, norm_by_std: bool = False,
                  leave_one_out: bool = False, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Normalize ``values [N]`` within groups ``inv [N]``: ``v - mean_g`` (optionally divided by
    ``std_g + eps``, unbiased std) or the leave-one-out ``v - mean(others)``. Groups of one value or
    of all-equal values give exactly 0. Returns (normalized, per-group "constant" flags for
    non-empty groups)."""
    dt = _stat_dtype(values)
    values = values.to(dt)
    zeros = torch.zeros(n_groups, dtype=dt, device=values.device)
    count = zeros.index_add(0, inv, torch.ones_like(values))
    mean = zeros.index_add(0, inv, values) / count.clamp_min(1)
    vmax = zeros.scatter_reduce(0, inv, values, "amax", include_self=False)
    vmin = zeros.scatter_reduce(0, inv, values, "amin", include_self=False)
    constant = (count >= 1) & ((vmax == vmin) | (count == 1))
    centered = values - mean[inv]
    if leave_one_out:  # s - mean(others) = k/(k-1) (s - mean)
        k = count[inv]
        centered = centered * k / (k - 1).clamp_min(1)
    elif norm_by_std:
        std = (zeros.index_add(0, inv, centered**2) / (count - 1).clamp_min(1)).sqrt()
        centered = centered / (std[inv] + eps)
    return torch.where(constant[inv], 0.0, centered), constant


def _credit_steps(step_adv: Tensor, step_mask: Tensor, mask: Tensor, credit: str) -> Tensor:
    """Spread per-step values (at step-end positions) over tokens: 'local' gives each token the value
    of the first step end at or after it (0 after the last step end); 'cumulative' gives the sum of
    the values at or after it."""
    if credit == "cumulative":
        tok = step_adv.flip(1).cumsum(1).flip(1)
    else:
        B, T = step_mask.shape
        pos = torch.arange(T, device=mask.device).expand(B, T)
        nxt = torch.where(step_mask, pos, T).flip(1).cummin(1).values.flip(1)
        tok = torch.cat([step_adv, step_adv.new_zeros(B, 1)], 1).gather(1, nxt)
    return torch.where(mask, tok, 0.0)


def _group_relative(name: str, scores: Tensor, mask: Tensor, group_ids: Tensor, config: AdvantageSettings,
                    step_rewards: Tensor | None, step_mask: Tensor | None, token_penalty: Tensor | None, *,
                    norm_by_std: bool, leave_one_out: bool) -> AdvantageOutput:
    """The body of grpo and rloo: group-normalized scores broadcast over tokens, plus group-normalized
    step rewards credited to tokens."""
    mask = _check(name, scores, mask, group_ids, step_rewards=step_rewards, step_mask=step_mask,
                  token_penalty=token_penalty)
    s = scores.to(_stat_dtype(scores))
    if token_penalty is not None:
        s = s + masked_sum(token_penalty, mask, dim=-1)
    inv, n_groups = _groups(group_ids)
    seq, constant = _group_center(s, inv, n_groups, norm_by_std=norm_by_std, leave_one_out=leave_one_out,
                                  eps=config.eps)
    adv = torch.where(mask, seq[:, None], 0.0)
    stats = {"num_groups": float(n_groups), "zero_std_groups": float(constant.sum())}
    if step_rewards is not None:  # pool each group's step rewards, normalize them per group, credit tokens
        if step_mask is None:
            raise ValueError(f"{name}: step_rewards needs step_mask (the step-end positions; a step reward may be 0)")
        sm = step_mask.bool() & mask
        rows, cols = sm.nonzero(as_tuple=True)
        normed, step_constant = _group_center(step_rewards[rows, cols], inv[rows], n_groups,
                                              norm_by_std=norm_by_std, eps=config.eps)
        step_adv = torch.zeros(mask.shape, dtype=normed.dtype, device=mask.device)
        step_adv[rows, cols] = normed
        adv = adv + _credit_steps(step_adv, sm, mask, config.step_credit)
        stats["zero_std_step_groups"] = float(step_constant.sum())
    return _finish(adv, None, mask, stats)


def _token_rewards(scores: Tensor, mask: Tensor, step_rewards: Tensor | None, step_mask: Tensor | None,
                   token_penalty: Tensor | None) -> Tensor:
    """r_t = token_penalty_t + step_reward_t + score at the last valid token (0 at masked positions)."""
    r = place_at_last_token(scores, mask)
    if step_rewards is not None:
        r = r + torch.where(mask if step_mask is None else mask & step_mask.bool(), step_rewards.to(r.dtype), 0.0)
    if token_penalty is not None:
        r = r + torch.where(mask, token_penalty.to(r.dtype), 0.0)
    return r


def _finish(advantages: Tensor, returns: Tensor | None, mask: Tensor, stats: dict[str, float]) -> AdvantageOutput:
    advantages = torch.where(mask, advantages, 0.0).float()
    stats = {"adv_mean": masked_mean(advantages, mask).item(),
             "adv_std": masked_var(advantages, mask).sqrt().item(), **stats}
    if returns is not None:
        returns = torch.where(mask, returns, 0.0).float()
        stats["ret_mean"] = masked_mean(returns, mask).item()
    return AdvantageOutput(advantages, returns, stats)


# ---- estimators ---------------------------------------------------------------------------------


@register_estimator("gae")
def gae(*, scores: Tensor, mask: Tensor, group_ids: Tensor | None = None, config: AdvantageSettings | None = None,
        values: Tensor | None = None, step_rewards: Tensor | None = None, step_mask: Tensor | None = None,
        token_penalty: Tensor | None = None) -> AdvantageOutput:
    """Generalized Advantage Estimation (Schulman et al. 2016, arXiv 1506.02438), PPO with a critic.

    ``r_t = token_penalty_t + step_reward_t + [t = last] score``;
    ``δ_t = r_t + γ V_{t+1} − V_t`` with ``V = 0`` after the last valid token;
    ``A_t = δ_t + γλ A_{t+1}``; ``returns = A + V`` (before whitening); ``A`` is whitened over the
    batch when ``config.whiten``. ``group_ids`` is ignored; ``step_mask`` defaults to the mask.
    """
    config = config or AdvantageSettings()
    mask = _check("gae", scores, mask, group_ids, values=values, step_rewards=step_rewards,
                  step_mask=step_mask, token_penalty=token_penalty)
    if values is None:
        raise ValueError("gae: values (critic values, [B, T]) are required; "
                         "use grpo/rloo/reinforce_pp without a critic")
    r = _token_rewards(scores, mask, step_rewards, step_mask, token_penalty)
    v = torch.where(mask, values.to(r.dtype), 0.0)
    m = mask.to(r.dtype)
    adv = torch.zeros_like(r)
    last = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        next_v = v[:, t + 1] if t + 1 < r.shape[1] else torch.zeros_like(last)
        last = (r[:, t] + config.gamma * next_v - v[:, t] + config.gamma * config.lam * last) * m[:, t]
        adv[:, t] = last
    returns = adv + v
    if config.whiten:
        adv = masked_whiten(adv, mask, eps=config.eps)
    return _finish(adv, returns, mask, {"value_mean": masked_mean(v, mask).item()})


@register_estimator("grpo")
def grpo(*, scores: Tensor, mask: Tensor, group_ids: Tensor, config: AdvantageSettings | None = None,
         values: Tensor | None = None, step_rewards: Tensor | None = None, step_mask: Tensor | None = None,
         token_penalty: Tensor | None = None) -> AdvantageOutput:
    """Group-relative advantages: GRPO (DeepSeekMath, arXiv 2402.03300) and Dr.GRPO (arXiv 2503.20783).

    Outcome part, per group g: ``s' = (s − mean_g) / (std_g + eps)`` (unbiased std, as torch.std)
    or ``s' = s − mean_g`` when ``config.norm_by_std`` is False (Dr.GRPO); ``s`` first gets the
    masked row sum of ``token_penalty`` when given. A group of one response or of all-equal scores
    gets exactly 0 (counted in ``stats["zero_std_groups"]``): a response with nothing to be compared with
    carries no group-relative signal. (verl differs for a group of one: its mean is 0 and its std 1, so the
    response keeps its raw score as advantage.) ``s'`` is broadcast over the response's valid tokens.

    Process part (``step_rewards`` + ``step_mask``), DeepSeekMath §4.1.3: the step rewards of all
    responses of a group are pooled and normalized the same way per group; a token then gets the
    normalized reward of its own step (``step_credit="local"``: the first step end at or after it,
    0 after the last step end) or the sum of the normalized rewards at or after it
    (``"cumulative"``, the paper's process-supervision advantage). It is added to the outcome part.
    ``values`` is ignored.

    >>> out = grpo(scores=torch.tensor([1., 0., 1., 1.]), mask=torch.ones(4, 2),
    ...            group_ids=torch.tensor([0, 0, 1, 1]))
    >>> out.advantages[:, 0], out.stats["zero_std_groups"]
    (tensor([ 0.7071, -0.7071,  0.0000,  0.0000]), 1.0)
    """
    config = config or AdvantageSettings()
    return _group_relative("grpo", scores, mask, group_ids, config, step_rewards, step_mask, token_penalty,
                           norm_by_std=config.norm_by_std, leave_one_out=False)


@register_estimator("rloo")
def rloo(*, scores: Tensor, mask: Tensor, group_ids: Tensor, config: AdvantageSettings | None = None,
         values: Tensor | None = None, step_rewards: Tensor | None = None, step_mask: Tensor | None = None,
         token_penalty: Tensor | None = None) -> AdvantageOutput:
    """REINFORCE Leave-One-Out (Ahmadian et al. 2024, arXiv 2402.14740).

    ``A_i = s_i − mean_{j≠i, j∈g(i)} s_j = k/(k−1) (s_i − mean_g)``; a group of one response or of
    all-equal scores gets exactly 0. ``s`` first gets the masked row sum of ``token_penalty``
    (KL in the reward, as in the paper). Dense ``step_rewards``: each step reward minus the group's
    pooled mean step reward, credited to tokens by ``config.step_credit`` as in :func:`grpo`.
    ``values`` is ignored.
    """
    config = config or AdvantageSettings()
    return _group_relative("rloo", scores, mask, group_ids, config, step_rewards, step_mask, token_penalty,
                           norm_by_std=False, leave_one_out=True)


@register_estimator("reinforce_pp")
def reinforce_pp(*, scores: Tensor, mask: Tensor, group_ids: Tensor | None = None,
                 config: AdvantageSettings | None = None, values: Tensor | None = None,
                 step_rewards: Tensor | None = None, step_mask: Tensor | None = None,
                 token_penalty: Tensor | None = None) -> AdvantageOutput:
    """REINFORCE++ (Hu 2025, arXiv 2501.03262).

    Token rewards as in :func:`gae` (``token_penalty`` + step rewards + score at the last token),
    with the group mean score subtracted first when ``config.rpp_baseline`` (REINFORCE++-baseline;
    needs ``group_ids``); ``returns_t = Σ_{k≥t} γ^{k−t} r_k`` (return-to-go); advantages are the
    returns whitened over the whole batch when ``config.whiten``. ``values`` is ignored.
    """
    config = config or AdvantageSettings()
    mask = _check("reinforce_pp", scores, mask, group_ids, step_rewards=step_rewards, step_mask=step_mask,
                  token_penalty=token_penalty)
    s = scores.to(_stat_dtype(scores))
    stats: dict[str, float] = {}
    if config.rpp_baseline:
        if group_ids is None:
            raise ValueError("reinforce_pp: rpp_baseline needs group_ids (which responses share a prompt)")
        inv, n_groups = _groups(group_ids)
        s, constant = _group_center(s, inv, n_groups)
        stats = {"num_groups": float(n_groups), "zero_std_groups": float(constant.sum())}
    r = _token_rewards(s, mask, step_rewards, step_mask, token_penalty)
    m = mask.to(r.dtype)
    returns = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        running = (r[:, t] + config.gamma * running) * m[:, t]
        returns[:, t] = running
    adv = masked_whiten(returns, mask, eps=config.eps) if config.whiten else returns
    return _finish(adv, returns, mask, stats)
