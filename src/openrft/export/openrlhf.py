"""``openrft export openrlhf``: prompts as OpenRLHF JSONL and openrft's reward as an OpenRLHF ``reward_func`` file.

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
``openrlhf/cli/train_ppo_ray.py`` flags).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.common import (MANIFEST, ExportConfig, ExportResult, check_out_dir, load_splits,
                                   prompt_messages, reward_module_source, write_manifest, write_text)
from openrft.export.runtime import PRM_URL_ENV, encode_sample

__all__ = ["FILES", "INPUT_KEY", "LABEL_KEY", "export_openrlhf", "openrlhf_rows", "openrlhf_usage"]

FILES = {"train": "train.jsonl", "test": "test.jsonl", "reward": "openrft_reward.py", "readme": "README.md"}
INPUT_KEY = "prompt"
LABEL_KEY = "label"

_ENTRY_POINTS = '''
def reward_func(queries, prompts, labels, **kwargs):
    """OpenRLHF custom reward: openrft's score of each response (query = prompt + response)."""
    return REWARD.openrlhf_rewards(queries, prompts, labels, **kwargs)
'''

_DOC = """OpenRLHF loads this file when --remote_rm_url (--reward.remote_url) names it and calls
reward_func(queries, prompts, labels); each label is the sample's JSON (--label_key label)."""


def openrlhf_rows(samples: Sequence[Sample], messages: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """One JSONL record per sample (``messages[i]`` is the prompt of ``samples[i]``)."""
    return [
        {INPUT_KEY: list(msgs), LABEL_KEY: encode_sample(s), "answer": s.answer, "datasource": s.task, "id": s.id}
        for s, msgs in zip(samples, messages, strict=True)
    ]


def openrlhf_usage(out: Path, has_test: bool, prm_url: str | None) -> str:
    """How to run OpenRLHF on an export in ``out``: the exact flags that point it at its files."""
    d = out.resolve()
    train, test, reward = d / FILES["train"], d / FILES["test"], d / FILES["reward"]
    from openrft import __version__

    lines = [
        f"OpenRLHF export in {d}",
        "",
        "Train with OpenRLHF (REINFORCE++-baseline shown; the data and reward flags are what matter):",
        "",
        "    ray job submit --address=http://127.0.0.1:8265 -- python3 -m openrlhf.cli.train_ppo_ray \\",
        "        --actor.model_name_or_path <your model> \\",
        f"        --data.prompt_dataset {train} \\",
        f"        --data.input_key {INPUT_KEY} --data.label_key {LABEL_KEY} --data.apply_chat_template \\",
    ]
    if has_test:
        lines.append(f"        --eval.dataset {test} \\")
    lines += [
        f"        --reward.remote_url {reward} \\",
        "        --algo.advantage.estimator reinforce_baseline --rollout.n_samples_per_prompt 8",
        "",
        "OpenRLHF releases with flat flags (no dots):",
        f"    --prompt_data {train} --input_key {INPUT_KEY} --label_key {LABEL_KEY} --apply_chat_template \\",
        (f"    --eval_dataset {test} " if has_test else "    ") + f"--remote_rm_url {reward}",
        "",
        "Releases whose reward_func must return a bare tensor: re-export with --scores-only.",
        f"Install openrft {__version__} wherever OpenRLHF calls reward_func (pip install openrft=={__version__}).",
    ]
    if prm_url:
        lines.append(f"The PRM at {prm_url} must be reachable from there; {PRM_URL_ENV}=<url> replaces it.")
    lines.append("Paths are this machine's: copy the folder to the cluster and adjust them.")
    return "\n".join(lines) + "\n"


def export_openrlhf(config: ExportConfig, out: str | os.PathLike[str]) -> ExportResult:
    """Write ``train.jsonl`` (and ``test.jsonl``), ``openrft_reward.py``, ``README.md`` and the manifest to ``out``."""
    out_dir = check_out_dir(out, config.overwrite)
    splits = load_splits(config)
    messages = prompt_messages(splits, config.icl_k)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for name, samples in splits.items():
        lines = [json.dumps(r, ensure_ascii=False) for r in openrlhf_rows(samples, messages[name])]
        files[name] = write_text(out_dir / FILES[name], "\n".join(lines) + "\n")
    files["reward"] = write_text(out_dir / FILES["reward"],
                                 reward_module_source("openrlhf", config.reward_config(), _DOC, _ENTRY_POINTS))
    usage = openrlhf_usage(out_dir, "test" in splits, config.prm_url)
    files["readme"] = write_text(out_dir / FILES["readme"], "# openrft export for OpenRLHF\n\n```\n" + usage + "```\n")
    counts = {name: len(samples) for name, samples in splits.items()}
    write_manifest(out_dir, "openrlhf", config, files, counts, stale=[*FILES.values()])
    files["manifest"] = out_dir / MANIFEST
    return ExportResult(out_dir, files, counts, usage)
