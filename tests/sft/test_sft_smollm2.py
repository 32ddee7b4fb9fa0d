"""SFT on the bundled SmolLM2-135M with real SciKnowEval samples: the loss falls and the adapter reloads."""

from __future__ import annotations

import json

import pytest
import torch

from openrft.data.loaders import load_bundled
from openrft.models.loading import load_model
from openrft.sft import SFTStageConfig, completion_loss, run_sft
from openrft.sft.dataset import load_sft_examples, to_rows
from openrft.tasks import task_for


@pytest.mark.slow
def test_lora_warmup_on_smollm2_lowers_completion_loss_and_adapter_reloads(tmp_path):
    from peft import PeftModel

    # the 8 shortest chemical_calculation training questions, with bare-answer traces (synthesize's fallback form)
    samples = sorted(load_bundled("sciknoweval/chemical_calculation", split="train"), key=lambda s: len(s.question))[:8]
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps({
        "id": s.id, "sample": s.to_dict(), "traces": [{"text": task_for(s).render_answer(s), "extracted": s.answer}],
        "attempts": 4, "correct": 0, "pass_rate": 0.0, "fallback": True, "teacher": None}) + "\n" for s in samples))

    config = SFTStageConfig(model="smollm2-135m", epochs=2, batch_size=8, learning_rate=2e-3, lora_rank=4)
    result = run_sft(traces, tmp_path / "sft", config, show_progress=False)
    assert result.steps == 2 and result.examples == 8
    assert result.loss_after < result.loss_before - 0.1

    rows = to_rows(load_sft_examples(traces))[:2]
    model, tok = load_model("smollm2-135m")
    base = completion_loss(model, tok, rows)
    tuned = PeftModel.from_pretrained(model, str(result.weights_dir)).eval()
    assert completion_loss(tuned, tok, rows) < base - 0.1
    assert isinstance(tuned.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"], torch.nn.Linear)
