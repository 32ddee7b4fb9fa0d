"""The running decode batch: rows with their own sampling parameters share it, join late, leave and come back."""

from __future__ import annotations

import pytest
import torch

from openrft.models.backends.base import SamplingParams
from openrft.models.backends.hf import TransformersGenerator, render_prompt
from openrft.models.backends.hf_batch import SHARE_ENV, _heads, _pays, family_order, shared_prefixes

PROMPTS = [[{"role": "user", "content": "What is 2+3?"}], "The capital of France is",
           [{"role": "user", "content": "Write a haiku about the sea."}]]
PARAMS = [SamplingParams(max_new_tokens=12),
          SamplingParams(n=2, temperature=1.0, top_p=0.9, seed=4, max_new_tokens=10),
          SamplingParams(temperature=0.7, seed=9, max_new_tokens=30, stop=("e",))]


def rows_of(gen, i: int, top_logprobs=None):
    return gen.rows_for(gen.encode([PROMPTS[i]]), PARAMS[i], top_logprobs, key_base=10 * i)


@pytest.fixture(scope="module")
def peaked_generator(tiny_model_dir):
    """The tiny random model with its final norm scaled up: next-token logits of std ~3 instead of ~0.16. The
    random model's near-uniform distribution over 49k tokens puts a seeded draw within float rounding of a
    boundary every few dozen tokens, and a row's attention over a left-padded cache rounds differently with the
    padding (a row alone vs in a batch of other lengths); here such a flip is negligible, so rows must agree
    token for token."""
    gen = TransformersGenerator.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        gen.model.model.norm.weight.mul_(20)
    return gen


def test_rows_with_their_own_params_joining_leaving_and_returning_get_what_generate_gives(peaked_generator):
    gen = peaked_generator
    batch = gen.new_batch()
    batch.add(rows_of(gen, 0) + rows_of(gen, 1))
    finished = []
    for step in range(40):
        if step == 2:  # a request joins the running batch
            batch.add(rows_of(gen, 2))
        if step == 4:  # a row is taken out (preempted) and comes back with what it sampled
            out = batch.rows[1]
            batch.discard([out])
            assert out not in batch.rows and out.tokens
        if step == 6:
            batch.add([out])
        finished += batch.step()[0]
        if not batch.rows:
            break
    assert not batch.rows and len(finished) == 4
    for i in range(3):
        got = sorted(((r.sample_idx, batch.completion(r)) for r in finished if r.params is PARAMS[i]),
                     key=lambda x: x[0])
        assert [c for _, c in got] == gen.generate([PROMPTS[i]], PARAMS[i])[0]


def test_logprobs_are_the_models_and_cover_every_token(tiny_generator):
    gen = tiny_generator
    batch = gen.new_batch()
    (row,) = rows_of(gen, 0, top_logprobs=3)
    (plain,) = rows_of(gen, 0)
    batch.add([row, plain])
    while batch.rows:
        batch.step()
    assert len(row.logprobs) == len(row.tokens) and plain.logprobs == [] and row.tokens == plain.tokens
    ids = torch.tensor([render_prompt(gen.tokenizer, PROMPTS[0])])
    with torch.no_grad():
        expected = torch.log_softmax(gen.model(ids).logits[0, -1].float(), -1)
    chosen, top = row.logprobs[0]
    assert abs(chosen - expected[row.tokens[0]].item()) < 1e-4
    assert [t for t, _ in top] == expected.topk(3).indices.tolist()
    assert top[0] == (row.tokens[0], chosen)  # greedy: the sampled token is the most likely one


