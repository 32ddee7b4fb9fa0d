"""``openrft export verl``: prompts as verl's RL parquet files, openrft's reward as a verl custom reward function, and
the launch script (``run_verl.sh``) whose hydra overrides carry the RL settings.

Rows follow verl's data preparation guide (docs/preparation/prepare_data.rst): ``data_source``
(the openrft task, so verl's validation metrics come per task), ``prompt`` (chat messages that
verl's ``RLHFDataset`` renders with the model's chat template), ``ability`` (the answer type),
``reward_model = {"style": "rule", "ground_truth": <gold answer>}`` and ``extra_info`` with
``index``, ``split``, ``id`` and ``openrft_sample`` (the :class:`Sample` as JSON, so the reward
rebuilds it losslessly).

The reward module has ``compute_score(data_source, solution_str, ground_truth, extra_info=None,
**kwargs)`` (verl's naive reward manager) and ``compute_score_batch(data_sources, solution_strs,
ground_truths, extra_infos, **kwargs)`` (its batch manager); both return ``{"score": ..., parts}``
(verl logs every key) unless exported with ``scores_only``. Checked against verl 0.9.1
(``verl/experimental/reward_loop/reward_manager/naive.py``, ``verl/utils/dataset/rl_dataset.py``)
and the legacy ``verl/workers/reward_manager/{naive,batch}.py``.

The launch script's override keys are checked against verl 0.9.1's composed ``ppo_trainer.yaml`` by
``bench/check_engines.py``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.common import (MANIFEST, ExportConfig, ExportError, ExportResult, write_bytes, write_manifest,
                                   write_reward, write_text)
from openrft.export.launch import (EngineSetup, LaunchPlan, Shell, begin_export, engine_model, engine_setup, epochs_for,
                                   here, launch_record, launch_script, note_lines, plan_summary, readme_text,
                                   self_contained_lines, write_executable)
from openrft.export.runtime import PRM_URL_ENV, SAMPLE_KEY, encode_sample
from openrft.rl.config import RLConfig

__all__ = ["FILES", "export_verl", "verl_overrides", "verl_rows", "verl_schema", "verl_usage"]

FILES = {"train": "train.parquet", "test": "test.parquet", "reward": "openrft_reward.py", "launch": "run_verl.sh",
         "readme": "README.md"}
#: openrft's estimators as verl's algorithm.adv_estimator
ESTIMATORS = {"gae": "gae", "grpo": "grpo", "rloo": "rloo", "reinforce_pp": "reinforce_plus_plus"}

_ENTRY_POINTS = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl custom reward (naive/dapo reward managers): openrft's score of one response."""
    return reward().verl_score(data_source, solution_str, ground_truth, extra_info, **kwargs)


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos=None, **kwargs):
    """verl custom reward for reward_manager=batch: one openrft call (one PRM request) per batch."""
    return reward().verl_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs)
