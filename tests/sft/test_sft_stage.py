"""The SFT stage on the tiny model: it learns, touches only the adapter, masks the prompt, skips and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from sft_fixtures import short_samples, write_traces
from transformers import TrainerCallback

from openrft.cli.main import main as cli
from openrft.models.lora import load_adapter
from openrft.models.loading import load_model
from openrft.core.rundir import Manifest
from openrft.sft import SFTStageConfig, completion_loss, load_for_training, make_trainer, run_sft
from openrft.sft.dataset import load_sft_examples, to_rows, tokenize_prompt_completion


class Watch(TrainerCallback):
    """Snapshots the model at the start and end of training; optionally interrupts after step ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.begin, self.end = stop_at, None, None

    @staticmethod
    def snap(model):
        return {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.begin = self.snap(model)

    def on_step_end(self, args, state, control, **kw):
        if self.stop_at is not None and state.global_step == self.stop_at:
            raise KeyboardInterrupt

    def on_train_end(self, args, state, control, model=None, **kw):
        self.end = self.snap(model)


def config_for(model_dir, **kw) -> SFTStageConfig:
    base = dict(model=str(model_dir), epochs=3, batch_size=4, learning_rate=2e-2, lora_alpha=16, save_steps=2)
    return SFTStageConfig(**(base | kw))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, micro_model_dir):
    tmp = tmp_path_factory.mktemp("sft")
    traces = write_traces(tmp / "traces.jsonl", short_samples(8), fallback_ids={"add/7"})
    watch = Watch()
    result = run_sft(traces, tmp / "sft", config_for(micro_model_dir), callbacks=[watch], show_progress=False)
    return traces, result, watch


def test_lora_stage_learns_on_its_data_and_changes_only_the_adapter(lora_run, micro_model_dir):
    traces, result, watch = lora_run
    assert not result.skipped and result.examples == 8 and result.steps == 6  # 2 steps/epoch x 3 epochs
    assert [s for s, _ in result.losses] == [1, 2, 3, 4, 5, 6]
    assert result.last_loss < result.first_loss
    assert result.loss_after < result.loss_before - 0.2

    lora_b = [n for n in watch.begin if "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(watch.begin[n]) == 0 for n in lora_b)  # lora_B starts at zero
    assert all(torch.count_nonzero(watch.end[n]) > 0 for n in lora_b)
    base = [n for n in watch.begin if "lora_" not in n]
    assert all(torch.equal(watch.begin[n], watch.end[n]) for n in base)  # base weights untouched

    # a direct evaluation of the saved adapter on the same examples
    rows = to_rows(load_sft_examples(traces))
    model, tok = load_model(str(micro_model_dir))
    before = completion_loss(model, tok, rows)
    tuned = load_adapter(model, result.weights_dir)
    after = completion_loss(tuned, tok, rows)
    assert before == pytest.approx(result.loss_before, rel=1e-4)
    assert after == pytest.approx(result.loss_after, rel=1e-4)
    assert after < before - 0.2

    out = result.out_dir
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "tokenizer.json").is_file()
    assert not (out / "checkpoints").exists() and not (out / "merged").exists()
    manifest = Manifest.load(out)
    assert manifest.status == "finished" and manifest.config["lora_rank"] == 4
    assert manifest.stats["fallback_examples"] == 1 and manifest.stats["steps"] == 6
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "learning_rate", "epoch"} <= set(m) for m in metrics)


def test_rerun_with_the_same_config_and_inputs_is_skipped(lora_run, micro_model_dir):
    traces, result, _ = lora_run
    again = run_sft(traces, result.out_dir, config_for(micro_model_dir), show_progress=False)
    assert again.skipped and again.steps == result.steps and again.losses == result.losses
    assert again.loss_after == result.loss_after


