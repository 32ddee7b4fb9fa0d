"""The running decode batch: rows with their own sampling parameters share it, join late, leave and come back."""

from __future__ import annotations

import torch

from openrft.models.backends.base import SamplingParams
from openrft.models.backends.hf import render_prompt

PROMPTS = [[{"role": "user", "content": "What is 2+3?"}], "The capital of France is",
           [{"role": "user", "content": "Write a haiku about the sea."}]]
PARAMS = [SamplingParams(max_new_tokens=12),
          SamplingParams(n=2, temperature=1.0, top_p=0.9, seed=4, max_new_tokens=10),
          SamplingParams(temperature=0.7, seed=9, max_new_tokens=30, stop=("e",))]


def rows_of(gen, i: int, top_logprobs=None):
    return gen.rows_for(gen.encode([PROMPTS[i]]), PARAMS[i], top_logprobs, key_base=10 * i)


def test_rows_with_their_own_params_joining_leaving_and_returning_get_what_generate_gives(tiny_generator):
    gen = tiny_generator
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
