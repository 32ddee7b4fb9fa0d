"""``openrft export openrlhf``: prompts as OpenRLHF JSONL, openrft's reward as an OpenRLHF ``reward_func`` file, and
the launch script (``run_openrlhf.sh``) whose ``train_ppo_ray`` flags carry the RL settings.

Each JSONL line has ``prompt`` (chat messages: ``--input_key prompt --apply_chat_template``
renders them with the model's template and the generation prompt), ``label`` (the
:class:`Sample` as JSON: ``--label_key label`` hands it to ``reward_func``), ``answer`` (the
gold answer, for people reading the file), ``datasource`` (the task; OpenRLHF groups its
evaluation metrics by this key) and ``id``.

The reward file defines ``reward_func(queries, prompts, labels, **kwargs)``, which OpenRLHF loads
when ``--remote_rm_url`` (``--reward.remote_url`` in releases with dotted flags) names a ``.py``
file. ``queries`` are prompt + response decoded with special tokens; the response is what follows
the prompt, EOS/padding tokens removed. It returns ``{"rewards", "scores", "extra_logs"}``
(tensors; ``scores`` is 0/1 correctness, which ``--dynamic_filtering`` reads), or the bare rewards
tensor when exported with ``scores_only`` (releases that expect a tensor). Checked against OpenRLHF
0.11.2 (``openrlhf/utils/agent.py`` SingleTurnAgentExecutor, ``openrlhf/datasets/prompts_dataset.py``,
``openrlhf/cli/train_ppo_ray.py`` flags); ``bench/check_engines.py`` parses the launch script's flags
with that release's own argument parser.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.common import MANIFEST, ExportConfig, ExportError, ExportResult, write_manifest, write_reward, write_text
from openrft.export.launch import (EngineSetup, LaunchPlan, Shell, begin_export, engine_model, engine_setup, epochs_for,
                                   here, launch_record, launch_script, note_lines, plan_summary, readme_text,
                                   self_contained_lines, write_executable)
from openrft.export.runtime import PRM_URL_ENV, encode_sample
from openrft.rl.config import RLConfig

__all__ = ["FILES", "INPUT_KEY", "LABEL_KEY", "export_openrlhf", "openrlhf_flags", "openrlhf_rows", "openrlhf_usage"]

FILES = {"train": "train.jsonl", "test": "test.jsonl", "reward": "openrft_reward.py", "launch": "run_openrlhf.sh",
         "readme": "README.md"}
INPUT_KEY = "prompt"
LABEL_KEY = "label"
#: openrft's estimators as OpenRLHF's --algo.advantage.estimator
ESTIMATORS = {"gae": "gae", "grpo": "group_norm", "rloo": "rloo", "reinforce_pp": "reinforce"}
_LOSS_AGG = ("token-mean", "seq-mean-token-mean")  # what --actor.loss_agg_mode takes

_ENTRY_POINTS = '''
def reward_func(queries, prompts, labels, **kwargs):
    """OpenRLHF custom reward: openrft's score of each response (query = prompt + response)."""
    return reward().openrlhf_rewards(queries, prompts, labels, **kwargs)