def _last_hidden(model, ids: list[int]) -> torch.Tensor:
    """The LM head's input at every position of ``ids`` (one row, no padding)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.no_grad():
        return inner.model(input_ids=torch.tensor([ids])).last_hidden_state[0]


def test_rows_record_the_hidden_state_each_token_was_sampled_from(tiny_generator):
    """A row asked for hidden states gets, for each sampled token, the LM head's input its logits came from: the
    last-layer state at the position before it (the prompt's last for the first token), as a plain forward over
    prompt + tokens gives it, also after the row left the batch and came back, beside rows that record nothing."""
    gen = tiny_generator
    batch = gen.new_batch()
    recorded = gen.rows_for(gen.encode([PROMPTS[1]]), PARAMS[1], key_base=10, hidden=True)
    plain = rows_of(gen, 0)
    batch.add(plain)
    for step in range(40):
        if step == 1:  # recording rows join a batch that records nothing
            batch.add(recorded)
        if step == 3:  # one is taken out and comes back: its prefill gives the state for its next token
            out = recorded[0]
            batch.discard([out])
        if step == 5:
            batch.add([out])
        batch.step()
        if not batch.rows:
            break
    assert plain[0].hidden is None
    for row in recorded:
        completion = batch.completion(row)
        ids = list(row.prompt_ids) + list(completion.token_ids)
        expected = _last_hidden(gen.model, ids)[len(row.prompt_ids) - 1: len(ids) - 1]
        assert completion.hidden_states.shape == expected.shape
        torch.testing.assert_close(completion.hidden_states, expected, rtol=1e-4, atol=1e-4)


def test_generate_returns_hidden_states_only_when_asked_and_the_same_tokens(tiny_generator):
    """``generate(..., hidden_states=True)``: the same completions (refilled batch, packed layers or not), each
    holding ``[len(token_ids), H]`` states that match a plain forward; without it, none are kept."""
    gen = tiny_generator
    params = SamplingParams(n=3, temperature=1.0, seed=2, max_new_tokens=9)
    prompts = PROMPTS[:2]
    old_size = gen.batch_size
    gen.batch_size = 4  # rows finish and the batch refills mid-call
    try:
        with_hidden = gen.generate(prompts, params, hidden_states=True)
        without = gen.generate(prompts, params)
    finally:
        gen.batch_size = old_size
    assert with_hidden == without
    assert all(c.hidden_states is None for comps in without for c in comps)
    for prompt, comps in zip(prompts, with_hidden):
        prompt_ids = render_prompt(gen.tokenizer, prompt)
        for c in comps:
            ids = prompt_ids + list(c.token_ids)
            expected = _last_hidden(gen.model, ids)[len(prompt_ids) - 1: len(ids) - 1]
            torch.testing.assert_close(c.hidden_states, expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ prompts that start alike prefill that part once
def test_shared_prefixes_group_prompts_at_their_longest_common_start():
    system = [0] * 30
    a, b = system + list(range(1000, 1100)), system + list(range(2000, 2100))
    seqs = [a + [1], b + [5, 6], a + [2, 3], [9] * 80, a + [4], b + [7]]
    # each question's prompts group at their question (130 tokens), not all of them at the 30-token system prompt
    assert shared_prefixes(seqs, min_len=16) == [(130, [0, 2, 4]), (130, [1, 5]), (79, [3])]
    assert shared_prefixes(seqs, min_len=131) == [(len(x) - 1, [i]) for i, x in enumerate(seqs)]
    # a member keeps at least one token of its own: a prompt that is another's prefix shares all but its last
    assert shared_prefixes([a, a + [1, 2]], min_len=16) == [(129, [0, 1])]
    # the grouping saves the most tokens: one group of three at 100 beats a pair at 120 and a single
    c = list(range(100))
    assert shared_prefixes([c + [1] * 20 + [2], c + [1] * 20 + [3], c + [4]], min_len=16) == [(100, [0, 1, 2])]
    # a generate call's queue keeps a family side by side (longest family first, each longest first), so the rows
    # a decode batch takes in at once share their prefill; without families the caller keeps its own order
    assert family_order(seqs, min_len=16) == [2, 0, 4, 1, 5, 3]
    assert family_order(seqs, min_len=131) is None
    # sharing runs only when it computes fewer padded positions: one long remainder pads every other one
    assert _pays(seqs, _heads(seqs, shared_prefixes(seqs, min_len=16)))
    lopsided = [a + [1], a + [2] * 400, [5] * 300]
    assert not _pays(lopsided, _heads(lopsided, shared_prefixes(lopsided, min_len=16)))


def _spy_forwards(monkeypatch, model) -> list[tuple[int, int]]:
    """``(rows, columns)`` of every forward of ``model`` from now on."""
    shapes: list[tuple[int, int]] = []
    real = type(model).forward

    def spy(self, input_ids=None, **kwargs):
        shapes.append(tuple(input_ids.shape))
        return real(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(model), "forward", spy)
    return shapes


def test_prompts_that_start_alike_prefill_their_common_part_once_with_the_same_outputs(tiny_generator, monkeypatch):
    """Step prefixes of one reply (as PRM labelling continues them) share their prompt: it runs once (one row),
    then each prompt's own remainder (one row each) runs on its cache; the completions and every token's
    log-probabilities are those of prefilling each prompt whole, also for a prompt that shares nothing."""
    gen = tiny_generator
    question = "Question: " + " ".join(f"{k} plus {k + 1} is what number" for k in range(30)) + "\nSteps:"
    prompts = [question + " one", question + " one two three", question + " four five", "Unrelated short prompt"]
    params = SamplingParams(n=2, temperature=1.0, seed=3, max_new_tokens=6)
    encoded = gen.encode(prompts)
    groups = shared_prefixes(encoded)
    assert sorted(len(m) for _, m in groups) == [1, 3] and max(c for c, _ in groups) >= 64
    out = {}
    for share in (True, False):
        gen_ = TransformersGenerator(gen.model, gen.tokenizer, batch_size=8, share_prefixes=share)
        batch = gen_.new_batch()
        rows = gen_.rows_for(encoded, params, top_logprobs=3)
        shapes = _spy_forwards(monkeypatch, gen.model)
        batch.add(rows)
        monkeypatch.undo()
        # shared: the 2 groups' prefixes (the question's, the unrelated prompt's all but one token), then the
        # 4 distinct prompts' remainders; whole: the 4 distinct prompts once
        assert [s[0] for s in shapes] == ([2, 4] if share else [4])
        while batch.rows:
            batch.step()
        out[share] = rows
    for a, b in zip(out[True], out[False]):
        assert a.tokens == b.tokens
        for (lp_a, top_a), (lp_b, top_b) in zip(a.logprobs, b.logprobs):
            assert abs(lp_a - lp_b) < 1e-4 and [t for t, _ in top_a] == [t for t, _ in top_b]
    whole = TransformersGenerator(gen.model, gen.tokenizer, share_prefixes=False).generate(prompts, params)
    assert TransformersGenerator(gen.model, gen.tokenizer).generate(prompts, params) == whole


def test_the_environment_switch_turns_shared_prefixes_off(monkeypatch, tiny_model_dir):
    monkeypatch.setenv(SHARE_ENV, "0")
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).share_prefixes is False
    monkeypatch.delenv(SHARE_ENV)
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).share_prefixes is True
