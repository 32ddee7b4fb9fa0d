"""Helpers for the SFT tests: short synthetic samples and traces.jsonl files in the synthesize format."""

from __future__ import annotations

import json

import pytest

from openrft.data.sample import Sample
from openrft.tasks import task_for


def short_samples(n: int = 8) -> list[Sample]:
    """Small-number addition questions with four options: short prompts keep the tiny-model tests fast."""
    out = []
    for i in range(n):
        a, b = i + 2, i + 3
        right = a + b
        choices = [str(right + d) for d in (0, 1, -1, 2)]
        order = [(i + k) % 4 for k in range(4)]
        opts = [choices[k] for k in order]
        out.append(Sample(id=f"add/{i}", task="add", question=f"What is {a} + {b}?", choices=tuple(opts),
                          answer="ABCD"[opts.index(str(right))], answer_type="mcq"))
    return out


def trace_for(sample: Sample) -> str:
    a, b = sample.question.removeprefix("What is ").removesuffix("?").split(" + ")
    return f"{a} plus {b} is {int(a) + int(b)}. {task_for(sample).render_answer(sample)}"


def record(sample: Sample, traces: list[str], fallback: bool = False) -> dict:
    return {"id": sample.id, "sample": sample.to_dict(), "traces": [{"text": t, "extracted": sample.answer} for t in traces],
            "attempts": 4, "correct": 0 if fallback else len(traces), "pass_rate": 0.0 if fallback else len(traces) / 4,
            "fallback": fallback, "teacher": None}


def write_traces(path, samples, fallback_ids=(), lines=()):
    """traces.jsonl with one reasoning trace per sample; ids in ``fallback_ids`` get the bare answer instead."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            fb = s.id in fallback_ids
            f.write(json.dumps(record(s, [task_for(s).render_answer(s) if fb else trace_for(s)], fb)) + "\n")
        for line in lines:
            f.write(line + "\n")
    return path


@pytest.fixture
def traces_file(tmp_path):
    return write_traces(tmp_path / "traces.jsonl", short_samples(8), fallback_ids={"add/7"})


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, bundled_tokenizer):
    """Like the shared ``tiny_model_dir`` (random Llama, SmolLM2's real tokenizer and chat template) but with
    hidden size 16: its 49k-token output layer dominates a training step, so this cuts the stage tests' time.
    The larger init range gives the logits enough spread for a rank-4 LoRA to move the loss in a few steps."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = bundled_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("micro-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
