"""RL losses: pure, differentiable tensor functions over response tokens.

Shapes are batch-first ``[B, T]`` with a 0/1 (or bool) ``mask`` of valid tokens. Maths runs in
fp32 (fp64 stays fp64) whatever the input dtype; values under the mask never reach the loss or its
gradient (even NaN/inf there). Stats dicts hold Python floats computed under ``no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from openrft.rl.advantages import masked_mean, masked_sum, masked_var
from openrft.rl.registry import Registry

__all__ = [
    "KL_KINDS", "LOSS_AGG", "POLICY_LOSSES", "aggregate", "entropy_from_logits", "explained_variance",
    "get_policy_loss", "kl_estimate", "kl_loss", "policy_loss", "register_policy_loss", "token_logprobs",
    "value_loss", "zero_advantage_rows",
]

LOSS_AGG = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_KINDS = ("k1", "k2", "k3")
_LOGIT_CHUNK_ELEMENTS = 1 << 24  # fp32 elements per chunk in token_logprobs/entropy (64 MiB)


def _f32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _clean(x: Tensor, mask: Tensor) -> Tensor:
    """fp32 copy with masked positions set to 0 (gradient 0 there, and no NaN leaks)."""
    return torch.where(mask, _f32(x), 0.0)


def aggregate(loss_mat: Tensor, mask: Tensor, mode: str = "token-mean", max_len: int | None = None) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar.

    - ``token-mean``: Σ valid losses / number of valid tokens in the batch (DAPO, arXiv 2503.14476).
    - ``seq-mean-token-mean``: mean over rows of each row's token mean (original GRPO).
    - ``seq-mean-token-sum``: mean over rows of each row's token sum.
    - ``seq-mean-token-sum-norm``: mean over rows of row sum / ``max_len`` (Dr.GRPO, arXiv 2503.20783;
      ``max_len`` defaults to T).

    "Rows" are the rows with at least one valid token (as verl does): an empty response neither adds
    to nor dilutes the loss. An all-empty batch gives 0.

    >>> m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    >>> x = torch.tensor([[1., 2., 3.], [4., 9., 9.]])
    >>> [round(aggregate(x, m, mode).item(), 3) for mode in LOSS_AGG]
    [2.5, 3.0, 5.0, 1.667]
    """
    if mode not in LOSS_AGG:
        raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(LOSS_AGG)}")
    mask = mask.bool()
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    row_sum = masked_sum(loss_mat, mask, dim=-1)
    row_count = mask.sum(-1)
    if mode == "seq-mean-token-mean":
        per_row = row_sum / row_count.clamp_min(1)
    elif mode == "seq-mean-token-sum":
        per_row = row_sum
    else:
        per_row = row_sum / (loss_mat.shape[-1] if max_len is None else max_len)
    return masked_mean(per_row, row_count > 0)


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3", clamp: float | None = 10.0) -> Tensor:
    """Per-token estimate of KL(π‖π_ref) from samples of π (Schulman, "Approximating KL divergence", 2020).

    With ``log r = ref_logp − logp``: ``k1 = −log r`` (unbiased, high variance, can be negative);
    ``k2 = ½ (log r)²`` (biased, low variance); ``k3 = (r − 1) − log r`` (unbiased, ≥ 0, low
    variance; GRPO's KL term). k3 is clamped to at most ``clamp`` (``None`` disables), as verl's
    ``low_var_kl`` and OpenRLHF do, so one token far from the reference cannot dominate the loss;
    ``log r`` is first limited to ±20 so ``exp`` cannot overflow. Returns fp32 ``[B, T]``.

    >>> kl_estimate(torch.tensor([0.0]), torch.tensor([0.0]), "k3")
    tensor([0.])
    >>> kl_estimate(torch.tensor([-5.0]), torch.tensor([0.0]), "k3")  # exp(5) - 5 - 1 = 142.4, clamped
    tensor([10.])
    """
    log_ratio = _f32(logp) - _f32(ref_logp)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        neg = (-log_ratio).clamp(-20.0, 20.0)
        k3 = torch.expm1(neg) - neg
        return k3 if clamp is None else k3.clamp(max=clamp)
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_KINDS)}")


def kl_loss(logp: Tensor, ref_logp: Tensor, mask: Tensor, kind: str = "k3", agg: str = "token-mean",
            max_len: int | None = None) -> Tensor:
    """``aggregate(kl_estimate(logp, ref_logp, kind), mask, agg)``: the KL-in-loss term of GRPO."""
    mask = mask.bool()
    return aggregate(kl_estimate(_clean(logp, mask), _clean(ref_logp, mask), kind), mask, agg, max_len)


