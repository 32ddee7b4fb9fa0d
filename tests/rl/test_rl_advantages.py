"""Advantage estimators against plain-Python loop implementations, plus their properties."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from openrft.rl.advantages import (
    ESTIMATORS, AdvantageSettings, AdvantageOutput, compute_advantages, gae, get_estimator, grpo,
    last_token_index, masked_mean, masked_sum, masked_var, masked_whiten, place_at_last_token,
    register_estimator, reinforce_pp, rloo,
)

EPS = 1e-6

# ---- random batches: lists are the truth, tensors carry garbage in padding ------------------------


def make_batch(seed: int, group_sizes=(1, 2, 4, 3, 2), T: int = 8, equal_group: bool = True):
    rng = random.Random(seed)
    gids = rng.sample(range(10, 1000), len(group_sizes))
    ids = [g for g, k in zip(gids, group_sizes) for _ in range(k)]
    rng.shuffle(ids)
    B = len(ids)
    lengths = [rng.randint(1, T) for _ in range(B)]
    lengths[rng.randrange(B)] = 0
    lengths[rng.randrange(B)] = T
    scores = [round(rng.gauss(0, 1), 3) for _ in range(B)]
    if equal_group:  # the group of 4: all rewards equal
        scores = [0.7 if g == gids[2] else s for g, s in zip(ids, scores)]
    values = [[rng.gauss(0, 1) for _ in range(T)] for _ in range(B)]
    penalty = [[rng.gauss(0, 0.1) for _ in range(T)] for _ in range(B)]
    step_pos, step_val = [], []
    for L in lengths:
        pos = sorted(rng.sample(range(L), rng.randint(0, min(3, L))))
        if L and rng.random() < 0.5 and (L - 1) not in pos:
            pos.append(L - 1)
        step_pos.append(pos)
        step_val.append([rng.choice([0.0, 1.0, round(rng.gauss(0, 1), 3)]) for _ in pos])
    mask = torch.tensor([[t < L for t in range(T)] for L in lengths])
    step_mask = torch.zeros(B, T, dtype=torch.bool)
    step_rewards = torch.randn(B, T, generator=torch.Generator().manual_seed(seed)) * 10  # garbage off steps
    for b, (pos, val) in enumerate(zip(step_pos, step_val)):
        for p, v in zip(pos, val):
            step_mask[b, p], step_rewards[b, p] = True, v
    short = next(b for b, L in enumerate(lengths) if L < T)
    step_mask[short, T - 1] = True  # a step mark in the padding must be ignored
    return SimpleNamespace(
        B=B, T=T, ids=ids, lengths=lengths, scores=scores, values=values, penalty=penalty,
        step_pos=step_pos, step_val=step_val, mask=mask, step_mask=step_mask, step_rewards=step_rewards,
        t_scores=torch.tensor(scores), t_ids=torch.tensor(ids), t_values=torch.tensor(values),
        t_penalty=torch.tensor(penalty),
    )


def as_tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---- loop references ------------------------------------------------------------------------------


def members(ids, i):
    return [j for j in range(len(ids)) if ids[j] == ids[i]]


def ref_normalize(x, pool, norm_by_std, eps=EPS):
    """x minus the pool mean (divided by its unbiased std + eps); 0 if the pool is constant or single."""
    if len(pool) <= 1 or max(pool) == min(pool):
        return 0.0
    mean = sum(pool) / len(pool)
    if not norm_by_std:
        return x - mean
    std = math.sqrt(sum((p - mean) ** 2 for p in pool) / (len(pool) - 1))
    return (x - mean) / (std + eps)


def ref_whiten(rows, lengths, eps=EPS):
    flat = [rows[b][t] for b in range(len(rows)) for t in range(lengths[b])]
    mean = sum(flat) / len(flat)
    var = sum((x - mean) ** 2 for x in flat) / (len(flat) - 1)
    return [[(rows[b][t] - mean) / math.sqrt(var + eps) if t < lengths[b] else 0.0 for t in range(len(rows[b]))]
            for b in range(len(rows))]


def ref_token_rewards(d, scores, dense, penalty):
    out = []
    for b in range(d.B):
        r = [0.0] * d.T
        L = d.lengths[b]
        for t in range(L):
            if penalty:
                r[t] += d.penalty[b][t]
            if t == L - 1:
                r[t] += scores[b]
        if dense:
            for p, v in zip(d.step_pos[b], d.step_val[b]):
                r[p] += v
        out.append(r)
    return out


def ref_gae(d, gamma, lam, whiten, dense=True, penalty=True):
    rewards = ref_token_rewards(d, d.scores, dense, penalty)
    adv, ret = [], []
    for b in range(d.B):
        L = d.lengths[b]
        a = [0.0] * d.T
        running = 0.0
        for t in reversed(range(L)):
            next_v = d.values[b][t + 1] if t + 1 < L else 0.0
            delta = rewards[b][t] + gamma * next_v - d.values[b][t]
            running = delta + gamma * lam * running
            a[t] = running
        adv.append(a)
        ret.append([a[t] + d.values[b][t] if t < L else 0.0 for t in range(d.T)])
    return (ref_whiten(adv, d.lengths) if whiten else adv), ret


def ref_step_credit(d, b, normed, credit):
    out = [0.0] * d.T
    for t in range(d.lengths[b]):
        later = [(p, v) for p, v in zip(d.step_pos[b], normed) if p >= t]
        if credit == "cumulative":
            out[t] = sum(v for _, v in later)
        elif later:
            out[t] = later[0][1]
    return out


def ref_group_advantages(d, seq_fn, step_norm_by_std, credit, dense, penalty):
    s = [d.scores[b] + (sum(d.penalty[b][:d.lengths[b]]) if penalty else 0.0) for b in range(d.B)]
    out = []
    for b in range(d.B):
        seq = seq_fn(s, b)
        row = [seq if t < d.lengths[b] else 0.0 for t in range(d.T)]
        if dense:
            pool = [v for j in members(d.ids, b) for v in d.step_val[j]]
            normed = [ref_normalize(v, pool, step_norm_by_std) for v in d.step_val[b]]
            row = [x + y for x, y in zip(row, ref_step_credit(d, b, normed, credit))]
        out.append(row)
    return out


def ref_grpo(d, norm_by_std=True, credit="local", dense=False, penalty=False):
    def seq(s, b):
        return ref_normalize(s[b], [s[j] for j in members(d.ids, b)], norm_by_std)

    return ref_group_advantages(d, seq, norm_by_std, credit, dense, penalty)


def ref_rloo(d, credit="local", dense=False, penalty=False):
    def seq(s, b):
        group = [s[j] for j in members(d.ids, b)]
        others = [s[j] for j in members(d.ids, b) if j != b]
        if not others or max(group) == min(group):
            return 0.0
        return s[b] - sum(others) / len(others)

    return ref_group_advantages(d, seq, False, credit, dense, penalty)


def ref_reinforce_pp(d, gamma, whiten, baseline, dense=True, penalty=True):
    scores = list(d.scores)
    if baseline:
        scores = [ref_normalize(d.scores[b], [d.scores[j] for j in members(d.ids, b)], False) for b in range(d.B)]
    rewards = ref_token_rewards(d, scores, dense, penalty)
    ret = []
    for b in range(d.B):
        g, row = 0.0, [0.0] * d.T
        for t in reversed(range(d.lengths[b])):
            g = rewards[b][t] + gamma * g
            row[t] = g
        ret.append(row)
    return (ref_whiten(ret, d.lengths) if whiten else ret), ret


# ---- masked statistics ----------------------------------------------------------------------------


def test_masked_statistics_match_loops():
    d = make_batch(0)
    x = d.t_values
    flat = [d.values[b][t] for b in range(d.B) for t in range(d.lengths[b])]
    mean = sum(flat) / len(flat)
    assert_close(masked_sum(x, d.mask), torch.tensor(sum(flat)))
    assert_close(masked_mean(x, d.mask.float()), torch.tensor(mean))
    assert_close(masked_var(x, d.mask), torch.tensor(sum((v - mean) ** 2 for v in flat) / (len(flat) - 1)))
    assert_close(masked_var(x, d.mask, unbiased=False), torch.tensor(sum((v - mean) ** 2 for v in flat) / len(flat)))
    row_means = [sum(d.values[b][:L]) / L if L else 0.0 for b, L in enumerate(d.lengths)]
    assert_close(masked_mean(x, d.mask, dim=-1), as_tensor(row_means))
    assert_close(masked_whiten(x, d.mask, eps=EPS), as_tensor(ref_whiten(d.values, d.lengths)))
    unshifted = masked_whiten(x, d.mask, shift_mean=False)
    assert_close(unshifted, torch.where(d.mask, masked_whiten(x, d.mask) + mean, 0.0))


def test_masked_statistics_ignore_nan_padding_and_empty_masks():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    mask = torch.tensor([[1, 0], [0, 1]])
    assert masked_sum(x, mask).item() == 3.0
    empty = torch.zeros(2, 2)
    assert masked_mean(x, empty).item() == 0.0 and masked_var(x, empty).item() == 0.0
    assert masked_var(torch.ones(1, 1), torch.ones(1, 1)).item() == 0.0
    assert torch.equal(masked_whiten(x, empty), torch.zeros(2, 2))
    assert masked_mean(x.bfloat16(), mask).dtype == torch.float32


def test_last_token_index_and_place_at_last_token():
    d = make_batch(1)
    assert last_token_index(d.mask).tolist() == [L - 1 for L in d.lengths]
    placed = place_at_last_token(d.t_scores, d.mask.float())
    expected = [[d.scores[b] if t == d.lengths[b] - 1 else 0.0 for t in range(d.T)] for b in range(d.B)]
    assert_close(placed, as_tensor(expected))
    assert last_token_index(torch.zeros(2, 0)).tolist() == [-1, -1]


# ---- gae ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("gamma", "lam", "whiten"), [(1.0, 0.95, True), (0.9, 0.8, False), (1.0, 1.0, False)])
def test_gae_matches_loop(seed, gamma, lam, whiten):
    d = make_batch(seed)
    out = gae(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, values=d.t_values, step_rewards=d.step_rewards,
              step_mask=d.step_mask, token_penalty=d.t_penalty,
              config=AdvantageSettings(gamma=gamma, lam=lam, whiten=whiten, eps=EPS))
    adv, ret = ref_gae(d, gamma, lam, whiten)
    assert_close(out.advantages, as_tensor(adv))
    assert_close(out.returns, as_tensor(ret))
    assert out.advantages.dtype == out.returns.dtype == torch.float32


def test_gae_with_lambda_and_gamma_one_is_return_to_go_minus_value():
    d = make_batch(2)
    out = gae(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, values=d.t_values,
              config=AdvantageSettings(gamma=1.0, lam=1.0, whiten=False))
    to_go = torch.where(d.mask, place_at_last_token(d.t_scores, d.mask).flip(1).cumsum(1).flip(1), 0.0)
    assert_close(out.advantages, torch.where(d.mask, to_go - d.t_values, 0.0))
    assert_close(out.returns, to_go)


def test_gae_needs_values():
    d = make_batch(0)
    with pytest.raises(ValueError, match="values"):
        gae(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids)


# ---- grpo / Dr.GRPO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("penalty", [False, True])
def test_grpo_outcome_matches_loop(seed, norm_by_std, penalty):
    d = make_batch(seed)
    out = grpo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, token_penalty=d.t_penalty if penalty else None,
               config=AdvantageSettings(norm_by_std=norm_by_std, eps=EPS))
    assert_close(out.advantages, as_tensor(ref_grpo(d, norm_by_std, penalty=penalty)))
    assert out.returns is None
    assert out.stats["num_groups"] == 5.0
    # the singleton group always, and the all-equal group of 4 unless the penalty separates its members
    assert out.stats["zero_std_groups"] == (1.0 if penalty else 2.0)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("credit", ["local", "cumulative"])
@pytest.mark.parametrize("norm_by_std", [True, False])
def test_grpo_dense_matches_loop(seed, credit, norm_by_std):
    d = make_batch(seed)
    out = grpo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, step_rewards=d.step_rewards,
               step_mask=d.step_mask, config=AdvantageSettings(norm_by_std=norm_by_std, step_credit=credit, eps=EPS))
    assert_close(out.advantages, as_tensor(ref_grpo(d, norm_by_std, credit, dense=True)))
    assert "zero_std_step_groups" in out.stats


def test_dr_grpo_is_score_minus_group_mean():
    d = make_batch(4, equal_group=False)
    out = grpo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, config=AdvantageSettings(norm_by_std=False))
    means = torch.tensor([sum(d.scores[j] for j in members(d.ids, b)) / len(members(d.ids, b)) for b in range(d.B)])
    assert_close(out.advantages, torch.where(d.mask, (d.t_scores - means)[:, None], 0.0))


def test_dense_local_credit_penalises_only_the_wrong_step():
    # response 0 has 3 steps scored [1, 0, 1]; the other responses of its group score 1 on every step
    T, ends = 9, [2, 5, 8]
    mask = torch.ones(4, T, dtype=torch.bool)
    step_mask = torch.zeros(4, T, dtype=torch.bool)
    step_mask[:, ends] = True
    step_rewards = torch.zeros(4, T)
    step_rewards[:, ends] = 1.0
    step_rewards[0, 5] = 0.0
    out = grpo(scores=torch.ones(4), mask=mask, group_ids=torch.zeros(4, dtype=torch.long),
               step_rewards=step_rewards, step_mask=step_mask)
    a = out.advantages[0]
    assert torch.all(a[3:6] < a[0:3]) and torch.all(a[3:6] < a[6:9])
    assert torch.equal(a[0:3], a[6:9]) and len(set(a[0:3].tolist())) == 1
    assert out.stats["zero_std_groups"] == 1.0  # outcome scores all equal


# ---- rloo ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("dense", "credit", "penalty"), [(False, "local", False), (False, "local", True),
                                                          (True, "local", False), (True, "cumulative", True)])
def test_rloo_matches_loop(seed, dense, credit, penalty):
    d = make_batch(seed)
    out = rloo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, token_penalty=d.t_penalty if penalty else None,
               step_rewards=d.step_rewards if dense else None, step_mask=d.step_mask,
               config=AdvantageSettings(step_credit=credit))
    assert_close(out.advantages, as_tensor(ref_rloo(d, credit, dense, penalty)))


def test_rloo_is_k_over_k_minus_one_times_dr_grpo():
    d = make_batch(5, equal_group=False)
    dr = grpo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, config=AdvantageSettings(norm_by_std=False))
    k = torch.tensor([float(len(members(d.ids, b))) for b in range(d.B)])
    scale = torch.where(k > 1, k / (k - 1).clamp_min(1), 0.0)[:, None]
    out = rloo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids)
    assert_close(out.advantages, dr.advantages * scale)


# ---- reinforce++ --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("gamma", "whiten", "baseline"), [(1.0, True, False), (0.95, False, True),
                                                           (1.0, True, True)])
def test_reinforce_pp_matches_loop(seed, gamma, whiten, baseline):
    d = make_batch(seed)
    out = reinforce_pp(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, step_rewards=d.step_rewards,
                       step_mask=d.step_mask, token_penalty=d.t_penalty,
                       config=AdvantageSettings(gamma=gamma, whiten=whiten, rpp_baseline=baseline, eps=EPS))
    adv, ret = ref_reinforce_pp(d, gamma, whiten, baseline)
    assert_close(out.advantages, as_tensor(adv))
    assert_close(out.returns, as_tensor(ret))


def test_reinforce_pp_baseline_needs_group_ids():
    d = make_batch(0)
    with pytest.raises(ValueError, match="group_ids"):
        reinforce_pp(scores=d.t_scores, mask=d.mask, config=AdvantageSettings(rpp_baseline=True))


# ---- properties shared by all estimators --------------------------------------------------------------


def all_estimator_calls(d, dtype=torch.float32, mask=None):
    mask = d.mask if mask is None else mask
    common = dict(scores=d.t_scores.to(dtype), mask=mask, group_ids=d.t_ids, values=d.t_values.to(dtype),
                  step_rewards=d.step_rewards.to(dtype), step_mask=d.step_mask, token_penalty=d.t_penalty.to(dtype))
    for name in ("gae", "grpo", "rloo", "reinforce_pp"):
        for cfg in (AdvantageSettings(), AdvantageSettings(norm_by_std=False, step_credit="cumulative",
                                                       rpp_baseline=True, whiten=False)):
            yield name, compute_advantages(name, config=cfg, **common)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_estimator_is_finite_fp32_and_zero_on_padding(dtype):
    d = make_batch(6)
    float_mask = d.mask.float()
    for name, out in all_estimator_calls(d, dtype, float_mask):
        assert isinstance(out, AdvantageOutput)
        assert out.advantages.dtype == torch.float32, name
        assert torch.isfinite(out.advantages).all(), name
        assert torch.all(out.advantages[~d.mask] == 0), name
        assert all(isinstance(v, float) and math.isfinite(v) for v in out.stats.values()), name
        if out.returns is not None:
            assert torch.all(out.returns[~d.mask] == 0) and out.returns.dtype == torch.float32


def test_all_equal_and_single_groups_give_exactly_zero():
    mask = torch.ones(6, 3)
    scores = torch.tensor([0.1, 0.1, 0.1, 5.0, 0.3, 0.2])  # 0.1 * 3 / 3 != 0.1 in floating point
    ids = torch.tensor([7, 7, 7, 9, 4, 4])
    for name in ("grpo", "rloo"):
        for cfg in (AdvantageSettings(), AdvantageSettings(norm_by_std=False)):
            out = compute_advantages(name, scores=scores, mask=mask, group_ids=ids, config=cfg)
            assert torch.all(out.advantages[:4] == 0), name
            assert torch.all(out.advantages[4:] != 0), name
            assert out.stats["zero_std_groups"] == 2.0
    out = reinforce_pp(scores=scores, mask=mask, group_ids=ids,
                       config=AdvantageSettings(rpp_baseline=True, whiten=False))
    assert torch.all(out.returns[:4] == 0) and out.stats["zero_std_groups"] == 2.0


def test_a_batch_of_empty_rows_is_all_zero():
    mask = torch.zeros(3, 4)
    ids = torch.tensor([0, 0, 1])
    for name in ESTIMATORS:
        out = compute_advantages(name, scores=torch.tensor([1.0, 0.0, 2.0]), mask=mask, group_ids=ids,
                                 values=torch.randn(3, 4), step_rewards=torch.ones(3, 4),
                                 step_mask=torch.ones(3, 4, dtype=torch.bool))
        assert torch.equal(out.advantages, torch.zeros(3, 4)), name
        assert all(math.isfinite(v) for v in out.stats.values())


# ---- registry, config and input checks -------------------------------------------------------------------


def test_registry_lists_names_and_accepts_plugins():
    assert {"gae", "grpo", "rloo", "reinforce_pp"} <= set(ESTIMATORS)
    with pytest.raises(ValueError, match="grpo.*reinforce_pp.*rloo"):
        get_estimator("ppo2")
    assert get_estimator("openrft.rl.advantages:rloo") is rloo

    @register_estimator("test-zero")
    def zero(*, scores, mask, group_ids, config=None, **_):
        return AdvantageOutput(torch.zeros(mask.shape), None, {"grad_enabled": float(torch.is_grad_enabled())})

    try:
        out = compute_advantages("test-zero", scores=torch.ones(2), mask=torch.ones(2, 3), group_ids=torch.zeros(2))
        assert out.advantages.shape == (2, 3) and out.stats["grad_enabled"] == 0.0
        with pytest.raises(ValueError, match="'grpo' is already registered"):
            register_estimator("grpo")
        with pytest.raises(ValueError, match="'test-zero' is already registered"):
            register_estimator("test-zero")(zero)
    finally:
        del ESTIMATORS["test-zero"]
    with pytest.raises(ValueError, match="openrft.rl.advantages:no_such"):
        get_estimator("openrft.rl.advantages:no_such")


def test_estimators_build_no_autograd_graph():
    d = make_batch(0)
    values = d.t_values.clone().requires_grad_()
    out = gae(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, values=values)
    assert not out.advantages.requires_grad and not out.returns.requires_grad


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="step_credit"):
        AdvantageSettings(step_credit="global")
    with pytest.raises(ValueError, match="lam"):
        AdvantageSettings(lam=1.5)
    d = make_batch(0)
    with pytest.raises(ValueError, match="scores must have shape"):
        grpo(scores=d.t_scores[:-1], mask=d.mask, group_ids=d.t_ids)
    with pytest.raises(ValueError, match="step_mask must have"):
        grpo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, step_rewards=d.step_rewards,
             step_mask=d.step_mask[:, :-1])
    with pytest.raises(ValueError, match="needs step_mask"):
        rloo(scores=d.t_scores, mask=d.mask, group_ids=d.t_ids, step_rewards=d.step_rewards)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    d = make_batch(7)
    dc = SimpleNamespace(**{k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in vars(d).items()})
    for (name, ref), (_, out) in zip(all_estimator_calls(d), all_estimator_calls(dc), strict=True):
        assert out.advantages.is_cuda, name
        assert_close(out.advantages.cpu(), ref.advantages)
        assert out.stats.keys() == ref.stats.keys()