'''

#: what verl takes from openrft and what it cannot, for the export's README
LIMITS = """\
- One reward per response: verl's reward managers put compute_score's `score` on the response's last token
  (`rm_scores`) and log the other keys (outcome, correct, has_answer; process, n_steps with a PRM). openrft's
  dense mode, a reward at the end of every step, has no counterpart: with a PRM the engine gets
  alpha * outcome + (1 - alpha) * f(step scores) as that one number.
- Process rewards (a trained PRM, a judge) come from a scorer server: `openrft prm serve --prm <checkpoint>` on a
  GPU box, exported with --prm-url http://<host>:<port>/score (or OPENRFT_PRM_URL on the cluster). The reward
  module reaches it with Python's standard library.
- Estimators: gae, grpo, rloo, reinforce_pp (reinforce_plus_plus, _baseline with rpp_baseline); a custom
  registered estimator has no verl counterpart. openrft's critic as a second adapter on the policy's base is a
  separate critic model in verl (same base, its own LoRA).
- verl fills in everything the script does not set (its ppo_trainer.yaml defaults): GPUs per node and nodes come
  from N_GPUS / NNODES; tensor parallelism, offloading and memory settings are yours to add as arguments.
"""

_DOC = """verl loads this file through custom_reward_function.path / .name (compute_score, or compute_score_batch
with the batch reward manager); the sample is rebuilt from extra_info["openrft_sample"]."""


def verl_schema():
    """The parquet schema: the five columns of verl's RL data, with fixed struct fields."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([
        ("data_source", pa.string()),
        ("prompt", pa.list_(message)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", pa.string()), ("id", pa.string()),
                                  (SAMPLE_KEY, pa.string())])),
    ])


def verl_rows(samples: Sequence[Sample], messages: Sequence[list[dict[str, str]]], split: str) -> list[dict[str, Any]]:
    """One verl row per sample (``messages[i]`` is the prompt of ``samples[i]``)."""
    return [
        {
            "data_source": s.task,
            "prompt": list(msgs),
            "ability": s.answer_type,
            "reward_model": {"style": "rule", "ground_truth": s.answer},
            "extra_info": {"index": i, "split": split, "id": s.id, SAMPLE_KEY: encode_sample(s)},
        }
        for i, (s, msgs) in enumerate(zip(samples, messages, strict=True))
    ]


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=verl_schema()), buf)
    return buf.getvalue()


def _hydra(value: Any) -> Any:
    """A value as hydra reads it: ``true``/``false``, ``null``, ``[a,b]``; numbers and strings as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return value


def _kl(rl: RLConfig) -> list[tuple[str, Any]]:
    """The KL penalty where openrft puts it: in the loss (grpo, rloo) or in the reward (gae, reinforce_pp)."""
    in_loss = rl.kl_coef > 0 and rl.resolved_kl_in == "loss"
    in_reward = rl.kl_coef > 0 and rl.resolved_kl_in == "reward"
    out: list[tuple[str, Any]] = [("actor_rollout_ref.actor.use_kl_loss=", in_loss),
                                  ("algorithm.use_kl_in_reward=", in_reward)]
    if in_loss:
        out += [("actor_rollout_ref.actor.kl_loss_coef=", rl.kl_coef),
                ("actor_rollout_ref.actor.kl_loss_type=", rl.resolved_kl_estimator)]
    if in_reward:
        out += [("algorithm.kl_ctrl.kl_coef=", rl.kl_coef), ("algorithm.kl_penalty=", rl.resolved_kl_estimator)]
    return out


def _lora(prefix: str, rl: RLConfig) -> list[tuple[str, Any]]:
    targets = rl.lora_targets if rl.lora_targets == "all-linear" else [t.strip() for t in rl.lora_targets.split(",")]
    alpha = int(rl.lora_alpha) if float(rl.lora_alpha).is_integer() else rl.lora_alpha
    return [(f"{prefix}lora_rank=", rl.lora_rank), (f"{prefix}lora_alpha=", alpha), (f"{prefix}target_modules=", targets)]


def _critic(rl: RLConfig, model: str) -> tuple[list[tuple[str, Any]], list[str]]:
    if rl.estimator != "gae":
        return [], []
    on_base = rl.critic in ("adapter", "shared")
    critic_model = model if on_base else engine_model(rl.critic)
    args = [("critic.model.path=", critic_model), ("critic.optim.lr=", rl.critic_lr),
            ("critic.ppo_micro_batch_size_per_gpu=", rl.micro_batch_size), *_lora("critic.model.", rl),
            ("trainer.critic_warmup=", rl.critic_warmup_steps)]
    if rl.value_clip is not None:
        args.append(("critic.cliprange_value=", rl.value_clip))
    notes = ["critic: verl trains a separate critic model (a copy of the base with its own LoRA), not a value head "
             + ("on a second adapter of the policy's base" if rl.critic == "adapter" else
                "on the policy's own hidden states (critic: shared); vf_coef has no counterpart")] if on_base else []
    if rl.value_clip is None:
        notes.append("value_clip none: verl always clips critic values (critic.cliprange_value, default 0.5)")
    return args, notes


def verl_overrides(rl: RLConfig, setup: EngineSetup, has_test: bool, name: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """The hydra overrides that run ``rl`` on verl 0.9 with this export's files, and notes on what verl does not get."""
    if rl.estimator not in ESTIMATORS:
        raise ExportError(f"estimator {rl.estimator!r} has no verl counterpart; export with one of "
                          f"{', '.join(ESTIMATORS)} (--set rl.estimator=grpo)")
    estimator = "reinforce_plus_plus_baseline" if rl.estimator == "reinforce_pp" and rl.advantage.rpp_baseline \
        else ESTIMATORS[rl.estimator]
    notes = []
    mini = setup.batch if rl.minibatch_size is None else min(setup.batch, max(1, rl.minibatch_size // rl.n_samples))
    if rl.minibatch_size is not None and rl.minibatch_size % rl.n_samples:
        notes.append(f"minibatch_size {rl.minibatch_size} is not a multiple of n_samples {rl.n_samples}: verl counts "
                     f"minibatches in prompts, {mini} prompts ({mini * rl.n_samples} responses) here")
    actor, rollout = "actor_rollout_ref.actor.", "actor_rollout_ref.rollout."
    args: list[tuple[str, Any]] = [
        ("algorithm.adv_estimator=", estimator), ("algorithm.gamma=", rl.advantage.gamma),
        ("algorithm.lam=", rl.advantage.lam),
        ("algorithm.norm_adv_by_std_in_grpo=", rl.resolved_advantage.norm_by_std), *_kl(rl),
        ("data.train_files=", here(FILES["train"])), ("data.val_files=", here(FILES["test" if has_test else "train"])),
        ("data.prompt_key=", "prompt"), ("data.max_prompt_length=", setup.prompt_tokens),
        ("data.max_response_length=", rl.max_new_tokens), ("data.train_batch_size=", setup.batch),
        ("data.seed=", rl.seed), ("actor_rollout_ref.model.path=", setup.model), *_lora("actor_rollout_ref.model.", rl),
        (actor + "optim.lr=", rl.lr), (actor + "optim.weight_decay=", rl.weight_decay),
        (actor + "optim.lr_warmup_steps=", rl.warmup_steps), (actor + "grad_clip=", rl.max_grad_norm),
        (actor + "ppo_epochs=", rl.ppo_epochs), (actor + "ppo_mini_batch_size=", mini),
        (actor + "ppo_micro_batch_size_per_gpu=", rl.micro_batch_size), (actor + "clip_ratio_low=", rl.clip_low),
        (actor + "clip_ratio_high=", rl.clip_high if rl.clip_high is not None else rl.clip_low),
        (actor + "loss_agg_mode=", rl.resolved_loss_agg), (actor + "entropy_coeff=", rl.entropy_coef),
        ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=", rl.micro_batch_size),
        (rollout + "name=", "vllm"), (rollout + "n=", rl.n_samples), (rollout + "temperature=", rl.temperature),
        (rollout + "top_p=", rl.top_p), (rollout + "log_prob_micro_batch_size_per_gpu=", rl.micro_batch_size),
        ("reward.custom_reward_function.path=", here(FILES["reward"])),
        ("reward.custom_reward_function.name=", "compute_score"),
        ("trainer.total_training_steps=", rl.steps),
        ("trainer.total_epochs=", epochs_for(rl.steps, setup.batch, setup.n_train)),
        ("trainer.save_freq=", rl.save_every), ("trainer.project_name=", "openrft"),
        ("trainer.experiment_name=", name), ("trainer.logger=", ["console"]),
        ("trainer.n_gpus_per_node=", Shell("${N_GPUS:-8}")), ("trainer.nnodes=", Shell("${NNODES:-1}")),
    ]
    if rl.dual_clip is not None:
        args.append((actor + "clip_ratio_c=", rl.dual_clip))
    if rl.lora_rank > 0:  # verl's LoRA rollout loads the adapter weights into vLLM from safetensors
        args.append((rollout + "load_format=", "safetensors"))
    critic_args, critic_notes = _critic(rl, setup.model)
    return [(k, v if isinstance(v, Shell) else _hydra(v)) for k, v in args + critic_args], notes + critic_notes


def verl_usage(out: Path, has_test: bool, prm_url: str | None, setup: EngineSetup, summary: str) -> str:
    """How to run verl on an export in ``out``: the launch script, and the settings that point verl at its files."""
    d = out.resolve()
    val = d / (FILES["test"] if has_test else FILES["train"])
    reward = d / FILES["reward"]
    lines = [
        f"verl export in {d}",
        "",
        f"Launch ({summary}):",
        "",
        f"    bash {d / FILES['launch']}        # N_GPUS=8 NNODES=1 unless set; more hydra overrides as arguments",
        "",
        "A verl command of your own reads the files with:",
        f"    data.train_files={d / FILES['train']} data.val_files={val} data.prompt_key=prompt",
        f"    reward.custom_reward_function.path={reward} reward.custom_reward_function.name=compute_score",
        "(verl 0.9 reads reward.custom_reward_function; releases before the `reward:` group read the top level:",
        f"    custom_reward_function.path={reward} custom_reward_function.name=compute_score)",
        "Releases with the legacy batch reward manager score a whole batch in one call (one PRM request):",
        "    custom_reward_function.name=compute_score_batch reward_model.reward_manager=batch",
        "(verl 0.9's reward loop has no batch manager; it runs compute_score on many responses concurrently.)",
        "",
        f"data.max_prompt_length={setup.prompt_tokens}: {setup.prompt_how}.",
        *self_contained_lines(),
    ]
    if not has_test:
        lines.append("No test split was exported: data.val_files points at the training prompts.")
    if prm_url:
        lines.append(f"The PRM at {prm_url} must be reachable from the scoring nodes; {PRM_URL_ENV}=<url> replaces it.")
    return "\n".join(lines + note_lines(setup.notes)) + "\n"


def export_verl(config: ExportConfig, out: str | os.PathLike[str], plan: LaunchPlan | None = None,
                splits: dict[str, list[Sample]] | None = None) -> ExportResult:
    """Write ``train.parquet`` (and ``test.parquet``), ``openrft_reward.py`` with its grading package,
    ``run_verl.sh``, ``README.md`` and the manifest to ``out``. ``plan``: the RL settings to launch (default:
    ``openrft rl``'s); ``splits``: samples already chosen (a recipe's), else loaded as ``config`` says."""
    out_dir, plan, splits, messages = begin_export(config, out, plan, splits)
    split_names = {"train": config.split, "test": config.test_split}
    files: dict[str, Path] = {}
    for name, samples in splits.items():
        rows = verl_rows(samples, messages[name], split_names[name] or name)
        files[name] = write_bytes(out_dir / FILES[name], _parquet_bytes(rows))
    files |= write_reward(out_dir, "verl", config, _DOC, _ENTRY_POINTS, FILES["reward"])
    setup = engine_setup(plan, config.model, config.prm_url, [m for rows in messages.values() for m in rows],
                         len(splits["train"]))
    args, notes = verl_overrides(plan.rl, setup, "test" in splits, plan.name)
    setup.notes += notes
    script = launch_script("verl", FILES["launch"], plan, ["python3", "-m", "verl.trainer.main_ppo"], args,
                           setup.notes, [f"Hydra overrides of verl 0.9.1's ppo_trainer.yaml; {setup.prompt_how}."])
    files["launch"] = write_executable(out_dir / FILES["launch"], script)
    usage = verl_usage(out_dir, "test" in splits, config.prm_url, setup, plan_summary(plan))
    files["readme"] = write_text(out_dir / FILES["readme"], readme_text("verl", usage, LIMITS))
    counts = {name: len(samples) for name, samples in splits.items()}
    write_manifest(out_dir, "verl", config, files, counts, {"launch": launch_record(plan, setup)})
    files["manifest"] = out_dir / MANIFEST
    return ExportResult(out_dir, files, counts, usage)