PolicyLoss = Callable[..., tuple[Tensor, dict[str, float]]]
_POLICY_LOSSES: Registry[PolicyLoss] = Registry("policy loss")
#: policy losses by name: ``fn(logp, old_logp, advantages, mask, *, clip_low, clip_high, dual_clip, agg, max_len)
#: -> (loss, stats)``; ``RLConfig.policy_loss`` picks one (or a ``package.module:function``)
POLICY_LOSSES: dict[str, PolicyLoss] = _POLICY_LOSSES.items


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator adding a policy loss to :data:`POLICY_LOSSES`; a name already registered is an error."""
    return _POLICY_LOSSES.register(name)


def get_policy_loss(name: str) -> PolicyLoss:
    """A policy loss by registry name or dotted path ``package.module:function``.

    >>> get_policy_loss("ppo").__name__
    'policy_loss'
    """
    return _POLICY_LOSSES.get(name)


@register_policy_loss("ppo")
def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, clip_low: float = 0.2,
                clip_high: float | None = None, dual_clip: float | None = None, agg: str = "token-mean",
                max_len: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347) with DAPO clip-higher.

    ``ratio = exp(logp − old_logp)``;
    ``loss_t = −min(ratio·A, clip(ratio, 1 − clip_low, 1 + clip_high)·A)`` (``clip_high`` defaults to
    ``clip_low``; DAPO, arXiv 2503.14476, uses 0.28). With ``dual_clip = c > 1`` (Ye et al. 2020,
    arXiv 1912.09729) the loss of tokens with ``A < 0`` is capped at ``−c·A``. Aggregated by
    :func:`aggregate`. The log-ratio is clamped to ±20 before ``exp``.

    Stats: ``clipfrac`` (valid tokens where the clipped branch is taken, i.e. no gradient),
    ``dual_clipfrac`` (with ``dual_clip``), ``approx_kl`` (mean ½·log-ratio² over valid tokens),
    ``ratio_mean``, ``ratio_max``, ``loss``.
    """
    clip_high = clip_low if clip_high is None else clip_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    mask = mask.bool()
    log_ratio = (_clean(logp, mask) - _clean(old_logp, mask)).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    adv = _clean(advantages, mask).detach()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        capped = torch.minimum(loss_mat, -adv * dual_clip)
        dual = (adv < 0) & (capped < loss_mat)
        loss_mat = torch.where(adv < 0, capped, loss_mat)
    loss = aggregate(loss_mat, mask, agg, max_len)
    with torch.no_grad():
        stats = {
            "loss": loss.item(),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
            "ratio_max": torch.where(mask, ratio, 0.0).max().item() if mask.any() else 0.0,
        }
        if dual_clip is not None:
            stats["dual_clipfrac"] = masked_mean(dual.float(), mask).item()
    return loss, stats


def zero_advantage_rows(advantages: Tensor, mask: Tensor) -> set[int]:
    """Rows whose every valid advantage is zero: the ppo loss ``-A x ratio`` (clipped) and its gradient are zero
    there, so an update can leave them out (a group whose samples all score alike, under grpo and rloo).

    >>> zero_advantage_rows(torch.tensor([[0.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), torch.tensor([[1, 1], [1, 0], [1, 1]]))
    {0, 1}
    """
    moved = ((advantages != 0) & mask.bool()).any(dim=1)
    return set(torch.nonzero(~moved).flatten().tolist())


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip: float | None = 0.2,
               agg: str = "token-mean", max_len: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """Clipped critic loss (PPO as in OpenAI baselines / TRL):
    ``½·max((v − R)², (v_clip − R)²)`` with ``v_clip = old + clip(v − old, −clip, clip)``;
    ``clip=None`` gives ``½ (v − R)²``. Stats: ``vf_loss``, ``vf_clipfrac`` (valid tokens where the
    clipped term is the larger one)."""
    mask = mask.bool()
    v, ret = _clean(values, mask), _clean(returns, mask).detach()
    err = (v - ret) ** 2
    if clip is None:
        loss_mat, clipped_frac = err, torch.zeros_like(err)
    else:
        old = _clean(old_values, mask).detach()
        err_clipped = (old + (v - old).clamp(-clip, clip) - ret) ** 2
        loss_mat = torch.maximum(err, err_clipped)
        clipped_frac = (err_clipped > err).float()
    loss = 0.5 * aggregate(loss_mat, mask, agg, max_len)
    with torch.no_grad():
        stats = {"vf_loss": loss.item(), "vf_clipfrac": masked_mean(clipped_frac, mask).item()}
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """``1 − Var[R − V] / Var[R]`` over valid tokens (1 = perfect critic, 0 = no better than a
    constant, negative = worse). Returns 0.0 (not NaN) when ``Var[R] == 0`` or there are fewer than
    two valid tokens: the critic's quality is then undefined and 0 reads as "no information"."""
    with torch.no_grad():
        mask = mask.bool()
        v, ret = _clean(values, mask), _clean(returns, mask)
        var_r = masked_var(ret, mask)
        if var_r.item() == 0.0:
            return 0.0
        return (1.0 - masked_var(ret - v, mask) / var_r).item()


# ---- log-probabilities and entropy from logits, chunked ---------------------------------------------