'''

#: what OpenRLHF takes from openrft and what it cannot, for the export's README
LIMITS = """\
- One reward per response: OpenRLHF puts reward_func's `rewards` on the response's last token (compute_reward) and
  logs `extra_logs`; `scores` (0/1 correctness) feed --algo.dynamic_filtering_enable. openrft's dense mode, a
  reward at the end of every step, has no counterpart: with a PRM the engine gets
  alpha * outcome + (1 - alpha) * f(step scores) as that one number.
- Process rewards (a trained PRM, a judge) come from a scorer server: `openrft prm serve --prm <checkpoint>` on a
  GPU box, exported with --prm-url http://<host>:<port>/score (or OPENRFT_PRM_URL on the cluster). OpenRLHF 0.11
  calls reward_func one response at a time, so the PRM gets one request per response.
- Estimators: gae, grpo (group_norm; dr_grpo with dr_grpo), rloo, reinforce_pp (reinforce; reinforce_baseline
  with rpp_baseline). Loss aggregation: token-mean or seq-mean-token-mean only.
- No step limit: OpenRLHF runs --train.num_episodes passes over the prompts, set to cover openrft's steps.
- OpenRLHF fills in everything the script does not set: nodes and GPUs of the actor, reference and critic come from
  NNODES / N_GPUS; vLLM engines, colocation and offloading are yours to add as arguments.
"""

_DOC = """OpenRLHF loads this file when --remote_rm_url (--reward.remote_url) names it and calls
reward_func(queries, prompts, labels); each label is the sample's JSON (--label_key label)."""


def openrlhf_rows(samples: Sequence[Sample], messages: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """One JSONL record per sample (``messages[i]`` is the prompt of ``samples[i]``)."""
    return [
        {INPUT_KEY: list(msgs), LABEL_KEY: encode_sample(s), "answer": s.answer, "datasource": s.task, "id": s.id}
        for s, msgs in zip(samples, messages, strict=True)
    ]


def _flags(rl: RLConfig, setup: EngineSetup) -> list[tuple[str, object]]:
    """The algorithm flags; the data, reward and cluster flags are :func:`openrlhf_flags`' own."""
    estimator = ESTIMATORS[rl.estimator]
    if rl.estimator == "grpo" and not rl.resolved_advantage.norm_by_std:
        estimator = "dr_grpo"
    elif rl.estimator == "reinforce_pp" and rl.advantage.rpp_baseline:
        estimator = "reinforce_baseline"
    alpha = int(rl.lora_alpha) if float(rl.lora_alpha).is_integer() else rl.lora_alpha
    flags: list[tuple[str, object]] = [
        ("--algo.advantage.estimator", estimator), ("--algo.advantage.gamma", rl.advantage.gamma),
        ("--algo.advantage.lambd", rl.advantage.lam), ("--algo.kl.init_coef", rl.kl_coef),
        ("--algo.kl.estimator", rl.resolved_kl_estimator),
        ("--actor.adam.lr", rl.lr), ("--actor.adam.weight_decay", rl.weight_decay),
        ("--actor.max_norm", rl.max_grad_norm), ("--actor.eps_clip_low_high", [rl.clip_low, rl.clip_high or rl.clip_low]),
        ("--rollout.n_samples_per_prompt", rl.n_samples), ("--rollout.temperature", rl.temperature),
        ("--rollout.top_p", rl.top_p), ("--rollout.max_new_tokens", rl.max_new_tokens),
        ("--data.max_len", setup.prompt_tokens + rl.max_new_tokens), ("--rollout.batch_size", setup.batch),
        ("--train.batch_size", min(rl.minibatch_size or rl.rollout_size, setup.batch * rl.n_samples)), ("--train.micro_batch_size", rl.micro_batch_size),
        ("--rollout.micro_batch_size", rl.micro_batch_size), ("--train.max_epochs", rl.ppo_epochs),
        ("--train.num_episodes", epochs_for(rl.steps, setup.batch, setup.n_train)),
        ("--train.seed", rl.seed), ("--ds.lora.rank", rl.lora_rank), ("--ds.lora.alpha", alpha),
        ("--ds.lora.dropout", rl.lora_dropout), ("--ds.lora.target_modules", rl.lora_targets.split(",")),
        ("--ckpt.save_steps", rl.save_every),
    ]
    if rl.kl_coef > 0 and rl.resolved_kl_in == "loss":
        flags.append(("--algo.kl.use_loss", None))
    if rl.resolved_loss_agg in _LOSS_AGG:
        flags.append(("--actor.loss_agg_mode", rl.resolved_loss_agg))
    if rl.entropy_coef:
        flags.append(("--actor.entropy_coef", rl.entropy_coef))
    if rl.dual_clip is not None:
        flags.append(("--actor.dual_clip", rl.dual_clip))
    return flags


def _cluster(rl: RLConfig) -> list[tuple[str, object]]:
    roles = ["actor", "ref"] + (["critic"] if rl.estimator == "gae" else [])
    return [flag for role in roles for flag in ((f"--{role}.num_nodes", Shell("${NNODES:-1}")),
                                                (f"--{role}.num_gpus_per_node", Shell("${N_GPUS:-8}")))]


def openrlhf_flags(rl: RLConfig, setup: EngineSetup, has_test: bool) -> tuple[list[tuple[str, object]], list[str]]:
    """The ``train_ppo_ray`` flags that run ``rl`` on OpenRLHF 0.11 with this export's files, and notes on what
    OpenRLHF does not get."""
    if rl.estimator not in ESTIMATORS:
        raise ExportError(f"estimator {rl.estimator!r} has no OpenRLHF counterpart; export with one of "
                          f"{', '.join(ESTIMATORS)} (--set rl.estimator=grpo)")
    flags: list[tuple[str, object]] = [
        ("--actor.model_name_or_path", setup.model), ("--data.prompt_dataset", here(FILES["train"])),
        ("--data.input_key", INPUT_KEY), ("--data.label_key", LABEL_KEY), ("--data.apply_chat_template", None),
        *([("--eval.dataset", here(FILES["test"]))] if has_test else []),
        ("--reward.remote_url", here(FILES["reward"])), *_flags(rl, setup), *_cluster(rl),
    ]
    per_epoch = setup.n_train // setup.batch
    notes = [f"steps: OpenRLHF has no step limit; {epochs_for(rl.steps, setup.batch, setup.n_train)} "
             f"episode(s) of {per_epoch} rollout batches run (openrft: {rl.steps} steps)"]
    if rl.resolved_loss_agg not in _LOSS_AGG:
        notes.append(f"loss_agg {rl.resolved_loss_agg}: OpenRLHF takes {' or '.join(_LOSS_AGG)}; its default "
                     "(token-mean) applies")
    if rl.estimator == "gae":
        on_base = rl.critic in ("adapter", "shared")
        flags += [("--critic.model_name_or_path", setup.model if on_base else engine_model(rl.critic)),
                  ("--critic.adam.lr", rl.critic_lr), ("--critic.freezing_steps", rl.critic_warmup_steps or -1)]
        if rl.value_clip is not None:
            flags.append(("--critic.value_clip", rl.value_clip))
        else:
            notes.append("value_clip none: OpenRLHF always clips critic values (--critic.value_clip, default 0.5)")
        if on_base:
            notes.append("critic: OpenRLHF trains a separate critic model (a copy of the base), not a value head on "
                         + ("a second adapter of the policy's base" if rl.critic == "adapter" else
                            "the policy's own hidden states (critic: shared); vf_coef has no counterpart"))
    return flags, notes


def openrlhf_usage(out: Path, has_test: bool, prm_url: str | None, setup: EngineSetup, summary: str) -> str:
    """How to run OpenRLHF on an export in ``out``: the launch script, and the flags that point it at its files."""
    d = out.resolve()
    train, test, reward = d / FILES["train"], d / FILES["test"], d / FILES["reward"]
    lines = [
        f"OpenRLHF export in {d}",
        "",
        f"Launch ({summary}):",
        "",
        f"    ray job submit --address=http://127.0.0.1:8265 -- bash {d / FILES['launch']}",
        "    # or on a node of the Ray cluster: bash run_openrlhf.sh; NNODES / N_GPUS (default 1 / 8) set the actor,",
        "    # reference and critic placement; more train_ppo_ray flags as arguments",
        "",
        "A train_ppo_ray command of your own reads the files with:",
        f"    --data.prompt_dataset {train} --data.input_key {INPUT_KEY} --data.label_key {LABEL_KEY} "
        "--data.apply_chat_template \\",
        (f"    --eval.dataset {test} " if has_test else "    ") + f"--reward.remote_url {reward}",
        "OpenRLHF releases with flat flags (no dots):",
        f"    --prompt_data {train} --input_key {INPUT_KEY} --label_key {LABEL_KEY} --apply_chat_template \\",
        (f"    --eval_dataset {test} " if has_test else "    ") + f"--remote_rm_url {reward}",
        "",
        "Releases whose reward_func must return a bare tensor: re-export with --scores-only.",
        f"--data.max_len: {setup.prompt_tokens} prompt tokens ({setup.prompt_how}) + the response's.",
        *self_contained_lines(),
    ]
    if prm_url:
        lines.append(f"The PRM at {prm_url} must be reachable from there; {PRM_URL_ENV}=<url> replaces it.")
    return "\n".join(lines + note_lines(setup.notes)) + "\n"


def export_openrlhf(config: ExportConfig, out: str | os.PathLike[str], plan: LaunchPlan | None = None,
                    splits: dict[str, list[Sample]] | None = None) -> ExportResult:
    """Write ``train.jsonl`` (and ``test.jsonl``), ``openrft_reward.py`` with its grading package,
    ``run_openrlhf.sh``, ``README.md`` and the manifest to ``out``. ``plan``: the RL settings to launch (default:
    ``openrft rl``'s); ``splits``: samples already chosen (a recipe's), else loaded as ``config`` says."""
    out_dir, plan, splits, messages = begin_export(config, out, plan, splits)
    files: dict[str, Path] = {}
    for name, samples in splits.items():
        lines = [json.dumps(r, ensure_ascii=False) for r in openrlhf_rows(samples, messages[name])]
        files[name] = write_text(out_dir / FILES[name], "\n".join(lines) + "\n")
    files |= write_reward(out_dir, "openrlhf", config, _DOC, _ENTRY_POINTS, FILES["reward"])
    setup = engine_setup(plan, config.model, config.prm_url, [m for rows in messages.values() for m in rows],
                         len(splits["train"]))
    flags, notes = openrlhf_flags(plan.rl, setup, "test" in splits)
    setup.notes += notes
    script = launch_script("OpenRLHF", FILES["launch"], plan, ["python3", "-m", "openrlhf.cli.train_ppo_ray"], flags,
                           setup.notes, ["Flags of OpenRLHF 0.11.2's train_ppo_ray; submit it to a Ray cluster with "
                                         f"'ray job submit -- bash {FILES['launch']}'.", f"{setup.prompt_how}."])
    files["launch"] = write_executable(out_dir / FILES["launch"], script)
    usage = openrlhf_usage(out_dir, "test" in splits, config.prm_url, setup, plan_summary(plan))
    files["readme"] = write_text(out_dir / FILES["readme"], readme_text("OpenRLHF", usage, LIMITS))
    counts = {name: len(samples) for name, samples in splits.items()}
    write_manifest(out_dir, "openrlhf", config, files, counts, {"launch": launch_record(plan, setup)})
    files["manifest"] = out_dir / MANIFEST
    return ExportResult(out_dir, files, counts, usage)
