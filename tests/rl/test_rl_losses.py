"""RL losses against plain-Python loop implementations, plus gradient and numerical properties."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch.testing import assert_close

from openrft.rl.losses import (
    KL_KINDS, LOSS_AGG, aggregate, entropy_from_logits, explained_variance, kl_estimate, kl_loss, policy_loss,
    token_logprobs, value_loss,
)


def make_mask(seed: int, B: int = 6, T: int = 7, contiguous: bool = True) -> list[list[bool]]:
    rng = random.Random(seed)
    if contiguous:
        lengths = [rng.randint(1, T) for _ in range(B)]
        lengths[1], lengths[-1] = 0, T
        return [[t < L for t in range(T)] for L in lengths]
    rows = [[rng.random() < 0.6 for _ in range(T)] for _ in range(B)]
    rows[2] = [False] * T
    return rows


def rand_rows(seed: int, B: int, T: int, scale: float = 1.0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, scale) for _ in range(T)] for _ in range(B)]


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---- loop references ------------------------------------------------------------------------------


def ref_aggregate(mat, mask, mode, max_len=None):
    if mode == "token-mean":
        vals = [mat[b][i] for b in range(len(mat)) for i in range(len(mat[b])) if mask[b][i]]
        return sum(vals) / len(vals) if vals else 0.0
    per_row = []
    for b in range(len(mat)):
        vals = [mat[b][i] for i in range(len(mat[b])) if mask[b][i]]
        if not vals:
            continue
        if mode == "seq-mean-token-mean":
            per_row.append(sum(vals) / len(vals))
        elif mode == "seq-mean-token-sum":
            per_row.append(sum(vals))
        else:
            per_row.append(sum(vals) / (max_len or len(mat[b])))
    return sum(per_row) / len(per_row) if per_row else 0.0


def ref_kl(lp, ref, kind, clamp=10.0):
    if kind == "k1":
        return lp - ref
    if kind == "k2":
        return 0.5 * (lp - ref) ** 2
    x = max(-20.0, min(20.0, ref - lp))  # verl's low_var_kl: the estimate clamped to 10
    return min(clamp, math.exp(x) - x - 1)


def ref_policy(lp, old, adv, mask, clip_low, clip_high, dual_clip, mode, max_len=None):
    clip_high = clip_low if clip_high is None else clip_high
    mat = [[0.0] * len(r) for r in lp]
    clipped = kls = n = 0
    ratios = []
    for b in range(len(lp)):
        for i in range(len(lp[b])):
            if not mask[b][i]:
                continue
            ratio = math.exp(lp[b][i] - old[b][i])
            a = adv[b][i]
            bounded = min(max(ratio, 1 - clip_low), 1 + clip_high)
            loss = max(-a * ratio, -a * bounded)
            clipped += -a * bounded > -a * ratio
            if dual_clip is not None and a < 0:
                loss = min(loss, -a * dual_clip)
            mat[b][i] = loss
            kls += 0.5 * (lp[b][i] - old[b][i]) ** 2
            n += 1
            ratios.append(ratio)
    stats = {"clipfrac": clipped / n, "approx_kl": kls / n, "ratio_mean": sum(ratios) / n, "ratio_max": max(ratios)}
    return ref_aggregate(mat, mask, mode, max_len), stats


def ref_value(v, old, ret, mask, clip, mode):
    mat = [[0.0] * len(r) for r in v]
    clipped = n = 0
    for b in range(len(v)):
        for i in range(len(v[b])):
            if mask[b][i]:
                err = (v[b][i] - ret[b][i]) ** 2
                if clip is None:
                    mat[b][i] = err
                else:
                    vc = old[b][i] + min(max(v[b][i] - old[b][i], -clip), clip)
                    err_c = (vc - ret[b][i]) ** 2
                    mat[b][i] = max(err, err_c)
                    clipped += err_c > err
                n += 1
    return 0.5 * ref_aggregate(mat, mask, mode), clipped / n


def ref_var(xs):
    m = sum(xs) / len(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


# ---- aggregation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("mode", LOSS_AGG)
def test_aggregate_matches_loop(mode, contiguous):
    mask = make_mask(0, contiguous=contiguous)
    mat = rand_rows(1, 6, 7)
    got = aggregate(t(mat), torch.tensor(mask).float(), mode)
    assert_close(got, torch.tensor(ref_aggregate(mat, mask, mode)))
    if mode == "seq-mean-token-sum-norm":
        assert_close(aggregate(t(mat), torch.tensor(mask), mode, max_len=32),
                     torch.tensor(ref_aggregate(mat, mask, mode, max_len=32)))


def test_aggregate_empty_batch_and_unknown_mode():
    for mode in LOSS_AGG:
        assert aggregate(torch.randn(2, 3), torch.zeros(2, 3), mode).item() == 0.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(torch.randn(2, 3), torch.ones(2, 3), "sum")


# ---- KL ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KL_KINDS)
def test_kl_estimate_and_kl_loss_match_loop(kind):
    mask = make_mask(2)
    lp, ref = rand_rows(3, 6, 7), rand_rows(4, 6, 7)
    lp[0][0], ref[0][0] = 0.0, -30.0  # k3 needs the clamp here
    expected = [[ref_kl(a, b, kind) for a, b in zip(ra, rb)] for ra, rb in zip(lp, ref)]
    assert_close(kl_estimate(t(lp), t(ref), kind), t(expected))
    loss = kl_loss(t(lp).requires_grad_(), t(ref), torch.tensor(mask), kind, agg="seq-mean-token-mean")
    assert_close(loss, torch.tensor(ref_aggregate(expected, mask, "seq-mean-token-mean")))
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(t(lp), t(ref), "k4")


def test_seq_mean_token_sum_norm_kl_and_value_losses_do_not_change_with_padding_width():
    """Two rows of 3 and 5 tokens: padded to width 5 or to width 256, the same fixed ``max_len`` gives the same loss."""
    torch.manual_seed(0)
    lp, ref, v, old, ret = (torch.randn(2, 5) for _ in range(5))
    lens = torch.tensor([3, 5])

    def pad(x, width):
        return torch.cat([x, torch.zeros(2, width - 5)], dim=1)

    got = []
    for width in (5, 256):
        mask = torch.arange(width)[None] < lens[:, None]
        kl = kl_loss(pad(lp, width), pad(ref, width), mask, "k3", agg="seq-mean-token-sum-norm", max_len=8)
        vl, _ = value_loss(pad(v, width), pad(old, width), pad(ret, width), mask, agg="seq-mean-token-sum-norm",
                           max_len=8)
        got.append((float(kl), float(vl)))
    assert got[0] == pytest.approx(got[1])


def test_kl_estimators_on_a_known_distribution_pair():
    p = torch.tensor([0.5, 0.2, 0.2, 0.1])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = (p * (p / q).log()).sum()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = p.log()[x][None], q.log()[x][None]
    k1, k3 = kl_estimate(logp, logq, "k1"), kl_estimate(logp, logq, "k3")
    assert abs(k1.mean() - exact) < 0.01 and abs(k3.mean() - exact) < 0.01
    assert torch.all(k3 >= 0) and torch.all(kl_estimate(logp, logq, "k2") >= 0)
    assert (k1 < 0).any()  # k1 is unbiased but not pointwise non-negative


# ---- policy loss ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("clip_low", "clip_high", "dual_clip"), [(0.2, None, None), (0.2, 0.28, None),
                                                                   (0.1, 0.3, 3.0)])
@pytest.mark.parametrize("mode", LOSS_AGG)
def test_policy_loss_matches_loop(clip_low, clip_high, dual_clip, mode):
    mask = make_mask(5)
    lp = rand_rows(6, 6, 7)
    old = [[x + d for x, d in zip(r, dr)] for r, dr in zip(lp, rand_rows(7, 6, 7, scale=0.6))]
    adv = rand_rows(8, 6, 7, scale=2.0)
    loss, stats = policy_loss(t(lp), t(old), t(adv), torch.tensor(mask), clip_low=clip_low, clip_high=clip_high,
                              dual_clip=dual_clip, agg=mode)
    ref_loss, ref_stats = ref_policy(lp, old, adv, mask, clip_low, clip_high, dual_clip, mode)
    assert_close(loss, torch.tensor(ref_loss))
    for key, value in ref_stats.items():
        assert stats[key] == pytest.approx(value, rel=1e-5), key
    assert 0 < stats["clipfrac"] < 1
    assert isinstance(stats["loss"], float) and (dual_clip is None) == ("dual_clipfrac" not in stats)


def test_clip_statistics_on_hand_made_ratios():
    ratios = torch.tensor([[1.0, 1.1, 1.3, 0.7, 0.9, 1.5, 0.5, 4.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    # clipped (no gradient): ratio 1.3 with A>0 (above 1.2) and 0.5 with A<0 (below 0.8); ratio 0.7 with A>0
    # and 1.5 with A<0 stay on the unclipped (pessimistic) branch; the masked token is ignored
    _, stats = policy_loss(ratios.log(), torch.zeros(1, 8), adv, mask, clip_low=0.2)
    assert stats["clipfrac"] == pytest.approx(2 / 7)
    assert stats["ratio_max"] == pytest.approx(1.5)
    assert stats["ratio_mean"] == pytest.approx(sum([1.0, 1.1, 1.3, 0.7, 0.9, 1.5, 0.5]) / 7)
    # clip-higher lets 1.3 through
    _, stats = policy_loss(ratios.log(), torch.zeros(1, 8), adv, mask, clip_high=0.35)
    assert stats["clipfrac"] == pytest.approx(1 / 7)
    # dual clip with c = 1.4 caps the A<0 token at ratio 1.5
    _, stats = policy_loss(ratios.log(), torch.zeros(1, 8), adv, mask, dual_clip=1.4)
    assert stats["dual_clipfrac"] == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(ratios.log(), torch.zeros(1, 8), adv, mask, dual_clip=0.9)


def test_policy_loss_gradient_is_zero_exactly_on_clipped_and_masked_tokens():
    ratios = torch.tensor([[1.0, 1.1, 1.3, 0.7, 0.9, 1.5, 0.5, 4.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    logp = ratios.log().requires_grad_()
    old = torch.zeros(1, 8)
    old[0, 7] = float("-inf")  # garbage in the padding must not reach the gradient
    loss, _ = policy_loss(logp, old, adv, mask)
    loss.backward()
    g = logp.grad[0]
    assert torch.isfinite(g).all()
    assert g[2] == 0 and g[6] == 0 and g[7] == 0
    assert all(g[i] != 0 for i in (0, 1, 3, 4, 5))
    # unclipped tokens: d/dlogp of -A*ratio / n = -A*ratio / n
    assert_close(g[[0, 1, 3, 4, 5]], -(adv * ratios)[0, [0, 1, 3, 4, 5]] / 7)
    logp.grad = None
    policy_loss(logp, old, adv, mask, dual_clip=1.4)[0].backward()
    assert logp.grad[0, 5] == 0  # the dual-clipped token


def test_policy_loss_bf16_inputs_give_fp32_loss_and_gradients():
    lp = torch.randn(3, 5).bfloat16().requires_grad_()
    loss, stats = policy_loss(lp, lp.detach() + 0.1, torch.randn(3, 5).bfloat16(), torch.ones(3, 5, dtype=torch.bool))
    assert loss.dtype == torch.float32 and all(isinstance(v, float) for v in stats.values())
    loss.backward()
    assert lp.grad.dtype == torch.bfloat16 and torch.isfinite(lp.grad.float()).all()


# ---- value loss and explained variance ---------------------------------------------------------------------


@pytest.mark.parametrize("clip", [0.2, None])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_value_loss_matches_loop(clip, mode):
    mask = make_mask(9)
    v, ret = rand_rows(10, 6, 7), rand_rows(11, 6, 7)
    old = [[x + d for x, d in zip(r, dr)] for r, dr in zip(v, rand_rows(12, 6, 7, scale=0.5))]
    values = t(v).requires_grad_()
    loss, stats = value_loss(values, t(old), t(ret), torch.tensor(mask), clip=clip, agg=mode)
    ref_loss, ref_frac = ref_value(v, old, ret, mask, clip, mode)
    assert_close(loss, torch.tensor(ref_loss))
    assert stats["vf_clipfrac"] == pytest.approx(ref_frac) and (clip is None or ref_frac > 0)
    loss.backward()
    assert torch.all(values.grad[~torch.tensor(mask)] == 0)


def test_explained_variance():
    mask = make_mask(13)
    v, ret = rand_rows(14, 6, 7), rand_rows(15, 6, 7)
    valid = [(v[b][i], ret[b][i]) for b in range(6) for i in range(7) if mask[b][i]]
    expected = 1 - ref_var([r - x for x, r in valid]) / ref_var([r for _, r in valid])
    assert explained_variance(t(v), t(ret), torch.tensor(mask)) == pytest.approx(expected, rel=1e-5)
    assert explained_variance(t(ret), t(ret), torch.tensor(mask)) == pytest.approx(1.0)
    assert explained_variance(t(v), torch.ones(6, 7), torch.tensor(mask)) == 0.0  # Var[R] = 0
    assert explained_variance(t(v), t(ret), torch.zeros(6, 7)) == 0.0


# ---- log-probabilities and entropy from logits -------------------------------------------------------------


def reference_logprobs(logits, labels, temperature=1.0):
    return torch.log_softmax(logits.double() / temperature, -1).gather(-1, labels[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_log_softmax_gather(chunk_size, temperature):
    g = torch.Generator().manual_seed(0)
    full = torch.randn(3, 6, 11, generator=g) * 3
    logits = full[:, :-1]  # the usual non-contiguous slice
    labels = torch.randint(0, 11, (3, 5), generator=g)
    got = token_logprobs(logits, labels, temperature, chunk_size)
    assert got.dtype == torch.float32
    assert_close(got, reference_logprobs(logits, labels, temperature).float())
    # gradient equals autograd through log_softmax
    x = logits.clone().requires_grad_()
    w = torch.randn(3, 5, generator=g)
    (token_logprobs(x, labels, temperature, chunk_size) * w).sum().backward()
    y = logits.clone().requires_grad_()
    (torch.log_softmax(y / temperature, -1).gather(-1, labels[..., None]).squeeze(-1) * w).sum().backward()
    assert_close(x.grad, y.grad)


def test_token_logprobs_gradcheck_and_ignore_index():
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[0, 4, -100], [2, 2, 1]])
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, labels, 0.8, chunk_size=2), (x,))
    out = token_logprobs(x, labels)
    assert out[0, 2] == 0
    out.sum().backward()
    assert torch.all(x.grad[0, 2] == 0)


def test_token_logprobs_bf16_close_and_never_saves_full_fp32_logits():
    g = torch.Generator().manual_seed(1)
    B, T, V = 2, 8, 64
    logits = (torch.randn(B, T, V, generator=g) * 4).bfloat16().requires_grad_()
    labels = torch.randint(0, V, (B, T), generator=g)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append((s.dtype, s.numel())) or s, lambda s: s):
        got = token_logprobs(logits, labels, chunk_size=4)
        ent = entropy_from_logits(logits, chunk_size=4)
    assert got.dtype == ent.dtype == torch.float32
    assert_close(got, reference_logprobs(logits.float(), labels).float(), atol=1e-5, rtol=1e-5)
    assert (torch.bfloat16, B * T * V) in saved  # the hook sees what the autograd functions keep
    assert not any(dtype == torch.float32 and n >= B * T * V for dtype, n in saved)
    (got.sum() + ent.sum()).backward()
    assert logits.grad.dtype == torch.bfloat16
    ref = logits.detach().float().requires_grad_()
    (torch.log_softmax(ref, -1).gather(-1, labels[..., None]).sum()
     - (torch.softmax(ref, -1) * torch.log_softmax(ref, -1)).sum()).backward()
    assert_close(logits.grad.float(), ref.grad, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_entropy_matches_reference_and_its_gradient(chunk_size):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64) * 2
    logits[0, 0, :3] = float("-inf")  # a masked vocabulary entry
    p = torch.softmax(logits, -1)
    expected = -(torch.where(p > 0, p * torch.log_softmax(logits, -1), 0.0)).sum(-1)
    x = logits.clone().requires_grad_()
    got = entropy_from_logits(x, chunk_size)
    assert_close(got, expected)
    w = torch.randn(2, 5, generator=g, dtype=torch.float64)
    (got * w).sum().backward()
    assert torch.isfinite(x.grad).all()
    finite = torch.randn(1, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(z, chunk_size, temperature=0.5), (finite,))
    assert_close(entropy_from_logits(torch.zeros(1, 1, 8)), torch.tensor([[math.log(8)]]))


def test_logit_functions_reject_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), temperature=0)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        token_logprobs(torch.zeros(1, 2), torch.zeros(1, 1, dtype=torch.long))


@pytest.mark.gpu
def test_losses_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 6, 50, generator=g)
    labels = torch.randint(0, 50, (2, 6), generator=g)
    mask = torch.tensor(make_mask(16, B=2, T=6))
    lp, adv = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    for dtype in (torch.float32, torch.bfloat16):
        cpu = token_logprobs(logits.to(dtype), labels, chunk_size=5)
        gpu = token_logprobs(logits.to(dtype).cuda(), labels.cuda(), chunk_size=5)
        assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
        assert_close(entropy_from_logits(logits.to(dtype).cuda()).cpu(), entropy_from_logits(logits.to(dtype)),
                     atol=1e-4, rtol=1e-4)
        loss_c, _ = policy_loss(lp.to(dtype), lp.to(dtype) * 0.9, adv, mask, dual_clip=3.0)
        loss_g, _ = policy_loss(lp.to(dtype).cuda(), lp.to(dtype).cuda() * 0.9, adv.cuda(), mask.cuda(), dual_clip=3.0)
        assert_close(loss_g.cpu(), loss_c)
        assert_close(kl_loss(lp.cuda(), adv.cuda(), mask.cuda()).cpu(), kl_loss(lp, adv, mask))


def test_policy_loss_registry_names_plugins_and_refuses_a_taken_name():
    from openrft.rl.losses import POLICY_LOSSES, get_policy_loss, register_policy_loss

    assert get_policy_loss("ppo") is policy_loss and get_policy_loss("openrft.rl.losses:policy_loss") is policy_loss
    with pytest.raises(ValueError, match="'ppo' is already registered"):
        register_policy_loss("ppo")
    with pytest.raises(ValueError, match="unknown policy loss 'gspo'"):
        get_policy_loss("gspo")

    @register_policy_loss("test-zero")
    def zero(logp, old_logp, advantages, mask, **_):
        return (logp * 0).sum(), {"loss": 0.0}

    try:
        assert get_policy_loss("test-zero") is zero
    finally:
        del POLICY_LOSSES["test-zero"]