def _chunks(logits: Tensor, chunk_size: int | None):
    """Yield ``(index, view)`` pairs covering ``logits [B, T, V]`` with about ``chunk_size`` tokens
    each (views only: no copy even when ``logits`` is a non-contiguous slice)."""
    B, T, V = logits.shape
    n = chunk_size or max(1, _LOGIT_CHUNK_ELEMENTS // max(V, 1))
    if n >= T:
        rows = max(1, n // max(T, 1))
        for b in range(0, B, rows):
            yield (slice(b, b + rows),), logits[b:b + rows]
    else:
        for b in range(B):
            for t in range(0, T, n):
                yield (b, slice(t, t + n)), logits[b, t:t + n]


class _TokenLogprobs(torch.autograd.Function):
    """log softmax(x/τ)[label] = x[label]/τ − logsumexp(x/τ); saves only the logits, labels and the
    logsumexp, and rebuilds the softmax chunk by chunk in backward."""

    @staticmethod
    def forward(ctx, logits, labels, temperature, chunk_size):
        dt = torch.promote_types(logits.dtype, torch.float32)
        valid = labels >= 0
        safe = labels.clamp_min(0)
        out = torch.zeros(labels.shape, dtype=dt, device=logits.device)
        lse = torch.zeros(labels.shape, dtype=dt, device=logits.device)
        for idx, chunk in _chunks(logits, chunk_size):
            x = chunk.to(dt) / temperature
            lse[idx] = torch.logsumexp(x, dim=-1)
            out[idx] = x.gather(-1, safe[idx].unsqueeze(-1)).squeeze(-1) - lse[idx]
        ctx.save_for_backward(logits, safe, valid, lse)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        return torch.where(valid, out, 0.0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        logits, safe, valid, lse = ctx.saved_tensors
        tau = ctx.temperature
        g = torch.where(valid, grad_out, 0.0).to(lse.dtype)
        grad = torch.empty_like(logits)
        for idx, chunk in _chunks(logits, ctx.chunk_size):  # d/dx = (onehot − softmax) · g / τ
            p = torch.exp(chunk.to(lse.dtype) / tau - lse[idx].unsqueeze(-1))
            gi = g[idx].unsqueeze(-1)
            d = (-p * gi).scatter_add_(-1, safe[idx].unsqueeze(-1), gi) / tau
            grad[idx] = d.to(grad.dtype)
        return grad, None, None, None


class _Entropy(torch.autograd.Function):
    """H = logsumexp(x) − Σ p·x with x = logits/τ; dH/dx_i = −p_i (x_i − E_p[x]), chunked both ways."""

    @staticmethod
    def forward(ctx, logits, temperature, chunk_size):
        dt = torch.promote_types(logits.dtype, torch.float32)
        out = torch.zeros(logits.shape[:-1], dtype=dt, device=logits.device)
        for idx, chunk in _chunks(logits, chunk_size):
            x = chunk.to(dt) / temperature
            lse = torch.logsumexp(x, dim=-1)
            p = torch.exp(x - lse.unsqueeze(-1))
            x = torch.where(p > 0, x, 0.0)  # -inf logits (masked vocabulary) have p = 0: no 0·inf NaN
            out[idx] = lse - (p * x).sum(-1)
        ctx.save_for_backward(logits)
        ctx.temperature, ctx.chunk_size, ctx.dtype = temperature, chunk_size, dt
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (logits,) = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for idx, chunk in _chunks(logits, ctx.chunk_size):
            x = chunk.to(ctx.dtype) / ctx.temperature
            p = torch.softmax(x, dim=-1)
            x = torch.where(p > 0, x, 0.0)
            mean_x = (p * x).sum(-1, keepdim=True)
            d = -p * (x - mean_x) * grad_out[idx].to(ctx.dtype).unsqueeze(-1) / ctx.temperature
            grad[idx] = d.to(grad.dtype)
        return grad, None, None


def token_logprobs(logits: Tensor, labels: Tensor, temperature: float = 1.0,
                   chunk_size: int | None = None) -> Tensor:
    """``log_softmax(logits / temperature)`` gathered at ``labels``: ``[B, T, V], [B, T] -> [B, T]``.

    Maths in fp32 (fp64 stays fp64) as ``x[label] − logsumexp(x)``, over chunks of ``chunk_size``
    tokens (default: about 2^24 fp32 elements per chunk), so no ``[B, T, V]`` fp32 tensor ever
    exists, in forward or backward (a custom autograd function recomputes the softmax per chunk
    and writes the gradient in the logits' dtype). Labels < 0 (e.g. -100) give 0 and no gradient.

    >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[0, 3]]))
    tensor([[-1.3863, -1.3863]])
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.dim() != 3 or labels.shape != logits.shape[:-1]:
        raise ValueError(f"expected logits [B, T, V] and labels [B, T], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return _TokenLogprobs.apply(logits, labels.long(), float(temperature), chunk_size)


def entropy_from_logits(logits: Tensor, chunk_size: int | None = None, temperature: float = 1.0) -> Tensor:
    """Entropy of ``softmax(logits / temperature)`` per token, ``[B, T, V] -> [B, T]``, in fp32,
    chunked like :func:`token_logprobs` (differentiable, for an entropy bonus).

    >>> entropy_from_logits(torch.zeros(1, 1, 4))
    tensor([[1.3863]])
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if logits.dim() != 3:
        raise ValueError(f"expected logits [B, T, V], got {tuple(logits.shape)}")
    return _Entropy.apply(logits, float(temperature), chunk_size)
