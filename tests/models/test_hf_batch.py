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
