"""Several sampling settings in one pass (an evaluation's sampled runs and its greedy run): each prompt prefills
once for all its rows, and each setting's completions are what a call with that setting alone gives."""

from __future__ import annotations

import pytest

from openrft.data.loaders import load_bundled
from openrft.models.backends.base import SamplingParams, generate_settings
from openrft.models.backends.hf_batch import DecodeBatch

SAMPLED = SamplingParams(n=2, temperature=0.7, max_new_tokens=24, seed=3)
GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=24, seed=3)


def _prompts(k: int = 3):
    from openrft.tasks import task_for

    samples = load_bundled("arithmetic")[:k]
    return [task_for(s).messages(s) for s in samples]


class OnlyGenerate:
    """A real generator seen through ``generate`` alone, as a backend without a one-pass path is."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, prompts, params, progress=None):
        self.calls.append(params)
        return self.inner.generate(prompts, params, progress)


@pytest.fixture(scope="module")
def bundled_generator(smollm2):
    from openrft.models.backends.hf import TransformersGenerator

    model, tokenizer = smollm2
    return TransformersGenerator(model, tokenizer, batch_size=16)


@pytest.mark.slow
def test_one_pass_prefills_each_prompt_once_and_matches_separate_calls_on_bundled_model(bundled_generator,
                                                                                      monkeypatch):
    prompts = _prompts()
    prefilled: list[int] = []
    real = DecodeBatch._prefill

    def counting(self, seqs, record):
        prefilled.append(len(seqs))
        return real(self, seqs, record)

    monkeypatch.setattr(DecodeBatch, "_prefill", counting)
    items: dict[int, list] = {}
    outs = generate_settings(bundled_generator, prompts, [SAMPLED, GREEDY], lambda i, o: items.setdefault(i, o))
    assert prefilled == [len(prompts)], "the 3 rows of each prompt share its one prefill"
    prefilled.clear()
    sampled = bundled_generator.generate(prompts, SAMPLED)
    greedy = bundled_generator.generate(prompts, GREEDY)
    assert prefilled == [len(prompts), len(prompts)]
    assert items == dict(enumerate(outs))
    for i in range(len(prompts)):
        assert len(outs[i]) == 3
        assert outs[i][:2] == sampled[i], "each sample keeps the seed it has in a sampled call alone"
        assert outs[i][2:] == greedy[i]
        assert list(outs[i][2].token_ids) == list(greedy[i][0].token_ids)


def test_a_generator_without_one_pass_runs_a_call_per_setting(tiny_generator):
    prompts = _prompts(2)
    wrapped = OnlyGenerate(tiny_generator)
    items: dict[int, list] = {}
    outs = generate_settings(wrapped, prompts, [SAMPLED, GREEDY], lambda i, o: items.setdefault(i, o))
    assert wrapped.calls == [SAMPLED, GREEDY]
    assert items == dict(enumerate(outs))
    direct = generate_settings(tiny_generator, prompts, [SAMPLED, GREEDY], lambda i, o: None)
    assert [[c.text for c in o] for o in outs] == [[c.text for c in o] for o in direct]
    with pytest.raises(ValueError, match="at least one"):
        generate_settings(wrapped, prompts, [], lambda i, o: None)
    with pytest.raises(ValueError, match="at least one"):
        generate_settings(tiny_generator, prompts, [], lambda i, o: None)