def test_collated_batch_masks_the_prompt_to_minus_100(tmp_path, micro_model_dir, traces_file):
    config = config_for(micro_model_dir, batch_size=3)
    rows = to_rows(load_sft_examples(traces_file))
    model, tok = load_for_training(config)
    trainer = make_trainer(model, tok, rows, config, tmp_path, show_progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    by_ids = {tuple(tokenize_prompt_completion(tok, r["prompt"], r["completion"])[0]): r for r in rows}
    for i in range(ids.size(0)):
        n = int(mask[i].sum())
        row = by_ids[tuple(ids[i, :n].tolist())]  # the trainer shuffles; find the row by its tokens
        want_ids, want_labels = tokenize_prompt_completion(tok, row["prompt"], row["completion"])
        assert labels[i, :n].tolist() == want_labels and (labels[i, n:] == -100).all()
        prompt_len = len(tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"])
        assert (labels[i, :prompt_len] == -100).all()  # system, user turn and "<|im_start|>assistant\n"
        assert torch.equal(labels[i, prompt_len:n], ids[i, prompt_len:n])
        assert tok.decode(labels[i, prompt_len:n]) == row["completion"][0]["content"] + "<|im_end|>\n"


def test_completion_loss_matches_a_plain_full_logits_computation(micro_model_dir, traces_file):
    model, tok = load_model(str(micro_model_dir))
    rows = to_rows(load_sft_examples(traces_file))[:5]
    total, count = 0.0, 0
    for row in rows:  # one unpadded sequence at a time, every position's logits
        ids, labels = tokenize_prompt_completion(tok, row["prompt"], row["completion"])
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        target = torch.tensor(labels[1:])
        total += torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
        count += int((target != -100).sum())
    want = total / count
    assert completion_loss(model, tok, rows, batch_size=3) == pytest.approx(want, rel=1e-5)
    assert completion_loss(model, tok, rows, max_logits=1) == pytest.approx(want, rel=1e-5)  # one row at a time


def test_full_finetuning_changes_the_base_weights(tmp_path, micro_model_dir, traces_file):
    watch = Watch()
    result = run_sft(traces_file, tmp_path / "sft", config_for(micro_model_dir, full=True, epochs=1, learning_rate=1e-3),
                     callbacks=[watch], show_progress=False)
    assert result.weights_dir == tmp_path / "sft" / "model" and result.steps == 2
    assert not any("lora_" in n for n in watch.begin)
    changed = [n for n in watch.begin if not torch.equal(watch.begin[n], watch.end[n])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed
    saved, _ = load_model(str(result.weights_dir))
    torch.testing.assert_close(saved.state_dict()["model.layers.1.mlp.up_proj.weight"],
                               watch.end["model.layers.1.mlp.up_proj.weight"])
    assert result.loss_after < result.loss_before


def test_interrupted_run_resumes_from_its_checkpoint(lora_run, tmp_path, micro_model_dir):
    traces, reference, _ = lora_run
    out = tmp_path / "sft"
    config = config_for(micro_model_dir, measure_loss=False)  # the losses per step are what is compared
    with pytest.raises(KeyboardInterrupt):
        run_sft(traces, out, config, callbacks=[Watch(stop_at=3)], show_progress=False)
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert Manifest.load(out).status == "running" and not (out / "adapter").exists()

    resumed = run_sft(traces, out, config, show_progress=False)
    assert not resumed.skipped and resumed.stats["resumed_from_step"] == 2
    assert resumed.steps == reference.steps == 6
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4, 5, 6]  # the lost step 3 is logged once, after resuming
    assert resumed.losses[:2] == reference.losses[:2]
    assert [x for _, x in resumed.losses] == pytest.approx([x for _, x in reference.losses], rel=1e-3)


def test_cli_trains_merges_and_reports(tmp_path, micro_model_dir, traces_file, capsys):
    out = tmp_path / "sft"
    rc = cli(["sft", "--traces", str(traces_file), "--model", str(micro_model_dir), "--out", str(out), "--epochs", "1",
              "--batch-size", "8", "--lr", "1e-2", "--rank", "2", "--no-include-fallback", "--merge", "--gradient-checkpointing", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "examples: 7, optimizer steps: 1" in printed and "training loss: start" in printed
    assert f"adapter: {out / 'adapter'}" in printed and f"merged model: {out / 'merged'}" in printed
    manifest = Manifest.load(out)
    assert manifest.config["lora_rank"] == 2 and manifest.config["include_fallback"] is False
    assert manifest.config["gradient_checkpointing"] is True
    merged, _ = load_model(str(out / "merged"))
    assert not any("lora" in n for n in merged.state_dict())


def test_cli_errors_are_one_line_and_actionable(tmp_path, micro_model_dir, capsys):
    assert cli(["sft", "--traces", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "openrft synthesize" in err
    assert not (tmp_path / "o").exists()
    write_traces(tmp_path / "t.jsonl", short_samples(2))
    assert cli(["sft", "--traces", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"), "--full", "--merge"]) == 2
    assert "merge applies to LoRA" in capsys.readouterr().err
    (tmp_path / "sft.yaml").write_text("epochs: 2\nlearning_rte: 0.1\n")
    assert cli(["sft", "--traces", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"),
                "--config", str(tmp_path / "sft.yaml")]) == 2
    assert "unknown sft settings ['learning_rte']" in capsys.readouterr().err


def test_micro_batches_take_the_steps_whole_batches_take(tmp_path, micro_model_dir):
    """A batch split into micro-batches (accumulated, each token weighted as in the whole batch) gives the same
    optimizer steps: completions of different lengths (bare answers and traces) make a per-micro-batch mean differ.
    How a batch is split is not part of the stage's identity."""
    traces = write_traces(tmp_path / "traces.jsonl", short_samples(8), fallback_ids={"add/1", "add/2", "add/6"})
    ends, losses, steps = {}, {}, {}
    for micro in (4, 1):
        watch = Watch()
        config = config_for(micro_model_dir, epochs=2, lora_dropout=0.0, micro_batch_size=micro, measure_loss=False)
        assert config.micro_batches(cuda=False) == (micro, 4 // micro)
        result = run_sft(traces, tmp_path / f"sft-{micro}", config, callbacks=[watch], show_progress=False)
        ends[micro], losses[micro], steps[micro] = watch.end, result.losses, result.steps
    assert steps[4] == steps[1] == 4
    assert [x for _, x in losses[1]] == pytest.approx([x for _, x in losses[4]], rel=1e-4)
    lora = [n for n in ends[4] if "lora_" in n]
    assert lora and all(not torch.equal(ends[4][n], watch.begin[n]) for n in lora if "lora_B" in n)
    for n in lora:
        torch.testing.assert_close(ends[1][n], ends[4][n], rtol=1e-4, atol=1e-6)
    assert config_for(micro_model_dir, micro_batch_size=1).settings() == config_for(micro_model_dir).settings()
    with pytest.raises(ValueError, match="micro_batch_size"):
        config_for(micro_model_dir, micro_batch_size=0)
